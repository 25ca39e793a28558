"""The consumer watchdog's question to the kernel: is the thread running a
message blocked (hand its socket on) or running / waiting for a core (keep
it)?  Real threads, real ``/proc/self/task/<tid>/schedstat``."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from nova_rpc_zmq.impl_zmq.consumer import _Consumer, runnable_ns

pytestmark = pytest.mark.skipif(
    runnable_ns(threading.get_native_id()) is None,
    reason="no schedstat in /proc here")


class Worker:
    """A thread that either burns CPU (outside the GIL) or sleeps, until
    told to stop; ``tid`` is its kernel thread id."""

    def __init__(self, busy: bool) -> None:
        self.busy = busy
        self.stop = threading.Event()
        self.started = threading.Event()
        self.tid = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.started.wait(5)

    def _run(self) -> None:
        self.tid = threading.get_native_id()
        self.started.set()
        block = b"x" * (4 << 20)
        for _ in range(100000):  # bounded: stop() ends it long before
            if self.stop.is_set():
                return
            if self.busy:
                hashlib.sha256(block).digest()  # CPU, GIL released
            else:
                self.stop.wait(0.5)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def watchdog() -> _Consumer:
    """A consumer with only the watchdog's measuring state."""
    c = _Consumer.__new__(_Consumer)
    c._runnable = None
    return c


@pytest.mark.parametrize("busy, expected", [(True, True), (False, False)])
def test_running_thread_keeps_its_socket_a_blocked_one_loses_it(busy,
                                                                 expected):
    with Worker(busy) as worker:
        c = watchdog()
        # The first tick of a message only takes the measure.
        assert c._keeps_running(7, worker.tid) is True
        time.sleep(0.05)
        assert c._keeps_running(7, worker.tid) is expected


def test_a_new_message_starts_a_new_measure():
    with Worker(False) as sleeper:
        c = watchdog()
        assert c._keeps_running(1, sleeper.tid) is True
        time.sleep(0.02)
        # Message 2 runs now: what message 1 did says nothing about it.
        assert c._keeps_running(2, sleeper.tid) is True
        time.sleep(0.02)
        assert c._keeps_running(2, sleeper.tid) is False


def test_runnable_time_grows_only_while_running():
    with Worker(True) as spinner, Worker(False) as sleeper:
        first = runnable_ns(spinner.tid), runnable_ns(sleeper.tid)
        time.sleep(0.2)
        spun = runnable_ns(spinner.tid) - first[0]
        slept = runnable_ns(sleeper.tid) - first[1]
        assert spun > 0.05e9  # at least a quarter of the time on a core
        assert slept < 0.01e9


def test_unknown_thread_is_handed_on():
    """No answer from the kernel: wall time decides, as for green threads."""
    assert runnable_ns(2 ** 22 + 12345) is None
    assert watchdog()._keeps_running(1, 2 ** 22 + 12345) is False

