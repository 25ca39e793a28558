"""The concurrency seam keeps its documented contract under both models:
real native threads, and real green threads in eventlet's hub (no
monkey-patching needed for these)."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from nova_rpc_zmq import concurrency, zmqio
from tests.support import scaled

MODELS = ["threading", "eventlet"]


@pytest.fixture(params=MODELS)
def handler(request):
    if request.param == "eventlet":
        pytest.importorskip("eventlet")
    return concurrency.get_handler(request.param)


def wait_until(handler, predicate, timeout=5.0, what="condition"):
    """Pause through ``handler`` until ``predicate()``, within a deadline."""
    deadline = time.monotonic() + scaled(timeout)
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        handler.sleep(0.001)


def test_capabilities_and_singletons():
    threads = concurrency.get_handler("threading")
    assert threads.green is False
    assert concurrency.get_handler("threading") is threads
    with pytest.raises(ValueError, match="use 'eventlet' or 'threading'"):
        concurrency.get_handler("gevent")
    pytest.importorskip("eventlet")
    assert concurrency.get_handler("eventlet").green is True


def test_spawn_runs_with_arguments_and_join_waits(handler):
    got = []
    thread = handler.spawn(lambda a, b=None: got.append((a, b, handler.current())),
                           1, b=2)
    handler.join(thread, scaled(5))
    assert got == [(1, 2, thread)]  # current() is what spawn returned


def test_join_returns_at_its_timeout_and_kills_nothing(handler):
    release = handler.Event()
    done = []

    def blocked():
        release.wait()
        done.append(True)

    thread = handler.spawn(blocked)
    started = time.monotonic()
    handler.join(thread, 0.05)
    assert time.monotonic() - started >= 0.04
    assert done == []
    release.set()
    handler.join(thread, scaled(5))
    assert done == [True]


@pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_join_and_stop_never_raise_the_threads_exception(handler):
    def fails():
        raise ValueError("reported by the model, not by join")

    thread = handler.spawn(fails)
    handler.join(thread, scaled(5))
    handler.stop(thread)
    assert thread.dead if handler.green else not thread.is_alive()


def test_join_and_stop_of_the_caller_itself_do_nothing(handler):
    done = []

    def itself():
        me = handler.current()
        handler.join(me, 0.01)
        handler.stop(me)
        done.append(True)

    handler.join(handler.spawn(itself), scaled(5))
    assert done == [True]


def test_stop_kills_a_green_thread_where_it_blocks_or_joins_a_native_one(handler):
    flag = handler.Event()
    cleaned = []

    def loop():
        try:
            # a native loop polls and notices the flag; a green one blocks
            while not flag.wait(0.01 if not handler.green else None):
                pass
        finally:
            cleaned.append(True)

    thread = handler.spawn(loop)
    handler.sleep(0)  # let a green thread start and block
    if not handler.green:
        flag.set()
    handler.stop(thread)
    assert cleaned == [True]
    assert not flag.is_set() if handler.green else flag.is_set()


def test_deadline_interrupts_green_waits_only(handler):
    started = time.monotonic()
    if handler.green:
        with pytest.raises(TimeoutError):
            with handler.deadline(0.05):
                handler.sleep(scaled(5))
        assert time.monotonic() - started < scaled(2)
    else:
        with handler.deadline(0.01):
            handler.sleep(0.05)
        assert time.monotonic() - started >= 0.04
    with handler.deadline(None):
        handler.sleep(0)


def test_event_wait_times_out_with_false_and_set_wakes_every_waiter(handler):
    ev = handler.Event()
    started = time.monotonic()
    assert ev.wait(0.05) is False
    assert scaled(2) > time.monotonic() - started >= 0.04
    woken = []
    threads = [handler.spawn(lambda: woken.append(ev.wait(scaled(5))))
               for _ in range(3)]
    handler.sleep(0)
    ev.set()
    for t in threads:
        handler.join(t, scaled(5))
    assert woken == [True, True, True] and ev.is_set()
    ev.clear()
    assert not ev.is_set() and ev.wait(0) is False


def test_queue_is_fifo_and_its_timeouts_raise_empty_and_full(handler):
    q = handler.Queue()
    producer = handler.spawn(lambda: [q.put(i) for i in range(100)])
    assert [q.get(timeout=scaled(5)) for _ in range(100)] == list(range(100))
    handler.join(producer, scaled(5))
    started = time.monotonic()
    with pytest.raises(handler.Empty):
        q.get(timeout=0.05)
    assert time.monotonic() - started >= 0.04
    with pytest.raises(handler.Empty):
        q.get_nowait()
    bounded = handler.Queue(1)
    bounded.put("a")
    with pytest.raises(handler.Full):
        bounded.put("b", timeout=0.05)
    with pytest.raises(handler.Full):
        bounded.put_nowait("b")
    assert bounded.get_nowait() == "a"


def test_lock_excludes_across_a_switch(handler):
    lock = handler.Lock()
    inside, most = [0], [0]

    def worker():
        for _ in range(20):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                handler.sleep(0)  # a green switch here, inside the lock
                inside[0] -= 1

    threads = [handler.spawn(worker) for _ in range(4)]
    for t in threads:
        handler.join(t, scaled(10))
    assert most[0] == 1
    assert lock.acquire(blocking=False)
    lock.release()


def test_sleep_zero_lets_other_green_threads_run(handler):
    ran = []
    handler.spawn(ran.append, True)
    wait_until(handler, lambda: ran, what="the spawned thread to run")
    assert ran == [True]


def test_spawn_native_runs_in_another_os_thread(handler):
    native_ident = concurrency.original("threading").get_ident
    here = native_ident()
    seen = []
    thread = handler.spawn_native(lambda: seen.append(native_ident()))
    wait_until(handler, lambda: not thread.is_alive(), what="the native thread")
    assert seen and seen[0] != here


def test_wait_readable_waits_for_data_or_raises_at_its_timeout(handler):
    a, b = socket.socketpair()
    try:
        started = time.monotonic()
        with pytest.raises(KeyError):
            handler.wait_readable(a.fileno(), 0.05, KeyError)
        assert time.monotonic() - started >= 0.04
        # a writer in another thread of the model wakes the waiter
        writer = handler.spawn(lambda: (handler.sleep(0.01), b.send(b"x")))
        handler.wait_readable(a.fileno(), scaled(5))
        assert a.recv(1) == b"x"
        handler.join(writer, scaled(5))
    finally:
        a.close()
        b.close()


def test_green_contexts_make_sockets_that_wait_in_the_hub():
    pytest.importorskip("eventlet")
    import zmq
    green = concurrency.get_handler("eventlet")
    ctx = zmqio.context(green, 1)
    try:
        sock = zmqio.make_socket(ctx, zmq.PULL, linger=0)
        plain = zmqio.make_socket(ctx, zmq.PULL, linger=0, native=True)
        assert type(sock) is not zmq.Socket and isinstance(sock, zmq.Socket)
        assert type(plain) is zmq.Socket
        sock.close()
        plain.close()
    finally:
        ctx.term()
    threads_ctx = zmqio.context(concurrency.get_handler("threading"), 1)
    try:
        sock = zmqio.make_socket(threads_ctx, zmq.PULL, linger=0)
        assert type(sock) is zmq.Socket
        sock.close()
    finally:
        threads_ctx.term()


def test_term_context_gives_up_at_its_timeout_while_a_socket_is_open(handler):
    import zmq
    ctx = zmqio.context(handler, 1)
    sock = zmqio.make_socket(ctx, zmq.PUSH, linger=0)
    assert zmqio.term_context(ctx, handler, 0.05) is False
    sock.close()  # the term left running in its native thread now ends
    wait_until(handler, lambda: ctx.closed, what="the context to end")
    ctx2 = zmqio.context(handler, 1)
    assert zmqio.term_context(ctx2, handler, scaled(5)) is True
    assert ctx2.closed


def test_get_handler_is_safe_from_many_threads():
    made = []
    barrier = threading.Barrier(8)

    def ask():
        barrier.wait()
        made.append(concurrency.get_handler("threading"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(scaled(5))
    assert len(made) == 8 and len({id(h) for h in made}) == 1


def test_mailbox_is_fifo_wakes_its_reader_and_times_out_with_empty(handler):
    box = handler.Mailbox()
    box.put(1)
    box.put(2)
    assert box.qsize() == 2
    assert [box.get(timeout=1), box.get(timeout=1)] == [1, 2]
    assert box.qsize() == 0
    started = time.monotonic()
    with pytest.raises(handler.Empty):
        box.get(timeout=0.05)
    assert time.monotonic() - started >= 0.04
    got = []
    reader = handler.spawn(lambda: got.append(box.get(timeout=scaled(5))))
    handler.sleep(0.02)  # the reader waits now
    assert got == []
    box.put("late")
    handler.join(reader, scaled(5))
    assert got == ["late"]


def test_a_put_from_a_green_thread_hands_the_item_over_at_once():
    """The reply listener's put runs the waiting caller before the
    listener goes on; the listener then resumes by itself."""
    handler = concurrency.get_handler("eventlet")
    box = handler.Mailbox()
    order: list = []

    def reader():
        order.append(("got", box.get(timeout=scaled(5))))

    def putter():
        box.put("reply")
        order.append("putter goes on")
        box.put("second")  # no one waits: queued
        order.append("putter done")

    waiting = handler.spawn(reader)
    handler.sleep(0.02)  # the reader waits now
    feeding = handler.spawn(putter)
    handler.join(feeding, scaled(5))
    handler.join(waiting, scaled(5))
    assert order == [("got", "reply"), "putter goes on", "putter done"]
    assert box.get(timeout=0) == "second"


def test_a_put_after_a_timeout_does_not_wake_the_reader_elsewhere(handler):
    """The reader timed out and went to wait on something else: an item
    put then must not end that other wait early."""
    box = handler.Mailbox()
    other = handler.Event()
    seen = []

    def reader():
        try:
            box.get(timeout=0.02)
        except handler.Empty:
            seen.append("empty")
        seen.append(other.wait(scaled(0.3)))

    thread = handler.spawn(reader)
    wait_until(handler, lambda: seen == ["empty"], what="the timeout")
    box.put("stray")
    handler.sleep(0.05)
    assert seen == ["empty"]  # still waiting for the event
    other.set()
    handler.join(thread, scaled(5))
    assert seen == ["empty", True]
    assert box.get(timeout=0) == "stray"


native_mailbox = pytest.mark.skipif(
    not concurrency._ThreadFd.available,
    reason="the eventfd mailbox needs os.eventfd (Linux, Python 3.10+)")


@native_mailbox
def test_native_mailbox_wakes_by_eventfd_only_while_its_reader_waits():
    handler = concurrency.get_handler("threading")
    box = handler.Mailbox()
    assert isinstance(box, concurrency._FdMailbox)
    # many calls waiting already: the GIL-holding kind, same contract
    crowded = handler.Mailbox(others=concurrency.FD_WAKE_BELOW)
    assert not isinstance(crowded, concurrency._FdMailbox)
    crowded.put(1)
    assert crowded.qsize() == 1 and crowded.get(timeout=1) == 1
    own = concurrency._ThreadFd.mine()
    box.put("nobody waits")
    # no reader named: the put made no system call, the eventfd is quiet
    assert own.poll.poll(0) == []
    assert box.get(timeout=0) == "nobody waits"
    with pytest.raises(handler.Empty):
        box.get(timeout=0)  # at once: the oslo driver's non-blocking look
    # a wake-up left over from an earlier wait: the next wait looks, finds
    # nothing and goes on waiting until its own timeout
    os.eventfd_write(own.fd, 1)
    started = time.monotonic()
    with pytest.raises(handler.Empty):
        box.get(timeout=0.05)
    assert time.monotonic() - started >= 0.04


@native_mailbox
def test_native_mailboxes_lose_no_wake_up_between_many_threads():
    """16 readers, each waiting on its own mailboxes in turn, one putter:
    every item arrives, none at its wait's timeout (a lost wake-up)."""
    handler = concurrency.get_handler("threading")
    rounds, readers = 300, 16
    boxes = [[handler.Mailbox() for _ in range(rounds)]
             for _ in range(readers)]
    got: list[list] = [[] for _ in range(readers)]
    longest = [0.0]

    def read(i):
        for box in boxes[i]:
            started = time.monotonic()
            # a lost wake-up would still end at the timeout, with the item
            got[i].append(box.get(timeout=scaled(10)))
            longest[0] = max(longest[0], time.monotonic() - started)

    threads = [handler.spawn(read, i) for i in range(readers)]
    for n in range(rounds):
        for i in range(readers):
            boxes[i][n].put((i, n))
        if n % 50 == 0:
            time.sleep(0.001)  # let readers reach their waits now and then
    for t in threads:
        handler.join(t, scaled(30))
    assert got == [[(i, n) for n in range(rounds)] for i in range(readers)]
    assert longest[0] < scaled(5), "a wait lasted to its timeout"


@native_mailbox
def test_a_forked_child_waits_on_an_eventfd_of_its_own():
    parent = concurrency._ThreadFd.mine()
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 only when all holds
        code = 1
        try:
            mine = concurrency._ThreadFd.mine()
            box = concurrency._FdMailbox()
            t = threading.Thread(target=lambda: (time.sleep(0.02),
                                                 box.put("child")))
            t.start()
            ok = mine is not parent and mine.pid == os.getpid() \
                and box.get(timeout=5) == "child"
            t.join(5)
            code = 0 if ok else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + scaled(20)
    status = None
    while status is None and time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            status = None
            time.sleep(0.02)
    if status is None:  # a lock another thread held at the fork
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child did not finish")
    assert os.waitstatus_to_exitcode(status) == 0
    # the parent's is untouched: its waits still work
    assert concurrency._ThreadFd.mine() is parent
    box = concurrency.get_handler("threading").Mailbox()
    t = threading.Thread(target=lambda: (time.sleep(0.02), box.put("parent")))
    t.start()
    assert box.get(timeout=scaled(5)) == "parent"
    t.join(scaled(5))
