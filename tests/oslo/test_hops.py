"""How few threads a message crosses, through oslo.messaging's public API:
an RPC server's reader hands each request to oslo.messaging's executor
itself (no polling thread in between), a caller's own thread reads its
reply (no reader thread), and both stay correct under many threads, with
heartbeats, timeouts and a transport cleaned up under a waiting call."""

from __future__ import annotations

import threading
import time
from typing import Any

import oslo_messaging
import pytest

from nova_rpc_zmq.testing import scaled, wait_for
from tests.oslo.test_rpc import client, serving


def _threads(word: str) -> list[str]:
    return [t.name for t in threading.enumerate() if word in t.name]


def test_rpc_server_has_no_polling_thread(transport_factory: Any) -> None:
    transport = transport_factory("zmq://")
    with serving(transport, "hops", "s1"):
        assert client(transport, "hops").call({}, "whoami") == "s1"
        # oslo.messaging's PollStyleListenerAdapter runs "_runner"
        assert _threads("_runner") == []


def test_batch_notification_listener_still_gets_batches(
        transport_factory: Any) -> None:
    transport = transport_factory("zmq://", notification=True)
    batches: list[list] = []

    class Batch:
        def info(self, messages: list) -> None:
            batches.append([m["payload"] for m in messages])

    listener = oslo_messaging.get_batch_notification_listener(
        transport, [oslo_messaging.Target(topic="hops_batch")], [Batch()],
        executor="threading", batch_size=5, batch_timeout=scaled(5))
    listener.start()
    try:
        notifier = oslo_messaging.Notifier(transport, "svc",
                                           driver="messagingv2",
                                           topics=["hops_batch"])
        for i in range(5):
            notifier.info({}, "ev", i)
        wait_for(lambda: batches, 20, what="a batch")
        assert batches[0] == [0, 1, 2, 3, 4]
    finally:
        listener.stop()
        listener.wait()


def test_callers_read_their_own_replies(transport_factory: Any) -> None:
    transport = transport_factory("zmq://")
    with serving(transport, "hops_reply", "s1"):
        readers = len(_threads("_read"))  # the server's reader
        assert client(transport, "hops_reply").call({}, "echo",
                                                   value=1) == 1
        # the first call made the reply socket, but no thread to read it
        assert len(_threads("_read")) == readers


def test_many_threads_with_heartbeats_and_timeouts(
        transport_factory: Any) -> None:
    """32 threads call at once, some slow methods with heartbeats, some
    timing out: every call gets its own answer, none waits for a leader
    that left."""
    transport = transport_factory("zmq://")
    results: dict[int, Any] = {}

    def caller(i: int) -> None:
        rpc = client(transport, "hops_many", timeout=30)
        for n in range(20):
            if i % 8 == 0 and n == 0:
                # a long call kept alive by heartbeats (oslo.messaging
                # sends one every call_monitor_timeout / 2, at least 1 s)
                value = rpc.prepare(call_monitor_timeout=2).call(
                    {}, "sleep", seconds=3.5)
                results.setdefault(i, []).append(value == "s1")
                continue
            if i % 8 == 1 and n == 0:
                with pytest.raises(oslo_messaging.MessagingTimeout):
                    rpc.prepare(timeout=0.3).call({}, "sleep", seconds=1.5)
                results.setdefault(i, []).append(True)
                continue
            value = rpc.call({}, "echo", value=[i, n])
            results.setdefault(i, []).append(value == [i, n])

    with serving(transport, "hops_many", "s1"):
        threads = [threading.Thread(target=caller, args=(i,))
                   for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(scaled(120))
        assert not any(t.is_alive() for t in threads)
    assert sorted(results) == list(range(32))
    assert all(all(ok) and len(ok) == 20 for ok in results.values())


def test_cleanup_under_a_waiting_call_ends_it_at_once(
        transport_factory: Any) -> None:
    server_transport = transport_factory("zmq://")
    caller_transport = transport_factory("zmq://")
    outcome: list[Any] = []

    def call() -> None:
        started = time.monotonic()
        try:
            client(caller_transport, "hops_close", timeout=60).call(
                {}, "sleep", seconds=5)
            outcome.append(("returned", time.monotonic() - started))
        except oslo_messaging.MessagingTimeout as exc:
            outcome.append((str(exc), time.monotonic() - started))

    with serving(server_transport, "hops_close", "s1"):
        thread = threading.Thread(target=call)
        thread.start()
        time.sleep(0.5)
        caller_transport.cleanup()
        thread.join(scaled(30))
    assert outcome, "the call did not end"
    text, took = outcome[0]
    assert "cleaned up" in text
    assert took < 4.0  # well before the method's 5 s and the 60 s timeout
