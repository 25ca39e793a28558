"""A host that one stuck topic cannot silence (issue 11, item 3).

One host (a receiver process with its default backlog bounds and a demo
service on ``demo``) is shared by the module. Each case makes one topic
stuck for real (casts nobody consumes, a fanout subscriber stopped with
SIGSTOP, a message over the size limit spread over 64 frames, a log pipe
nobody reads) and checks that the rest of the host keeps working, that the
loss is counted on ``/metrics`` and that the log is not flooded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Iterator

import psutil
import pytest
import zmq

from nova_rpc_zmq import metrics, rpc
from nova_rpc_zmq.testing import LocalHost, child_env, free_port, receiver_argv
from tests.support import scaled, wait_for

MAX_MSG_SIZE = 1024 * 1024        # small, so the 64-frame case is quick
DEFAULT_BACKLOG = 10000            # rpc_zmq_topic_backlog's default
DEFAULT_BACKLOG_BYTES = 64 * 1024 * 1024


def http_get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of ``GET http://127.0.0.1:<port><path>``."""
    url = "http://127.0.0.1:%d%s" % (port, path)
    try:
        with urllib.request.urlopen(url, timeout=scaled(5)) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Host:
    """The shared host: receiver, one service on ``demo``, a client here."""

    def __init__(self, base: str) -> None:
        self.health_port = free_port()
        self.local = LocalHost(base_dir=base, extra={
            "rpc_zmq_health_port": self.health_port,
            "rpc_zmq_max_msg_size": MAX_MSG_SIZE,
            "rpc_response_timeout": 20,
            # every call through the receiver: the subject here
            "rpc_zmq_local_calls": False,
        })
        self.receiver: Any = None
        self.log_path = os.path.join(self.local.dir, "receiver.log")

    def counters(self) -> dict[str, int]:
        return metrics.parse(http_get(self.health_port, "/metrics")[1])

    def counter(self, name: str) -> int:
        return self.counters().get(metrics.counter_key("receiver", name), 0)

    def wait_counter(self, name: str, value: int, timeout: float = 20.0) -> int:
        def reached() -> int:
            have = self.counter(name)
            return have if have >= value else 0
        return wait_for(reached, timeout, interval=0.1,
                        what="receiver.%s >= %d" % (name, value))

    def log_since(self, offset: int) -> list[str]:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace").splitlines()

    def echo(self, timeout: float = 5.0) -> float:
        """One call through the receiver; returns its duration in seconds."""
        value = uuid.uuid4().hex
        started = time.monotonic()
        assert rpc.call({}, "demo", {"method": "echo", "args": {"value": value}},
                        timeout=scaled(timeout)) == value
        return time.monotonic() - started

    def stats(self, topic: str) -> dict:
        return rpc.call({}, topic, {"method": "stats"}, timeout=scaled(20))

    def rss(self) -> int:
        return psutil.Process(self.receiver.pid).memory_info().rss

    def alive(self) -> bool:
        return self.receiver.popen.poll() is None


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    base = tempfile.mkdtemp(prefix="nrzb-")   # short: ipc paths are limited
    h = Host(base)
    try:
        h.receiver = h.local.start_receiver(scaled(20))
        wait_for(lambda: not h.alive() or _status(h.health_port) == 200,
                 20, what="the health page")
        assert h.alive(), h.receiver.output()
        h.local.start_service("svc1", topic="demo", timeout=scaled(30))
        rpc.init(h.local.settings())
        h.echo(20)
        yield h
    finally:
        rpc.cleanup()
        h.local.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.timeout(120)
