"""The receiver never drops silently: the drops that come from this host's
limits, not from the message, are counted on ``/metrics`` and logged.

- ``ipc_bind_failed``: a directory sits where a topic's socket file goes;
- ``too_many_topics``: the running receiver's open-files limit is lowered
  (``prlimit``) to what it already holds, so the next topic gets no socket;
- ``internal_error``: no message makes routing raise by itself (every
  error of ``wire.decode`` is a ``RemoteProtocolError``, every socket
  error of a topic is handled), so an in-process receiver gets one fault:
  ``wire.route`` raises for one topic. The loop must count it, log its
  traceback and keep routing.

Each case reads the counter from the receiver's Prometheus text and the log
line from the receiver's log (the first drop of a reason is logged at once).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import tempfile
import threading
import urllib.request
import uuid
from typing import Any, Iterator

import pytest
import zmq

from nova_rpc_zmq import metrics, wire
from nova_rpc_zmq.receiver.daemon import Receiver
from nova_rpc_zmq.testing import LocalHost, free_port
from tests.support import scaled, wait_for


class DropHost:
    """A receiver process with a health port, and a raw PUSH socket to it."""

    def __init__(self, base: str) -> None:
        self.health_port = free_port()
        self.local = LocalHost(base_dir=base, extra={
            "rpc_zmq_health_port": self.health_port})
        self.log_path = os.path.join(self.local.dir, "receiver.log")
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDTIMEO, int(scaled(5) * 1000))
        self.receiver: Any = None

    def counters(self) -> dict[str, float]:
        """The receiver's counters, parsed from ``GET /metrics``."""
        url = "http://127.0.0.1:%d/metrics" % self.health_port
        with urllib.request.urlopen(url, timeout=scaled(5)) as resp:
            return metrics.parse(resp.read().decode())

    def dropped(self, reason: str) -> float:
        """``nova_rpc_zmq_receiver_dropped_total{reason=...}`` now."""
        key = metrics.counter_key("receiver", "dropped." + reason)
        return self.counters()[key]

    def healthy(self) -> bool:
        try:
            self.counters()
        except OSError:
            return False
        return True

    def log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def cast(self, topic: str) -> None:
        """A well-formed legacy cast to ``topic``, as an old node sends it."""
        body = {"method": "record", "args": {"value": topic}}
        self.sock.send_multipart([b"0", topic.encode(), b"cast",
                                  json.dumps(["{}", body]).encode()])

    def stop(self) -> None:
        self.sock.close(0)
        self.ctx.term()
        self.local.stop()


@pytest.fixture(scope="module")
def host() -> Iterator[DropHost]:
    base = tempfile.mkdtemp(prefix="nrzd-")   # short: ipc paths are limited
    h = DropHost(base)
    try:
        h.receiver = h.local.start_receiver(scaled(20))
        wait_for(lambda: h.healthy() or h.receiver.popen.poll() is not None,
                 20, what="health page")
        assert h.receiver.popen.poll() is None, h.receiver.output()
        h.sock.connect("tcp://127.0.0.1:%d" % h.local.port)
        yield h
    finally:
        h.stop()
        shutil.rmtree(base, ignore_errors=True)


def _wait_dropped(host: DropHost, reason: str, at_least: float) -> float:
    def reached() -> float:
        n = host.dropped(reason)
        return n if n >= at_least else 0
    return wait_for(reached, 10, what="dropped{reason=%r} >= %d"
                    % (reason, at_least))


def _wait_logged(host: DropHost, offset: int, *words: str) -> str:
    def line() -> str:
        for text in host.log_since(offset).splitlines():
            if all(w in text for w in words):
                return text
        return ""
    try:
        return wait_for(line, 10, what="a log line with %s" % (words,))
    except AssertionError:
        raise AssertionError("no log line with %s in:\n%s" % (
            words, host.log_since(offset)[-3000:])) from None


@pytest.mark.timeout(60)
def test_ipc_bind_failed_is_counted_and_logged(host: DropHost) -> None:
    """A directory where ``zmq_topic_<topic>`` must be: the receiver cannot
    bind the topic's socket; the cast is counted and logged."""
    topic = "blocked" + uuid.uuid4().hex[:8]
    os.makedirs(os.path.join(host.local.ipc_dir, "zmq_topic_" + topic))
    before = host.dropped("ipc_bind_failed")
    offset = os.path.getsize(host.log_path)
    host.cast(topic)
    _wait_dropped(host, "ipc_bind_failed", before + 1)
    _wait_logged(host, offset, "ipc_bind_failed", repr(topic))
    assert host.receiver.popen.poll() is None


