"""The receiver's health page as a load balancer sees it, and its signals.

A real HAProxy (Debian package ``haproxy``, installed by
``.ci/install-servers.sh``) checks three receivers' health ports with a
bare ``option httpchk`` (``OPTIONS /``), ``GET /health`` and ``HEAD
/health``: the healthy one must be UP, a draining one (drain file) and a
wedged one (its loop blocked in a log write, its health thread alive) DOWN,
read from HAProxy's stats socket. SIGTERM drains (hands what the receiver
holds to a consumer that connects late, exits 0); SIGHUP keeps it running.
"""

from __future__ import annotations

import csv
import http.client
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import Iterator

import pytest
import zmq

from nova_rpc_zmq import wire
from nova_rpc_zmq.testing import LocalHost, Proc, child_env, free_port, receiver_argv
from tests.support import scaled, wait_for

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def _request(port: int, method: str, path: str) -> tuple[int, str]:
    """(status, body) of one HTTP/1.0 request, as HAProxy sends it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(5))
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def _status(port: int) -> int:
    try:
        return _request(port, "GET", "/health")[0]
    except OSError:
        return 0


def _env() -> dict[str, str]:
    env = child_env()
    env.pop("NOTIFY_SOCKET", None)
    return env


class WedgedReceiver:
    """A receiver whose stdout and stderr are a pipe nobody reads: once the
    pipe is full, its next log line blocks the routing loop while the
    health thread (which logs nothing) keeps answering."""

    def __init__(self, local: LocalHost) -> None:
        self.read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen(receiver_argv(local.conf_path), stdout=write_fd,
                                     stderr=write_fd, env=_env(), start_new_session=True)
        # a second open file description of the same pipe, non-blocking, so
        # that filling it does not make the receiver's writes non-blocking
        self._filler = os.open("/proc/self/fd/%d" % write_fd,
                               os.O_WRONLY | os.O_NONBLOCK)
        os.close(write_fd)
        self._reader: threading.Thread | None = None

    def wedge(self) -> None:
        """Fill the pipe to the last byte, then make the loop log (SIGHUP
        logs what it re-read, from the loop's thread)."""
        for chunk in (65536, 4096, 1):
            while True:
                try:
                    os.write(self._filler, b"x" * chunk)
                except BlockingIOError:
                    break
        self.proc.send_signal(signal.SIGHUP)

    def unwedge(self) -> None:
        """Read the pipe from now on (the loop runs again)."""
        if self._reader is None:
            def drain() -> None:
                while os.read(self.read_fd, 65536):
                    pass
            self._reader = threading.Thread(target=drain, daemon=True)
            self._reader.start()

    def stop(self) -> None:
        self.unwedge()
        os.close(self._filler)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(scaled(15))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._reader is not None:
            self._reader.join(scaled(5))
        os.close(self.read_fd)


class HAProxy:
    """A private HAProxy on loopback checking ``servers`` (name -> health
    port) from three backends, one per check method."""

    BACKENDS = {
        # HAProxy's default check: "OPTIONS / HTTP/1.0"
        "bare": "    option httpchk\n",
        "get": "    option httpchk\n    http-check send meth GET uri /health\n",
        "head": "    option httpchk\n    http-check send meth HEAD uri /health\n",
    }

    def __init__(self, workdir: str, servers: dict[str, int]) -> None:
        if not os.access(HAPROXY, os.X_OK):
            pytest.fail("haproxy is not installed (%s): run .ci/install-servers.sh "
                        "as root (Debian package haproxy)" % HAPROXY)
        self.dir = workdir
        self.stats_path = os.path.join(workdir, "haproxy.sock")
        lines = [
            "global",
            "    stats socket %s mode 600 level admin" % self.stats_path,
            "defaults",
            "    mode http",
            "    timeout connect 1s",
            "    timeout client 5s",
            "    timeout server 5s",
            "    timeout check 1s",
        ]
        for backend, check in self.BACKENDS.items():
            lines.append("backend %s" % backend)
            lines.append(check.rstrip("\n"))
            lines.append("    http-check expect status 200")
            for name, port in servers.items():
                lines.append("    server %s 127.0.0.1:%d check inter 200 "
                             "fall 2 rise 2" % (name, port))
        self.conf = os.path.join(workdir, "haproxy.cfg")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        check = subprocess.run([HAPROXY, "-c", "-f", self.conf],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.proc = Proc("haproxy", [HAPROXY, "-db", "-f", self.conf],
                         os.path.join(workdir, "haproxy.log"))
        wait_for(lambda: self.proc.popen.poll() is not None
                 or os.path.exists(self.stats_path), 10, what="haproxy's stats socket")
        assert self.proc.popen.poll() is None, self.proc.output()

    def stats(self) -> dict[tuple[str, str], dict[str, str]]:
        """``show stat`` rows by (backend, server)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(scaled(5))
            s.connect(self.stats_path)
            s.sendall(b"show stat\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        text = data.decode().lstrip("# ")
        return {(row["pxname"], row["svname"]): row
                for row in csv.DictReader(io.StringIO(text))
                if row.get("svname") not in (None, "BACKEND", "FRONTEND")}

    def summary(self) -> str:
        """One line per server: status, check result, HAProxy's note."""
        return "; ".join("%s/%s %s %s %s %r" % (b, s, r["status"], r["check_status"],
                                                 r["check_code"], r["last_chk"])
                         for (b, s), r in sorted(self.stats().items()))

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture
def workdir() -> Iterator[str]:
    base = tempfile.mkdtemp(prefix="nrzh-")   # short: ipc paths are limited
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.timeout(180)
def test_haproxy_marks_draining_and_wedged_receivers_down(workdir: str) -> None:
    drain_file = os.path.join(workdir, "drain")
    hosts = {}
    for name in ("healthy", "draining", "wedged"):
        hosts[name] = LocalHost(host=name, base_dir=workdir, extra={
            "rpc_zmq_health_port": free_port(),
            "rpc_zmq_health_stuck_after": 1,
            # only the draining one has the file
            **({"rpc_zmq_drain_file": drain_file} if name == "draining" else {}),
        })
    ports = {n: h.options["rpc_zmq_health_port"] for n, h in hosts.items()}
    wedged: WedgedReceiver | None = None
    haproxy: HAProxy | None = None
    try:
        hosts["healthy"].start_receiver(scaled(20))
        hosts["draining"].start_receiver(scaled(20))
        wedged = WedgedReceiver(hosts["wedged"])
        for name, port in ports.items():
            wait_for(lambda: _status(port) == 200, 20, interval=0.1,
                     what="%s receiver's health page" % name)
        assert wedged.proc.poll() is None
        haproxy = HAProxy(workdir, ports)

        # every check method sees all three healthy first
        def all_up() -> bool:
            rows = haproxy.stats()
            return len(rows) == 9 and all(
                r["status"] == "UP" and r["check_status"].lstrip("* ") == "L7OK"
                for r in rows.values())
        try:
            wait_for(all_up, 20, interval=0.2,
                     what="haproxy to see three healthy receivers")
        except AssertionError as exc:
            raise AssertionError("%s: %s" % (exc, haproxy.summary())) from None

        open(drain_file, "w").close()
        wedged.wedge()
        code, body = _request(ports["draining"], "GET", "/health")
        assert code == 503 and body.startswith("DRAINING"), (code, body)

        def settled() -> bool:
            rows = haproxy.stats()
            want = {"healthy": ("UP", "L7OK", "200"),
                    # a 503 from a live health thread, not a timeout
                    "draining": ("DOWN", "L7STS", "503"),
                    "wedged": ("DOWN", "L7STS", "503")}
            # "* L7OK": a check in progress, its code not known yet
            return all((rows[(b, s)]["status"], rows[(b, s)]["check_status"],
                        rows[(b, s)]["check_code"]) == want[s]
                       for b in HAProxy.BACKENDS for s in want)
        try:
            wait_for(settled, 30, interval=0.2,
                     what="haproxy to mark draining and wedged DOWN, healthy UP")
        except AssertionError as exc:
            raise AssertionError("%s: %s" % (exc, haproxy.summary())) from None
        code, body = _request(ports["wedged"], "OPTIONS", "/")
        assert code == 503 and body.startswith("STUCK"), (code, body)
        assert wedged.proc.poll() is None

        # maintenance over: both come back
        os.unlink(drain_file)
        wedged.unwedge()
        wait_for(all_up, 30, interval=0.2, what="haproxy to see all three UP again")
    finally:
        if haproxy is not None:
            haproxy.stop()
        if wedged is not None:
            wedged.stop()
        for h in hosts.values():
            h.stop()


@pytest.mark.timeout(60)
def test_health_answers_get_head_and_options(workdir: str) -> None:
    port = free_port()
    local = LocalHost(base_dir=workdir, extra={"rpc_zmq_health_port": port})
    try:
        local.start_receiver(scaled(20))
        wait_for(lambda: _status(port) == 200, 20, what="the health page")
        for method in ("GET", "HEAD", "OPTIONS"):
            for path in ("/", "/health"):
                code, body = _request(port, method, path)
                assert code == 200, (method, path, code, body)
                assert body == ("" if method == "HEAD" else "OK\n"), (method, path)
        assert _request(port, "GET", "/nothing")[0] == 404
    finally:
        local.stop()


def _backlog_messages(port: int) -> int:
    """The receiver's held messages, from /metrics (either naming)."""
    try:
        text = _request(port, "GET", "/metrics")[1]
    except OSError:
        return -1
    m = re.search(r"^\S*backlog\S*messages\S*\s+(\d+)", text, re.M)
    return int(m.group(1)) if m else -1


@pytest.mark.timeout(90)
def test_sigterm_drains_held_messages_to_a_late_consumer(workdir: str) -> None:
    port = free_port()
    local = LocalHost(base_dir=workdir, extra={"rpc_zmq_health_port": port,
                                               "rpc_zmq_drain_timeout": scaled(10)})
    topic = "drainme.localhost"
    count = 20
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    try:
        proc = local.start_receiver(scaled(20))
        push.connect("tcp://127.0.0.1:%d" % local.port)
        for i in range(count):
            push.send_multipart(wire.encode(None, topic, {},
                                            {"method": "m", "args": {"i": i}}))
        # no consumer yet: the receiver holds them all
        wait_for(lambda: _backlog_messages(port) == count, 20,
                 what="%d held messages" % count)
        started = time.monotonic()
        proc.popen.send_signal(signal.SIGTERM)
        wait_for(lambda: _request(port, "GET", "/health")[1].startswith("DRAINING"),
                 10, what="/health to say DRAINING")
        code, body = _request(port, "GET", "/health")
        assert code == 503, (code, body)

        # no longer accepting: the TCP port is closed
        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", local.port), 1).close()
            except ConnectionRefusedError:
                return True
            return False
        wait_for(refused, 10, what="the TCP port to be closed")
        assert proc.popen.poll() is None, proc.output()

        # a consumer that connects during the drain gets every message
        pull.connect("ipc://" + os.path.join(local.ipc_dir, "zmq_topic_" + topic))
        got = []
        poller = zmq.Poller()
        poller.register(pull, zmq.POLLIN)
        deadline = time.monotonic() + scaled(10)
        while len(got) < count and time.monotonic() < deadline:
            if poller.poll(100):
                got.append(wire.decode(pull.recv_multipart()).body["args"]["i"])
        assert sorted(got) == list(range(count))
        assert proc.popen.wait(scaled(15)) == 0, proc.output()
        assert time.monotonic() - started < scaled(10) + scaled(5)
    finally:
        push.close(0)
        pull.close(0)
        ctx.term()
        local.stop()


@pytest.mark.timeout(60)
def test_sigterm_exits_within_drain_timeout_when_nobody_takes(workdir: str) -> None:
    port = free_port()
    local = LocalHost(base_dir=workdir, extra={"rpc_zmq_health_port": port,
                                               "rpc_zmq_drain_timeout": 1})
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    try:
        proc = local.start_receiver(scaled(20))
        push.connect("tcp://127.0.0.1:%d" % local.port)
        for i in range(5):
            push.send_multipart(wire.encode(None, "nobody.localhost", {},
                                            {"method": "m", "args": {}}))
        wait_for(lambda: _backlog_messages(port) == 5, 20, what="5 held messages")
        started = time.monotonic()
        proc.popen.send_signal(signal.SIGTERM)
        # it waits for a consumer (DRAINING), but not past the timeout
        wait_for(lambda: _request(port, "GET", "/health")[1].startswith("DRAINING"),
                 5, what="/health to say DRAINING")
        assert proc.popen.wait(scaled(10)) == 0, proc.output()
        assert time.monotonic() - started < 1 + scaled(4)
        assert "drain timeout" in proc.output()
    finally:
        push.close(0)
        ctx.term()
        local.stop()


@pytest.mark.timeout(60)
def test_sighup_rereads_instead_of_exiting(workdir: str) -> None:
    ring = os.path.join(workdir, "ring.json")
    with open(ring, "w") as f:
        f.write('{"demo": ["localhost"], "other": ["localhost"]}\n')
    port = free_port()
    local = LocalHost(base_dir=workdir, matchmaker="ring", ringfile=ring,
                      extra={"rpc_zmq_health_port": port})
    try:
        proc = local.start_receiver(scaled(20))
        wait_for(lambda: _status(port) == 200, 20, what="the health page")
        proc.popen.send_signal(signal.SIGHUP)
        proc.wait_for_line("SIGHUP: re-read", scaled(10))
        assert "ring file %s (2 topics)" % ring in proc.output()
        with open(ring, "w") as f:
            f.write('{"demo": ["localhost"]}\n')
        proc.popen.send_signal(signal.SIGHUP)
        wait_for(lambda: "(1 topics)" in proc.output(), 10, what="the second reload")
        assert proc.popen.poll() is None
        assert _status(port) == 200
    finally:
        local.stop()