def test_casts_to_a_topic_nobody_consumes_do_not_silence_the_host(
        host: Host) -> None:
    """30,000 casts to a topic without consumer: calls to the live service
    still answer at once, 20,000 drops counted as no_consumer, the backlog
    stays at its default bound, memory bounded, and the log has a few lines
    about it (not one per message)."""
    before = host.counters()
    rss_before = host.rss()
    offset = os.path.getsize(host.log_path)
    pad = "p" * 200
    sent = 30000
    for i in range(sent):
        rpc.cast({}, "deadtopic", {"method": "record",
                                   "args": {"value": i, "pad": pad}})
    host.wait_counter("received", before["nova_rpc_zmq_receiver_received_total"] + sent)
    host.wait_counter("dropped.no_consumer",
                      before.get('nova_rpc_zmq_receiver_dropped_total{reason="no_consumer"}', 0)
                      + sent - DEFAULT_BACKLOG)
    # the live service on the same host answers at once
    durations = sorted(host.echo() for _ in range(20))
    print("echo after %d dead casts: p50 %.1f ms, max %.1f ms"
          % (sent, durations[10] * 1000, durations[-1] * 1000))
    assert durations[-1] < scaled(2.0)
    after = host.counters()
    dropped = {k: after.get(k, 0) - before.get(k, 0) for k in after
               if k.startswith('nova_rpc_zmq_receiver_dropped_total{')}
    assert dropped['nova_rpc_zmq_receiver_dropped_total{reason="no_consumer"}'] == sent - DEFAULT_BACKLOG, dropped
    assert after["nova_rpc_zmq_receiver_backlog_messages"] - before.get(
        "nova_rpc_zmq_receiver_backlog_messages", 0) == DEFAULT_BACKLOG
    rss_growth = host.rss() - rss_before
    print("receiver RSS growth: %.1f MiB" % (rss_growth / 2**20))
    assert rss_growth < 64 * 2**20
    lines = [line for line in host.log_since(offset) if "deadtopic" in line]
    assert 1 <= len(lines) <= 3, lines[:10]
    assert http_get(host.health_port, "/health") == (200, "OK\n")


@pytest.mark.timeout(120)
def test_backlog_is_bounded_in_bytes(host: Host) -> None:
    """Casts of ~900 KiB to a topic without consumer: the backlog keeps at
    most rpc_zmq_topic_backlog_bytes (64 MiB), the rest is counted."""
    before = host.counters()
    pad = "b" * (900 * 1024)
    sent = 100
    for i in range(sent):
        rpc.cast({}, "bigdead", {"method": "record",
                                 "args": {"value": i, "pad": pad}})
    host.wait_counter("received", before["nova_rpc_zmq_receiver_received_total"] + sent)
    after = host.counters()
    kept = (after.get("nova_rpc_zmq_receiver_backlog_bytes", 0)
            - before.get("nova_rpc_zmq_receiver_backlog_bytes", 0))
    dropped = (after.get('nova_rpc_zmq_receiver_dropped_total{reason="no_consumer"}', 0)
               - before.get('nova_rpc_zmq_receiver_dropped_total{reason="no_consumer"}', 0))
    print("kept %.1f MiB, dropped %d of %d" % (kept / 2**20, dropped, sent))
    assert dropped >= sent - DEFAULT_BACKLOG_BYTES // len(pad)
    assert 0 < kept <= DEFAULT_BACKLOG_BYTES
    host.echo()


@pytest.mark.timeout(180)
def test_memory_of_a_drained_backlog_goes_back_to_the_system(
        host: Host) -> None:
    """8,000 casts of 3 KiB wait for a topic's first consumer, calls
    passing meanwhile; once the consumer has taken them all, the
    receiver's RSS comes back to within 8 MiB of where it was."""
    topic = "latecomer"
    before = host.counters()
    rss_before = host.rss()
    pad = "m" * 3000
    sent = 8000
    for i in range(sent):
        rpc.cast({}, topic, {"method": "record",
                             "args": {"value": i, "pad": pad}})
        if i % 400 == 0:
            host.echo()  # other traffic between the held messages
    host.wait_counter("received",
                      before["nova_rpc_zmq_receiver_received_total"] + sent)
    held = host.rss() - rss_before
    print("receiver RSS with the backlog: +%.1f MiB" % (held / 2**20))
    assert held > 8 * 2**20
    host.local.start_service("late", topic=topic, timeout=scaled(30))
    wait_for(lambda: host.stats(topic)["record"] >= sent, scaled(60),
             interval=0.5, what="the backlog taken")
    deadline = time.monotonic() + scaled(30)
    while host.rss() - rss_before >= 8 * 2**20 and \
            time.monotonic() < deadline:
        time.sleep(0.5)
    kept = host.rss() - rss_before
    print("receiver RSS after the drain: +%.1f MiB" % (kept / 2**20))
    assert kept < 8 * 2**20


