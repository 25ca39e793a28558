"""ZeroMQ I/O threads under SCHED_BATCH (rpc_zmq_io_batch), checked on the
threads the kernel reports for this process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import zmq

from nova_rpc_zmq import zmqio
from nova_rpc_zmq.concurrency import get_handler
from nova_rpc_zmq.zmqio import batch_policy_allowed
from tests.support import scaled


def _io_threads() -> dict[int, str]:
    """{tid: name} of this process's ZeroMQ I/O threads."""
    found = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open("/proc/self/task/%s/comm" % tid) as f:
                name = f.read().strip()
        except OSError:
            continue  # the thread ended
        if name.startswith("ZMQbg/IO"):
            found[int(tid)] = name
    return found


def _new_io_thread_policies(batch: bool, handler: str = "threading"
                            ) -> list[int]:
    before = set(_io_threads())
    ctx = zmqio.context(get_handler(handler), 1, batch=batch)
    try:
        sock = zmqio.make_socket(ctx, zmq.PUSH)  # starts the I/O thread
        try:
            new: list[int] = []
            deadline = time.monotonic() + 5
            while not new and time.monotonic() < deadline:
                new = [tid for tid in _io_threads() if tid not in before]
                time.sleep(0.01)
            return [os.sched_getscheduler(tid) for tid in new]
        finally:
            sock.close(0)
    finally:
        ctx.term()


needs_batch = pytest.mark.skipif(
    not os.path.isdir("/proc/self/task") or not batch_policy_allowed(),
    reason="SCHED_BATCH is not available here")


@needs_batch
def test_batch_context_runs_its_io_thread_under_sched_batch() -> None:
    assert _new_io_thread_policies(batch=True) == [os.SCHED_BATCH]


@needs_batch
def test_plain_context_keeps_the_normal_policy() -> None:
    assert _new_io_thread_policies(batch=False) == [os.SCHED_OTHER]


@needs_batch
def test_green_contexts_take_the_policy_too() -> None:
    pytest.importorskip("eventlet")
    assert _new_io_thread_policies(batch=True, handler="eventlet") == [
        os.SCHED_BATCH]


def test_the_probe_leaves_the_calling_thread_alone() -> None:
    batch_policy_allowed()
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


PROBE_IN_A_GREEN_PROCESS = r"""
import eventlet
eventlet.monkey_patch()
import os
from nova_rpc_zmq.zmqio import batch_policy_allowed
batch_policy_allowed()
print(os.sched_getscheduler(0))
"""


@needs_batch
def test_the_probe_leaves_a_monkey_patched_process_alone_too() -> None:
    """In a green process ``threading.Thread`` is a green thread on the
    calling OS thread: the probe must use a real one."""
    pytest.importorskip("eventlet")
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", PROBE_IN_A_GREEN_PROCESS],
        capture_output=True, text=True, timeout=scaled(60),
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))))
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip()) == os.SCHED_OTHER


def _reply_reader_policies(batch: bool) -> list[int]:
    """Policies of the native reader threads of a caller's reply listener
    (``impl_zmq.replies.ReplyWaiter``) started under ``rpc_zmq_io_batch``."""
    import dataclasses
    import tempfile

    from nova_rpc_zmq import config
    from nova_rpc_zmq.impl_zmq.replies import ReplyWaiter
    from nova_rpc_zmq.metrics import Counters

    config.reset()
    config.CONF([], project="nova")
    with tempfile.TemporaryDirectory(prefix="nrzb-") as ipc_dir:
        settings = dataclasses.replace(config.load_settings(config.CONF),
                                       rpc_zmq_ipc_dir=ipc_dir,
                                       rpc_zmq_io_batch=batch)
        handler = get_handler("threading")
        ctx = zmqio.context(handler, 1)
        waiter = ReplyWaiter(handler, ctx, settings,
                             lambda *args: None, Counters("t"))
        try:
            waiter._start()
            deadline = time.monotonic() + scaled(5)
            policies: list[int] = []
            while time.monotonic() < deadline:
                policies = [os.sched_getscheduler(t.native_id)
                            for t in waiter._threads]
                if len(set(policies)) == 1 and \
                        (not batch or policies[0] == os.SCHED_BATCH):
                    break
                time.sleep(0.01)
            return policies
        finally:
            waiter.close()
            ctx.term()


@needs_batch
def test_a_threaded_callers_reply_readers_run_under_sched_batch() -> None:
    assert _reply_reader_policies(batch=True) == [os.SCHED_BATCH] * 2


@needs_batch
def test_reply_readers_keep_the_normal_policy_with_the_option_off() -> None:
    assert _reply_reader_policies(batch=False) == [os.SCHED_OTHER] * 2
