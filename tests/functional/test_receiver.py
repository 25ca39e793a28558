"""The receiver daemon's life as a process: binding, start-up errors that an
operator must be able to act on, the health page, SIGTERM, and TCP clients
that never speak ZeroMQ.

Every receiver here is a real ``python -m nova_rpc_zmq.cli.receiver``
process on a free loopback port with its own temporary directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable, Iterator

import psutil
import pytest

from nova_rpc_zmq import metrics, netaddr, rpc
from nova_rpc_zmq.testing import LocalHost, child_env, free_port, receiver_argv
from tests import privileges
from tests.support import scaled, wait_for

PROG = "nova-rpc-zmq-receiver: error: "


def run_failing(host: LocalHost, preexec_fn: Callable[[], None] | None = None) -> str:
    """Run the receiver with ``host``'s conf, expecting it to refuse to start;
    returns its one stderr line.  ``preexec_fn`` runs in the child before
    exec (e.g. to drop privileges)."""
    proc = subprocess.run(receiver_argv(host.conf_path), capture_output=True,
                          text=True, env=child_env(), timeout=scaled(30), preexec_fn=preexec_fn)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "listening on" not in proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(PROG), lines[0]
    return lines[0]


def http_get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of ``GET http://127.0.0.1:<port><path>``."""
    url = "http://127.0.0.1:%d%s" % (port, path)
    try:
        with urllib.request.urlopen(url, timeout=scaled(5)) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def tcp_sockets(pid: int) -> list[Any]:
    """psutil's view of process ``pid``'s TCP sockets."""
    proc = psutil.Process(pid)
    conns = getattr(proc, "net_connections", None) or proc.connections
    return list(conns(kind="tcp"))


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """The TCP (ip, port) pairs process ``pid`` listens on."""
    return {(c.laddr.ip, c.laddr.port) for c in tcp_sockets(pid)
            if c.status == psutil.CONN_LISTEN}


class Served:
    """A receiver and one demo service, and a client of them in this process."""

    def __init__(self, base: str, **extra: Any) -> None:
        self.health_port = free_port()
        # every call through the receiver, the subject here (a call to a
        # service on its own host would skip it: test_local_calls)
        options = {"rpc_zmq_health_port": self.health_port,
                   "rpc_response_timeout": 20,
                   "rpc_zmq_local_calls": False}
        options.update(extra)
        self.host = LocalHost(base_dir=base, extra=options)
        self.receiver: Any = None
        self.settings: Any = None

    def start(self) -> "Served":
        self.receiver = self.host.start_receiver(scaled(20))
        # "listening on" is logged before the health page starts: wait for
        # the page, so that a receiver that failed after binding is seen
        wait_for(lambda: self.healthy() or self.receiver.popen.poll() is not None,
                 20, what="the health page")
        assert self.receiver.popen.poll() is None, self.receiver.output()
        self.host.start_service("svc1", topic="demo", timeout=scaled(30))
        self.settings = self.host.settings()
        return self

    def echo(self) -> None:
        """One call through the receiver; fails the test if it does not work."""
        rpc.init(self.settings)
        value = uuid.uuid4().hex
        assert rpc.call({}, "demo", {"method": "echo", "args": {"value": value}},
                        timeout=scaled(20)) == value

    def healthy(self) -> bool:
        try:
            return http_get(self.health_port, "/health") == (200, "OK\n")
        except OSError:
            return False

    def counters(self) -> dict[str, int]:
        return metrics.parse(http_get(self.health_port, "/metrics")[1])

    def stop(self) -> None:
        rpc.cleanup()
        self.host.stop()


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="nrzr-")   # short: ipc paths are limited
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def served(base: str) -> Iterator[Served]:
    s = Served(base)
    try:
        s.start()
        s.echo()
        yield s
    finally:
        s.stop()


# -- binding ------------------------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("bind", ["*", "127.0.0.1", "lo"])
def test_binds_wildcard_address_and_interface(base: str, bind: str) -> None:
    """``*`` listens on every address, an IP or interface name on that one."""
    if bind == "lo" and netaddr.interface_address("lo") is None:
        pytest.skip("no IPv4 address on interface lo")
    s = Served(base, rpc_zmq_bind_address=bind)
    try:
        s.start()
        s.echo()
        listening = listening_addresses(s.receiver.pid)
        expected = "0.0.0.0" if bind == "*" else "127.0.0.1"
        assert (expected, s.host.port) in listening, listening
        assert http_get(s.health_port, "/health") == (200, "OK\n")
    finally:
        s.stop()


