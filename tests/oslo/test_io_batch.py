"""``[oslo_messaging_zmq] rpc_zmq_io_batch``: the driver's ZeroMQ I/O
thread and its readers run under SCHED_BATCH (on by default), the
application's own threads keep their policy; checked on the threads the
kernel reports for this process."""

from __future__ import annotations

import os
from typing import Any

import oslo_messaging
import pytest

from nova_rpc_zmq.testing import scaled
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

