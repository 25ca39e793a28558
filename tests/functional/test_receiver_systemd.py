"""The receiver under systemd: the unit file, and ``Type=notify``.

``systemd-analyze verify`` checks ``etc/systemd/nova-rpc-zmq-receiver.service``
(with ExecStart pointed at this checkout's console script, since
/usr/bin/nova-rpc-zmq-receiver is not installed here). The receiver is run
with a ``NOTIFY_SOCKET`` this test binds (a path, and an abstract ``@name``):
``READY=1`` must come only once its TCP port accepts connections, and
``STOPPING=1`` on SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from typing import Iterator

import pytest

from nova_rpc_zmq.testing import (LocalHost, checkout_root, child_env, free_port,
                                  receiver_argv)
from tests.support import scaled

UNIT = os.path.join(checkout_root(), "etc", "systemd", "nova-rpc-zmq-receiver.service")


def _directives(path: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file, by key."""
    found: dict[str, list[str]] = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")) and "=" in line:
                key, value = line.split("=", 1)
                found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_unit_has_what_operators_expect() -> None:
    d = _directives(UNIT)
    assert d["Type"] == ["notify"]
    assert d["User"] == ["nova"]
    assert d["RuntimeDirectory"] == ["openstack"]
    assert d["RuntimeDirectoryMode"] == ["0750"]
    assert d["Restart"] == ["on-failure"]
    assert d["ExecStart"] == [
        "/usr/bin/nova-rpc-zmq-receiver --config-file /etc/nova/nova.conf"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert int(d["LimitNOFILE"][0]) >= 65536


def test_systemd_analyze_verifies_the_unit(tmp_path: "os.PathLike[str]") -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed (package systemd)")
    # verify insists that ExecStart's program exists: use this checkout's
    exe = os.path.join(os.path.dirname(sys.executable), "nova-rpc-zmq-receiver")
    if not os.access(exe, os.X_OK):
        exe = shutil.which("true") or "/bin/true"
    with open(UNIT) as f:
        text = f.read().replace("/usr/bin/nova-rpc-zmq-receiver", exe)
    unit = os.path.join(str(tmp_path), os.path.basename(UNIT))
    with open(unit, "w") as f:
        f.write(text)
    result = subprocess.run([tool, "verify", unit], capture_output=True,
                            text=True, timeout=scaled(60))
    assert result.returncode == 0, result.stdout + result.stderr
    # verify prints problems without always failing: none about our unit
    assert os.path.basename(UNIT) not in result.stdout + result.stderr, \
        result.stdout + result.stderr


@pytest.fixture
def workdir() -> Iterator[str]:
    base = tempfile.mkdtemp(prefix="nrzn-")   # short: ipc paths are limited
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
    except OSError:
        return False
    return True


@pytest.mark.timeout(90)
@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_after_listening_and_stopping_on_sigterm(workdir: str,
                                                       abstract: bool) -> None:
    health_port = free_port()
    local = LocalHost(base_dir=workdir, extra={"rpc_zmq_health_port": health_port})
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = "nrz-test-%s" % uuid.uuid4().hex
        notify.bind("\0" + name)
        address = "@" + name
    else:
        address = os.path.join(workdir, "notify.sock")
        notify.bind(address)
    notify.settimeout(scaled(20))
    env = child_env({"NOTIFY_SOCKET": address})
    log_path = os.path.join(workdir, "receiver.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(receiver_argv(local.conf_path), stdout=log,
                                stderr=subprocess.STDOUT, env=env)

    def output() -> str:
        with open(log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-3000:]
    try:
        try:
            first = notify.recv(4096).decode()
        except socket.timeout:
            pytest.fail("no datagram on NOTIFY_SOCKET within %.0f s:\n%s"
                        % (scaled(20), output()))
        # checked at once: READY=1 must not come before the ports listen
        tcp_ok, health_ok = _accepts(local.port), _accepts(health_port)
        assert "READY=1" in first.splitlines(), first
        assert tcp_ok and health_ok, (tcp_ok, health_ok, output())
        proc.send_signal(signal.SIGTERM)
        states = []
        while not any("STOPPING=1" in s.splitlines() for s in states):
            try:
                states.append(notify.recv(4096).decode())
            except socket.timeout:
                pytest.fail("no STOPPING=1 after SIGTERM: got %r\n%s"
                            % (states, output()))
        assert proc.wait(scaled(15)) == 0, output()
    finally:
        notify.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        local.stop()


@pytest.mark.timeout(60)
def test_sighup_reports_reloading_then_ready(workdir: str) -> None:
    local = LocalHost(base_dir=workdir, extra={"rpc_zmq_health_port": free_port()})
    address = os.path.join(workdir, "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(address)
    notify.settimeout(scaled(20))
    proc = subprocess.Popen(receiver_argv(local.conf_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            env=child_env({"NOTIFY_SOCKET": address}))
    try:
        assert "READY=1" in notify.recv(4096).decode().splitlines()
        proc.send_signal(signal.SIGHUP)
        reloading = notify.recv(4096).decode().splitlines()
        assert "RELOADING=1" in reloading, reloading
        assert any(line.startswith("MONOTONIC_USEC=") for line in reloading)
        assert "READY=1" in notify.recv(4096).decode().splitlines()
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(scaled(15)) == 0
    finally:
        notify.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        local.stop()