# -- the IPC directory --------------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask-022", "umask-077"])
def test_creates_missing_ipc_dir_with_mode_0750(base: str, umask: int) -> None:
    """Whatever the umask, the directory the receiver makes is 0750."""
    host = LocalHost(base_dir=base)
    out = os.path.join(host.dir, "out.log")
    try:
        assert not os.path.exists(host.ipc_dir)
        with open(out, "wb") as log:
            proc = subprocess.Popen(receiver_argv(host.conf_path), stdout=log,
                                    stderr=subprocess.STDOUT, env=child_env(),
                                    umask=umask)
        try:
            wait_for(lambda: "listening on" in open(out).read()
                     or proc.poll() is not None, 20, what="the receiver")
            assert proc.poll() is None, open(out).read()
            mode = os.stat(host.ipc_dir).st_mode
            assert stat.S_ISDIR(mode)
            assert stat.S_IMODE(mode) == 0o750, oct(mode)
        finally:
            proc.terminate()
            assert proc.wait(scaled(10)) == 0
    finally:
        host.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["file", "under-file", "read-only"])
def test_unusable_ipc_dir_is_one_clear_error(base: str, case: str) -> None:
    """A file in the way, or no write permission: exit non-zero, one line.

    As root (CI) the receiver runs without the capabilities that let root
    write into a mode 0500 directory (tests/privileges.py), so the case is
    tested there too instead of skipped.
    """
    # root would write into the 0500 directory: drop that power in the child
    drop = privileges.drop_file_override_caps if os.geteuid() == 0 else None
    host = LocalHost(base_dir=base)
    try:
        blocker = os.path.join(host.dir, "blocker")
        if case == "read-only":
            os.mkdir(blocker, 0o500)
            ipc_dir = blocker
        else:
            with open(blocker, "w") as f:
                f.write("not a directory\n")
            ipc_dir = blocker if case == "file" else os.path.join(blocker, "ipc")
        host.options["rpc_zmq_ipc_dir"] = ipc_dir
        host.write_conf()
        line = run_failing(host, drop if case == "read-only" else None)
        assert "rpc_zmq_ipc_dir" in line and ipc_dir in line, line
        if case == "read-only":
            assert "writable" in line, line   # the fix, not only the path
            assert os.listdir(blocker) == []   # no lock file, no socket
        else:
            assert os.path.isfile(blocker)
    finally:
        host.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("length", [80, 101])
def test_too_long_ipc_dir_is_refused(base: str, length: int) -> None:
    """Too long for ipc:// paths (daemon check at 80, config check at 101):
    refused at start, and the directory is not created."""
    host = LocalHost(base_dir=base)
    try:
        prefix = os.path.join(host.dir, "")
        ipc_dir = prefix + "d" * (length - len(prefix))
        assert len(ipc_dir) == length
        host.options["rpc_zmq_ipc_dir"] = ipc_dir
        host.write_conf()
        line = run_failing(host)
        assert "rpc_zmq_ipc_dir" in line and "too long" in line, line
        assert not os.path.exists(ipc_dir)
    finally:
        host.stop()


# -- ports and config -----------------------------------------------------------

@pytest.mark.timeout(60)
def test_port_in_use_by_another_program(base: str) -> None:
    """Exit non-zero with one stderr line naming the port."""
    host = LocalHost(base_dir=base)
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", host.port))
        holder.listen(1)
        line = run_failing(host)
        assert "port %d" % host.port in line and "in use" in line, line
    finally:
        holder.close()
        host.stop()


@pytest.mark.timeout(60)
def test_port_in_use_by_a_running_receiver(served: Served) -> None:
    """A second receiver on the same conf refuses to start and leaves the
    first one's sockets alone."""
    line = run_failing(served.host)
    assert "port %d" % served.host.port in line and "in use" in line, line
    served.echo()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("option, value", [
    ("rpc_zmq_matchmaker", "nonsense"),
    ("rpc_zmq_port", "ninety"),
    ("rpc_zmq_max_msg_size", "-1"),
    ("rpc_zmq_bind_address", "nosuchif0"),
])
def test_bad_config_value_names_the_option(base: str, option: str,
                                           value: str) -> None:
    """Exit non-zero with one stderr line naming the option and value."""
    host = LocalHost(base_dir=base)
    try:
        host.options[option] = value
        host.write_conf()
        line = run_failing(host)
        assert option in line and value in line, line
    finally:
        host.stop()


