"""A caller with thousands of calls in flight loses no reply when they all
come back together while it is paused.

The bench service holds every call until one moment, then answers them all
at once. The caller (a Nova-era process: its own ``cfg.CONF``,
``impl_zmq.call(CONF, ...)`` from native threads) is SIGSTOPped just before
that moment and SIGCONTed up to ``PAUSE`` seconds after (longer than the
receiver's ``FANOUT_STALL``): the replies that do not fit the caller's
direct reply socket pile up in the receiver's pipe on ``zmq_replies.<host>``
while more keep coming. Once the caller runs again, its 8000 threads wake
up together; its reply sockets must take the pile in faster than the
receiver's stall check cuts it off. With ``REPLY_RCVHWM`` (in
``impl_zmq/replies.py``) at libzmq's default 1000 they did not: the
receiver logged ``subscriber_full``, cut the caller off, and about 2000
calls timed out, every run.

This file is also the caller: ``python -m tests.functional.test_reply_burst
CONF TOPIC N LEAD TIMEOUT`` prints ``UNTIL <monotonic>`` (the hold
moment) after a warm-up call, then one JSON line with the outcome of its N
held calls.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.request
from typing import Any

import pytest

#: Calls in flight at once: enough that most replies overflow the direct
#: reply queue (``DirectReplies.HWM``) and come through the receiver.
CALLS = 8000
#: Seconds from the caller's warm-up call to the moment the service
#: answers every held call (its threads start and send meanwhile).
LEAD = 10.0
#: Most seconds the caller stays stopped after that moment: longer than the
#: receiver's FANOUT_STALL (1 s). It is woken earlier once the receiver
#: holds replies for it (see the test).
PAUSE = 2.5
#: Seconds before the moment at which the caller is stopped.
STOP_BEFORE = 0.3
#: Timeout of each held call after the moment: a lost reply fails the
#: test in this time instead of hanging it.
CALL_TIMEOUT = 20.0
#: Messages the receiver must have forwarded on the reply topic while the
#: caller was stopped: proof that the burst overflowed the direct reply
#: socket and piled up for the caller in the receiver's pipe.
MIN_PILED = CALLS // 4
#: The bench service's topic (``hold`` is one of its methods).
TOPIC = "burst"


def _caller(argv: list[str]) -> int:
    """Run as the caller process (see the module docstring)."""
    conf_path, topic, n = argv[0], argv[1], int(argv[2])
    lead, timeout = float(argv[3]), float(argv[4])
    from tests.functional.novaera import rpc
    rpc.CONF(["--config-file", conf_path], project="nova")
    ctx = {"user_id": "u1", "project_id": "p1"}
    # the first call proves the reply path and starts the listener
    pid = rpc.call(ctx, topic, {"method": "hold", "args": {"until": 0.0}},
                   timeout=timeout)
    until = time.monotonic() + lead
    print("UNTIL %r" % until, flush=True)
    msg = {"method": "hold", "args": {"until": until}}
    lock = threading.Lock()
    state: dict[str, Any] = {"returned": 0, "failed": 0, "wrong": 0,
                             "first_error": None}

    def one() -> None:
        try:
            got = rpc.call(ctx, topic, msg, timeout=lead + timeout)
        except Exception as exc:  # noqa: BLE001 - counted, the first shown
            with lock:
                state["failed"] += 1
                if state["first_error"] is None:
                    state["first_error"] = "%s: %s" % (type(exc).__name__,
                                                       str(exc)[:300])
            return
        with lock:
            state["returned" if got == pid else "wrong"] += 1

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    deadline = until + timeout + 30
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    state["unfinished"] = sum(t.is_alive() for t in threads)
    print(json.dumps(state), flush=True)
    rpc.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(_caller(sys.argv[1:]))


from nova_rpc_zmq import metrics  # noqa: E402
from nova_rpc_zmq.testing import (LocalHost, Proc, free_port,  # noqa: E402
                                  service_argv)
from tests.support import TIMEOUT_SCALE, scaled, wait_for  # noqa: E402

pytestmark = pytest.mark.slow


def _line(proc: Proc, prefix: str) -> str:
    """The rest of the first line of ``proc``'s output starting with
    ``prefix`` ("" while there is none)."""
    for line in proc.output().splitlines():
        if line.startswith(prefix):
            return line[len(prefix):]
    return ""


def _sleep_until(moment: float) -> None:
    """Sleep until CLOCK_MONOTONIC ``moment`` (the fault's schedule)."""
    left = moment - time.monotonic()
    if left > 0:
        time.sleep(left)


class BurstHost:
    """A host with a receiver (and its /metrics) and one bench service."""

    def __init__(self) -> None:
        self.health_port = free_port()
        # In /tmp: ipc:// paths under pytest's tmp_path can be too long.
        # rpc_zmq_local_calls off: every request passes the receiver, whose
        # counter then tells when all calls are in flight (replies take
        # their own path, direct or through the receiver, either way)
        self.local = LocalHost(extra={"rpc_backend": "nova_rpc_zmq.impl_zmq",
                                      "rpc_zmq_health_port": self.health_port,
                                      "rpc_zmq_local_calls": False})
        self.receiver: Proc | None = None

    def start(self) -> None:
        """Start the receiver and the bench service; wait for both."""
        self.receiver = self.local.start_receiver(scaled(30))
        self.local.spawn("bench service b1",
                         service_argv(self.local.conf_path, "b1", TOPIC,
                                      module="benchmarks.service"),
                         "service-b1.log").wait_for_line("READY", scaled(30))

    def sample(self, name: str, **labels: str) -> float:
        """The receiver's sample ``name`` now, from ``GET /metrics``."""
        url = "http://127.0.0.1:%d/metrics" % self.health_port
        with urllib.request.urlopen(url, timeout=scaled(5)) as resp:
            samples = metrics.parse(resp.read().decode())
        return samples[metrics.sample_key(metrics.metric_name("receiver", name),
                                          labels)]

    def counter(self, name: str) -> float:
        """The receiver's counter ``name`` (``fanout_cut_off``) now."""
        return self.sample(name + "_total")

    def receiver_lines(self, text: str) -> list[str]:
        """The receiver's log lines holding ``text``."""
        assert self.receiver is not None
        return [line for line in self.receiver.output().splitlines()
                if text in line]


@pytest.fixture
def host():
    """A started ``BurstHost``, stopped (every process) after the test."""
    h = BurstHost()
    try:
        h.start()
        yield h
    finally:
        h.local.stop()


@pytest.mark.timeout(180)
def test_paused_caller_gets_every_reply_of_a_burst(host):
    """Every held call returns its result and the receiver cut no one off,
    though the caller was stopped while the whole burst came back."""
    lead, timeout = scaled(LEAD), scaled(CALL_TIMEOUT)
    forwarded_before = host.counter("forwarded")
    caller = host.local.spawn(
        "burst caller",
        [sys.executable, "-m", "tests.functional.test_reply_burst",
         host.local.conf_path, TOPIC, str(CALLS), str(lead), str(timeout)],
        "caller.log")
    until = float(wait_for(lambda: _line(caller, "UNTIL "), scaled(30),
                           what="the caller's warm-up call"))
    # every call is in flight (its request forwarded to the service, which
    # holds it) before the caller stops: the replies come as one burst
    stop_at = until - STOP_BEFORE
    requests = forwarded_before + 1 + CALLS  # the warm-up call's and theirs
    wait_for(lambda: host.counter("forwarded") >= requests,
             max(0.0, stop_at - time.monotonic()) / TIMEOUT_SCALE,
             interval=0.1,
             what="the caller's %d requests before the hold moment (raise "
                  "LEAD)" % CALLS)
    _sleep_until(stop_at)
    os.kill(caller.pid, signal.SIGSTOP)
    try:
        # A stopped process reads nothing, whatever its queues: once the
        # receiver holds replies for it (its pipes are full) the stall
        # check would cut it off after FANOUT_STALL by design. So the
        # pause ends there, with the burst piled up in the pipes, or after
        # PAUSE; either way the caller wakes to more replies than libzmq's
        # default queue takes, with more still coming.
        end = until + scaled(PAUSE)
        while time.monotonic() < end and \
                not host.sample("backlog_messages"):
            time.sleep(0.05)
        piled = host.counter("forwarded") - requests
    finally:
        os.kill(caller.pid, signal.SIGCONT)
    assert piled >= MIN_PILED, (
        "only %d replies reached the receiver's reply topic while the caller "
        "was stopped: the burst did not overflow its direct reply socket "
        "(raise CALLS or PAUSE)" % piled)
    out = wait_for(lambda: _line(caller, "{"), timeout + scaled(40),
                   interval=0.2, what="the caller's outcome")
    state = json.loads("{" + out)
    # a cut-off is counted in fanout_cut_off and logged as subscriber_full
    # (the replies the caller then missed are not counted: libzmq does not
    # say how many)
    cut_off = host.counter("fanout_cut_off")
    full = host.receiver_lines("subscriber_full")
    assert (state["returned"], state["failed"], state["wrong"],
            state["unfinished"]) == (CALLS, 0, 0, 0), (
        "%s; receiver: fanout_cut_off=%s %s" % (state, cut_off, full[:1]))
    assert (cut_off, full) == (0, [])