@pytest.mark.timeout(180)
def test_stopped_fanout_subscriber_does_not_block_the_others(host: Host) -> None:
    """Subscriber fa is SIGSTOPped: fb still gets every one of 20,000
    fanouts (sent in steps that fb keeps up with), fa's cut-off is counted
    (fanout_cut_off); after SIGCONT both get new fanouts again."""
    fa = host.local.start_service("fa", topic="fan", timeout=scaled(30))
    fb = host.local.start_service("fb", topic="fan", timeout=scaled(30))
    stopped = False
    try:
        # both subscribed: one fanout reaches each
        def both_got(n: int) -> bool:
            rpc.fanout_cast({}, "fan", {"method": "announce", "args": {"value": -1}})
            return all(host.stats("fan_" + s)["fanout"] >= n for s in ("fa", "fb"))
        wait_for(lambda: both_got(1), 20, interval=0.2, what="both subscribed")
        base_b = host.stats("fan_fb")["fanout"]
        before = host.counters()
        os.kill(fa.pid, signal.SIGSTOP)
        stopped = True
        total, step, window = 20000, 1000, 5000
        sent = 0
        started = time.monotonic()
        while sent < total:
            for _ in range(step):
                rpc.fanout_cast({}, "fan", {"method": "announce",
                                            "args": {"value": sent}})
                sent += 1
            # fb must keep receiving while fa takes nothing
            wait_for(lambda: host.stats("fan_fb")["fanout"] - base_b
                     >= sent - window, 15, interval=0.1,
                     what="fb to get fanout %d while fa is stopped" % (sent - window))
        wait_for(lambda: host.stats("fan_fb")["fanout"] - base_b >= total, 15,
                 interval=0.1, what="fb to get all %d fanouts" % total)
        print("fb got %d fanouts in %.1f s with fa stopped"
              % (total, time.monotonic() - started))
        assert host.stats("fan_fb")["fanout"] - base_b == total
        after = host.counters()
        cut = (after.get("nova_rpc_zmq_receiver_fanout_cut_off_total", 0)
               - before.get("nova_rpc_zmq_receiver_fanout_cut_off_total", 0))
        print("cut-offs of the stopped subscriber: %d" % cut)
        assert cut >= 1
        # fa resumes: it drains what it had, then gets new fanouts again
        os.kill(fa.pid, signal.SIGCONT)
        stopped = False
        last = [-1]

        def settled() -> bool:
            now = host.stats("fan_fa")["fanout"]
            done = now == last[0]
            last[0] = now
            return done
        wait_for(settled, 30, interval=0.5, what="fa to drain its pipe")
        base_a, base_b = last[0], host.stats("fan_fb")["fanout"]
        for i in range(100):
            rpc.fanout_cast({}, "fan", {"method": "announce", "args": {"value": i}})
        wait_for(lambda: host.stats("fan_fa")["fanout"] - base_a == 100
                 and host.stats("fan_fb")["fanout"] - base_b == 100, 20,
                 interval=0.2, what="both to get 100 new fanouts")
    finally:
        if stopped:
            os.kill(fa.pid, signal.SIGCONT)
        for proc in (fa, fb):
            proc.stop()
            host.local.procs.remove(proc)
    host.echo()
    assert host.alive()