def _open_fds(pid: int) -> list[int]:
    return sorted(int(n) for n in os.listdir("/proc/%d/fd" % pid))


@pytest.mark.timeout(120)
def test_too_many_topics_when_out_of_descriptors(host: DropHost) -> None:
    """The receiver's open-files limit lowered to the descriptors it holds:
    a new topic gets no socket; counted and logged as ``too_many_topics``,
    and once the limit is back, new topics route again."""
    pid = host.receiver.pid
    before = host.dropped("too_many_topics")
    offset = os.path.getsize(host.log_path)
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    # settle: the health page's last connection must be closed
    state: dict[str, Any] = {"fds": None}

    def settled() -> bool:
        fds, state["fds"] = state["fds"], _open_fds(pid)
        return fds == state["fds"]
    wait_for(settled, 10, interval=0.2, what="the receiver's fds to settle")
    fds = state["fds"]
    # the limit is one above the highest fd: only the holes below it are
    # free. A topic takes two (its socket's mailbox, its ipc listener); with
    # an odd count the last topic would fail at the bind instead, hence the
    # second round one higher
    limit = fds[-1] + 1
    reason_line = ""
    for attempt in range(2):
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit + attempt, hard))
        try:
            for i in range((limit - len(fds)) // 2 + 3):
                host.cast("nofd%d.%s" % (attempt, uuid.uuid4().hex[:8]))
            # no scrape while limited: the health page has no fd either
            try:
                reason_line = _wait_logged(host, offset, "too_many_topics",
                                           "open-files limit")
            except AssertionError:
                continue
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        break
    assert reason_line, host.log_since(offset)[-3000:]
    assert host.dropped("too_many_topics") >= before + 1
    # the limit back: a new topic gets its socket
    created = host.counters()
    host.cast("afterfd." + uuid.uuid4().hex[:8])
    wait_for(lambda: host.counters()['nova_rpc_zmq_receiver_topics{kind="push"}']
             > created['nova_rpc_zmq_receiver_topics{kind="push"}'], 10,
             what="a topic socket once descriptors are back")
    assert host.receiver.popen.poll() is None


@pytest.mark.timeout(60)
def test_internal_error_is_counted_logged_and_routing_goes_on(
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Routing raises for one topic (the fault: ``wire.route``); that
    message is counted as ``internal_error``, its traceback logged, and the
    next message of another topic is routed."""
    base = tempfile.mkdtemp(prefix="nrzi-")
    local = LocalHost(base_dir=base)
    real_route = wire.route

    def route(topic: str) -> tuple[str, str]:
        if topic.startswith("boom"):
            raise KeyError("fault injected for " + topic)
        return real_route(topic)
    monkeypatch.setattr(wire, "route", route)
    caplog.set_level(logging.WARNING)
    receiver = Receiver(local.settings())
    receiver.start()
    loop = threading.Thread(target=receiver.run, daemon=True)
    loop.start()
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    try:
        push.connect("tcp://127.0.0.1:%d" % local.port)
        body = json.dumps(["{}", {"method": "record", "args": {}}]).encode()
        push.send_multipart([b"0", b"boom", b"cast", body])
        key = metrics.counter_key("receiver", "dropped.internal_error")
        wait_for(lambda: metrics.parse(receiver.metrics())[key] == 1, 10,
                 what="internal_error counted")
        # the loop counts, then logs: wait for the line too
        errors = wait_for(lambda: [r for r in caplog.records
                                   if "internal error routing" in r.getMessage()],
                          10, what="the internal error logged")
        assert len(errors) == 1 and errors[0].exc_info is not None
        assert "'boom'" in errors[0].getMessage()
        # routing goes on: a consumer of another topic gets its message
        pull.connect("ipc://" + os.path.join(local.ipc_dir, "zmq_topic_fine"))
        push.send_multipart([b"0", b"fine", b"cast", body])
        assert pull.poll(int(scaled(10) * 1000)), "nothing routed after the fault"
        assert pull.recv_multipart()[1] == b"fine"
    finally:
        push.close(0)
        pull.close(0)
        ctx.term()
        receiver.stop()
        loop.join(scaled(10))
        local.stop()
        shutil.rmtree(base, ignore_errors=True)
    assert not loop.is_alive()
