"""``[oslo_messaging_zmq] rpc_zmq_io_batch``: the driver's ZeroMQ I/O
thread and its readers run under SCHED_BATCH (on by default), the
application's own threads keep their policy; checked on the threads the
kernel reports for this process."""

from __future__ import annotations

import os
import threading
from typing import Any

import oslo_messaging
import pytest

from nova_rpc_zmq.testing import scaled, wait_for
from nova_rpc_zmq.zmqio import batch_policy_allowed
from tests.oslo.omsupport import Endpoint

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/task") or not batch_policy_allowed(),
    reason="SCHED_BATCH is not available here")


def _io_threads() -> set[int]:
    """The tids of this process's ZeroMQ I/O threads."""
    found = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open("/proc/self/task/%s/comm" % tid) as f:
                if f.read().startswith("ZMQbg/IO"):
                    found.add(int(tid))
        except OSError:
            continue  # the thread ended
    return found


def _policies(transport_factory: Any, **options: Any) -> dict[str, Any]:
    """Serve and call once on a fresh zmq:// transport; the policies of
    its new I/O threads, of its RPC server's reader and of the caller."""
    before = _io_threads()
    transport = transport_factory("zmq://", **options)
    server = oslo_messaging.get_rpc_server(
        transport, oslo_messaging.Target(topic="batch", server="s1"),
        [Endpoint("s1")], executor="threading")
    server.start()
    try:
        rpc = oslo_messaging.get_rpc_client(
            transport, oslo_messaging.Target(topic="batch"),
            timeout=scaled(10))
        assert rpc.call({}, "whoami") == "s1"
        listener = transport._driver._listeners[0]
        reader = listener.inbound._reader
        return {"io": sorted(os.sched_getscheduler(tid)
                             for tid in _io_threads() - before),
                "reader": os.sched_getscheduler(reader.native_id),
                "caller": os.sched_getscheduler(0)}
    finally:
        server.stop()
        server.wait()


def test_io_thread_and_readers_run_under_sched_batch_by_default(
        transport_factory: Any) -> None:
    found = _policies(transport_factory)
    assert found == {"io": [os.SCHED_BATCH], "reader": os.SCHED_BATCH,
                     "caller": os.SCHED_OTHER}


def test_io_batch_false_keeps_the_normal_policy(
        transport_factory: Any) -> None:
    found = _policies(transport_factory, rpc_zmq_io_batch=False)
    assert found == {"io": [os.SCHED_OTHER], "reader": os.SCHED_OTHER,
                     "caller": os.SCHED_OTHER}



class _Held:
    """An endpoint whose ``hold`` returns once ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def hold(self, ctxt: dict) -> str:
        self.release.wait(scaled(30))
        return "released"


def test_a_server_counts_the_requests_it_is_serving(
        transport_factory: Any) -> None:
    """What ``zmqio.hand_over`` is decided on: the requests handed to
    oslo.messaging and not yet answered, counted on real calls."""
    transport = transport_factory("zmq://")
    held = _Held()
    server = oslo_messaging.get_rpc_server(
        transport, oslo_messaging.Target(topic="held", server="s1"),
        [held, Endpoint("s1")], executor="threading")
    server.start()
    callers: list[threading.Thread] = []
    try:
        rpc = oslo_messaging.get_rpc_client(
            transport, oslo_messaging.Target(topic="held"),
            timeout=scaled(30))
        assert rpc.call({}, "whoami") == "s1"
        driver = transport._driver
        assert driver.serving == 0
        answers: list[str] = []
        for _ in range(2):
            thread = threading.Thread(
                target=lambda: answers.append(rpc.call({}, "hold")))
            thread.start()
            callers.append(thread)
        wait_for(lambda: driver.serving == 2, what="two requests being served")
        assert driver._replies.calls_waiting() == 2
        held.release.set()
        for thread in callers:
            thread.join(scaled(10))
        assert answers == ["released", "released"]
        wait_for(lambda: driver.serving == 0, what="both answered")
        assert driver._replies.calls_waiting() == 0
    finally:
        held.release.set()
        for thread in callers:
            thread.join(scaled(10))
        server.stop()
        server.wait()


def test_only_a_request_served_alone_hands_the_core_over(
        transport_factory: Any) -> None:
    driver = transport_factory("zmq://")._driver
    driver._context()
    lone = driver.request_taken()
    assert lone > 0
    assert driver.request_done(lone) is True
    # two at once: neither was served alone
    first = driver.request_taken()
    second = driver.request_taken()
    assert second < 0  # it came while the first was served
    assert driver.request_done(first) is False
    assert driver.request_done(second) is False
    # one that ran while another came and went is not alone either
    first = driver.request_taken()
    assert driver.request_done(driver.request_taken()) is False
    assert driver.request_done(first) is False
    assert driver.serving == 0


def test_without_io_batch_nothing_is_counted(transport_factory: Any) -> None:
    driver = transport_factory("zmq://", rpc_zmq_io_batch=False)._driver
    driver._context()
    assert driver.request_taken() == 0
    assert driver.serving == 0