@pytest.mark.timeout(60)
def test_size_counts_every_frame_while_receiving(host: Host) -> None:
    """64 frames of max_msg_size/64 + 1 bytes (each frame far under the
    limit, the total over it) are dropped as too_large as they arrive,
    the rest discarded unread; a message just under the limit routes."""
    tag = uuid.uuid4().hex[:12]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, int(scaled(5) * 1000))
    sock.connect("tcp://127.0.0.1:%d" % host.local.port)
    offset = os.path.getsize(host.log_path)
    try:
        before = host.counter("dropped.too_large")
        chunk = MAX_MSG_SIZE // 64 + 1
        frames = [b"x" * chunk] * 64
        assert sum(map(len, frames)) > MAX_MSG_SIZE
        sock.send_multipart(frames)
        host.wait_counter("dropped.too_large", before + 1)
        lines = [line for line in host.log_since(offset)
                 if "too_large" in line and "discarded unread" in line]
        assert len(lines) == 1, host.log_since(offset)[-5:]
        # within the limit: routed to the service
        good = uuid.uuid4().hex[:12]
        body = json.dumps({"method": "record", "args": {"value": good}})
        ok = [b"0", b"demo.localhost", b"impl_zmq_v2", b"{}", b"oslo.version",
              b"2.0", b"oslo.message", body.encode()]
        room = (MAX_MSG_SIZE - 2000) // 28
        for i in range(28):      # 64 frames in all, just under the limit
            ok += [b"pad%d" % i, b"y" * room]
        assert len(ok) == 64 and sum(map(len, ok)) < MAX_MSG_SIZE
        sock.send_multipart(ok)
        wait_for(lambda: good in host.stats("demo")["values"], 15,
                 what="the message within the limit")
        assert tag not in host.stats("demo")["values"]
        assert host.counter("dropped.too_large") == before + 1
    finally:
        sock.close(0)
        ctx.term()
    assert host.alive()


@pytest.mark.timeout(90)
def test_health_reports_a_stuck_receiver(tmp_path: Any) -> None:
    """A receiver whose log pipe nobody reads blocks in its next log line
    (a hung journald or supervisor): /health answers 503 STUCK within
    rpc_zmq_health_stuck_after, and 200 again once the pipe is read."""
    base = tempfile.mkdtemp(prefix="nrzs-")
    health_port = free_port()
    local = LocalHost(base_dir=base, extra={
        "rpc_zmq_health_port": health_port,
        "rpc_zmq_health_stuck_after": 1,
        # a DEBUG line per new topic socket, from the routing loop (drops
        # are summed up now, issue 12, so they no longer fill the pipe);
        # the loop's logger only: the health page's own DEBUG lines would
        # block it too
        "default_log_levels": "nova_rpc_zmq.receiver.topics=DEBUG",
    })
    out = os.path.join(local.dir, "stdout.log")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100000)
    with open(out, "wb") as log:
        proc = subprocess.Popen(receiver_argv(local.conf_path), stdout=log,
                                stderr=subprocess.PIPE, env=child_env())
    reader: threading.Thread | None = None
    try:
        wait_for(lambda: proc.poll() is not None or (
            "listening on" in open(out).read() and _status(health_port) == 200),
            20, what="the receiver")
        assert proc.poll() is None
        sock.connect("tcp://127.0.0.1:%d" % local.port)
        # each new topic is one DEBUG log line: 3,000 of them fill a pipe
        # buffer (64 KiB) several times over
        body = json.dumps(["{}", {"method": "record", "args": {}}]).encode()
        for i in range(3000):
            sock.send_multipart([b"0", b"stuck_%d" % i, b"cast", body])
        wait_for(lambda: _status(health_port) == 503, 15, interval=0.2,
                 what="/health to report the stuck loop")
        code, body = http_get(health_port, "/health")
        assert code == 503 and body.startswith("STUCK"), body
        # read the pipe: the loop runs again, /health recovers
        reader = threading.Thread(target=lambda: proc.stderr.read(), daemon=True)
        reader.start()
        wait_for(lambda: _status(health_port) == 200, 20, interval=0.2,
                 what="/health to recover")
    finally:
        sock.close(0)
        ctx.term()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            if reader is None:
                reader = threading.Thread(target=lambda: proc.stderr.read(),
                                          daemon=True)
                reader.start()
            try:
                proc.wait(scaled(10))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        local.stop()
        shutil.rmtree(base, ignore_errors=True)


def _status(port: int) -> int:
    try:
        return http_get(port, "/health")[0]
    except OSError:
        return 0
