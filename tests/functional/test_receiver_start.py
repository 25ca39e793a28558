"""Receivers side by side on one machine (issue 11, item 7).

Two receivers with their own ``rpc_zmq_port`` both start with the default
health port (``rpc_zmq_port + 2``); a second receiver on the same
``rpc_zmq_ipc_dir`` refuses to start, naming the directory and the first
one's pid, until the first is gone (even by kill -9); an IPC directory that
others could write in is refused with the fix. Real receiver processes on
free loopback ports.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from typing import Iterator

import pytest

from nova_rpc_zmq.testing import LocalHost, Proc, child_env, free_port, receiver_argv
from tests.support import scaled, wait_for

PROG = "nova-rpc-zmq-receiver: error: "


def _health(port: int) -> int:
    try:
        url = "http://127.0.0.1:%d/health" % port
        with urllib.request.urlopen(url, timeout=scaled(5)) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _port_pair() -> int:
    """A free port whose port + 2 (the default health port) is free too."""
    for _ in range(50):
        port = free_port()
        if port + 2 > 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 2))
        except OSError:
            continue
        return port
    raise AssertionError("no free port pair found in 50 tries")


def _failing(host: LocalHost) -> str:
    """Run a receiver on ``host``'s conf expecting it to refuse; returns its
    error line."""
    proc = subprocess.run(receiver_argv(host.conf_path), capture_output=True, text=True,
                          env=child_env(), timeout=scaled(30))
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "listening on" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith(PROG)]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.fixture
def base() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="nrzt-")   # short: ipc paths are limited
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _host(base: str, **extra: object) -> LocalHost:
    """A LocalHost with the default health port (LocalHost turns it off)."""
    host = LocalHost(base_dir=base, port=_port_pair(), extra=dict(extra))
    del host.options["rpc_zmq_health_port"]
    host.write_conf()
    return host


@pytest.mark.timeout(90)
def test_two_receivers_with_default_health_ports(base: str) -> None:
    """Each on its own rpc_zmq_port: both run, each /health at port + 2."""
    hosts = [_host(base), _host(base)]
    try:
        for h in hosts:
            h.start_receiver(scaled(20))
        for h in hosts:
            wait_for(lambda: _health(h.port + 2) == 200, 20,
                     what="/health on %d" % (h.port + 2))
            assert all(p.popen.poll() is None for p in h.procs)
    finally:
        for h in hosts:
            h.stop()


@pytest.mark.timeout(90)
def test_second_receiver_on_the_same_ipc_dir_is_refused(base: str) -> None:
    """Another port, same ipc dir: exit non-zero naming the dir and the
    first receiver's pid; the first keeps serving; after kill -9 of the
    first, a new receiver on that dir starts."""
    first = _host(base)
    second = _host(base, rpc_zmq_ipc_dir=first.ipc_dir)
    try:
        proc: Proc = first.start_receiver(scaled(20))
        wait_for(lambda: _health(first.port + 2) == 200, 20, what="first /health")
        line = _failing(second)
        assert first.ipc_dir in line and "pid %d" % proc.pid in line, line
        assert "rpc_zmq_ipc_dir" in line, line
        assert proc.popen.poll() is None
        assert _health(first.port + 2) == 200
        # kill -9: the kernel releases the lock, a restart works
        proc.kill()
        first.procs.remove(proc)
        second.start_receiver(scaled(20))
        wait_for(lambda: _health(second.port + 2) == 200, 20,
                 what="the new receiver's /health")
    finally:
        second.stop()
        first.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", [0o777, 0o770])
def test_ipc_dir_writable_by_others_is_refused(base: str, mode: int) -> None:
    """World- or group-writable: refused at start with chmod 0750 in the
    message; nothing started, the directory left as it was."""
    host = _host(base)
    try:
        os.mkdir(host.ipc_dir)
        os.chmod(host.ipc_dir, mode)
        line = _failing(host)
        assert host.ipc_dir in line and "chmod 0750" in line, line
        assert os.listdir(host.ipc_dir) == []
        os.chmod(host.ipc_dir, 0o750)
        host.start_receiver(scaled(20))
    finally:
        host.stop()


@pytest.mark.timeout(60)
def test_ipc_dir_of_another_user_is_refused(base: str) -> None:
    """Owned by another uid (needs root to make one): refused with chown."""
    if os.geteuid() != 0:
        pytest.skip("only root can make a directory owned by another user")
    host = _host(base)
    try:
        os.mkdir(host.ipc_dir, 0o750)
        os.chown(host.ipc_dir, 65534, -1)
        line = _failing(host)
        assert host.ipc_dir in line and "chown" in line, line
    finally:
        host.stop()