# -- running -----------------------------------------------------------------

@pytest.mark.timeout(60)
def test_sigterm_exits_zero_within_3_seconds(base: str) -> None:
    """With a service connected and a message waiting in a backlog."""
    s = Served(base)
    try:
        s.start()
        s.echo()
        before = s.counters()["nova_rpc_zmq_receiver_received_total"]
        rpc.cast({}, "nobody", {"method": "record", "args": {}})
        wait_for(lambda: s.counters()["nova_rpc_zmq_receiver_received_total"] > before, 10,
                 what="the cast to reach the receiver")
        started = time.monotonic()
        s.receiver.popen.send_signal(signal.SIGTERM)
        code = s.receiver.popen.wait(scaled(10))
        elapsed = time.monotonic() - started
        print("receiver exit after SIGTERM: %.3fs" % elapsed)
        assert code == 0
        # SIGTERM drains: the cast nobody takes is held for a consumer for
        # rpc_zmq_drain_timeout (default 5 s), then the receiver exits
        assert elapsed < 5.0 + 3.0
        assert "receiver stopped" in s.receiver.output()
    finally:
        s.stop()


@pytest.mark.timeout(30)
def test_health_endpoint(served: Served) -> None:
    """200 OK for HAProxy/Pacemaker checks, counters on /metrics."""
    assert http_get(served.health_port, "/") == (200, "OK\n")
    assert http_get(served.health_port, "/health") == (200, "OK\n")
    code, body = http_get(served.health_port, "/metrics")
    assert code == 200
    assert metrics.parse(body)["nova_rpc_zmq_receiver_received_total"] > 0
    assert http_get(served.health_port, "/nope")[0] == 404


def _zmtp_refused(data: bytes, port: int) -> bool:
    """Send ``data`` (not ZMTP) and report whether the receiver hung up."""
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(5)) as s:
        s.sendall(data)
        deadline = time.monotonic() + scaled(5)
        try:
            while time.monotonic() < deadline:
                if not s.recv(4096):
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
    return False


@pytest.mark.timeout(90)
def test_tcp_clients_that_never_speak_zmtp(served: Served) -> None:
    """Garbage, a stalled handshake and 200 idle connections, all open at
    once: calls and the health page keep working, and none of the bytes
    becomes a message."""
    port = served.host.port
    # a bad ZMTP signature is refused at once
    assert _zmtp_refused(b"\xff" * 4096, port)
    assert _zmtp_refused(b"\x00" * 4096, port)
    opened: list[socket.socket] = []
    try:
        before = served.counters()
        garbage = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
        opened.append(garbage)
        garbage.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 20
                        + os.urandom(4096))
        stalled = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
        opened.append(stalled)
        stalled.sendall(b"\xff" + b"\x00" * 8 + b"\x7f")   # half a greeting
        for _ in range(200):
            opened.append(socket.create_connection(("127.0.0.1", port),
                                                   timeout=scaled(5)))

        def accepted() -> int:
            return sum(1 for c in tcp_sockets(served.receiver.pid)
                       if c.laddr.port == port
                       and c.status == psutil.CONN_ESTABLISHED)
        wait_for(lambda: accepted() >= 202, 20,
                 what="the receiver to accept all 202 connections")
        calls = 20
        for _ in range(calls):
            served.echo()
        assert http_get(served.health_port, "/health") == (200, "OK\n")
        # garbage read as old-ZMTP frames is at most dropped messages: all
        # that came in was forwarded or dropped, and no topic was made of it
        def delta(name: str) -> int:
            now = served.counters()
            return sum(v - before.get(k, 0) for k, v in now.items()
                       if k == name or name.endswith("{") and k.startswith(name))

        wait_for(lambda: delta("nova_rpc_zmq_receiver_received_total") == delta("nova_rpc_zmq_receiver_forwarded_total")
                 + delta('nova_rpc_zmq_receiver_dropped_total{'), 10,
                 what="every received message forwarded or dropped")
        assert delta("nova_rpc_zmq_receiver_forwarded_total") >= calls
        assert delta("nova_rpc_zmq_receiver_topics_created_total") == 0
        assert served.receiver.popen.poll() is None
    finally:
        for s in opened:
            s.close()
    served.echo()
