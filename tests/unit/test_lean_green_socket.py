"""The green handler's lean sockets: real zmq sockets over inproc, real
green threads in eventlet's hub (no monkey-patching needed for these)."""

from __future__ import annotations

import time

import pytest
import zmq

eventlet = pytest.importorskip("eventlet")

from nova_rpc_zmq import zmqio  # noqa: E402
from nova_rpc_zmq.concurrency import get_handler  # noqa: E402
from tests.support import scaled  # noqa: E402


@pytest.fixture
def ctx():
    context = zmqio.context(get_handler("eventlet"), 1)
    yield context
    context.destroy(0)


def pair(ctx, name, hwm=None):
    pull = zmqio.make_socket(ctx, zmq.PULL, linger=0, rcvhwm=hwm)
    push = zmqio.make_socket(ctx, zmq.PUSH, linger=0, sndhwm=hwm)
    pull.bind("inproc://" + name)
    push.connect("inproc://" + name)
    return push, pull


def green_wait_for(predicate, timeout=5.0, what="condition"):
    """Yield to the hub until ``predicate()`` is true, within a scaled
    deadline (``time.sleep`` would stop every green thread)."""
    deadline = time.monotonic() + scaled(timeout)
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        eventlet.sleep(0.001)


def parked_reader(sock):
    """A green thread blocked in ``sock.recv_multipart()``, and its result.

    Once it has started, it is parked in the hub: it runs without a switch
    from the flag to the wait, and only a wait gives the hub back.
    """
    started, got = [], []

    def read():
        started.append(True)
        got.append(sock.recv_multipart())

    reader = eventlet.spawn(read)
    green_wait_for(lambda: started, what="the reader to start")
    assert not reader.dead and got == []
    return reader, got


def test_a_blocked_receive_lets_other_green_threads_run(ctx):
    push, pull = pair(ctx, "wake")
    reader, got = parked_reader(pull)
    push.send_multipart([b"a", b"b", b"c"])
    reader.wait()
    assert got == [[b"a", b"b", b"c"]]


def test_messages_queued_before_the_wait_are_all_read(ctx):
    push, pull = pair(ctx, "queued")
    for i in range(50):
        push.send_multipart([b"%d" % i, b"x"])
    got = [pull.recv_multipart()[0] for _ in range(50)]
    assert got == [b"%d" % i for i in range(50)]
    with pytest.raises(zmq.Again):
        pull.recv_multipart(zmq.NOBLOCK)


def test_rcvtimeo_raises_again_without_blocking_the_hub(ctx):
    _push, pull = pair(ctx, "timeo")
    pull.setsockopt(zmq.RCVTIMEO, 100)
    ticks = []
    done = []

    def ticker():
        deadline = time.monotonic() + scaled(5)
        while not done and time.monotonic() < deadline:
            ticks.append(1)
            eventlet.sleep(0.01)  # a tick every 10 ms is what is counted

    t = eventlet.spawn(ticker)
    started = time.monotonic()
    with pytest.raises(zmq.Again):
        pull.recv_multipart()
    waited = time.monotonic() - started
    while_waiting = len(ticks)
    done.append(True)
    t.wait()
    assert 0.08 <= waited < scaled(1.0)
    # the hub kept running the ticker while the receive waited
    assert while_waiting >= 2


def test_a_killed_reader_leaves_the_socket_usable(ctx):
    push, pull = pair(ctx, "kill")
    reader, _got = parked_reader(pull)
    reader.kill()
    assert reader.dead
    push.send_multipart([b"after"])
    assert eventlet.spawn(pull.recv_multipart).wait() == [b"after"]


def test_a_full_peer_makes_send_wait_and_sndtimeo_end_it(ctx):
    push, pull = pair(ctx, "full", hwm=5)
    push.setsockopt(zmq.SNDTIMEO, 150)
    sent = 0
    with pytest.raises(zmq.Again):
        for _ in range(1000):
            push.send_multipart([b"m"])
            sent += 1
    assert 5 <= sent < 1000
    # a reader draining the queue lets a blocked send through
    push.setsockopt(zmq.SNDTIMEO, -1)
    sending, sent_last, drained = [], [], []
    seen_blocked = []

    def drain():
        green_wait_for(lambda: sending, what="the send to start")
        # the sender gave the hub back while its send was not done: it waits
        seen_blocked.append(not sent_last)
        for _ in range(sent + 1):
            drained.append(pull.recv_multipart())

    d = eventlet.spawn(drain)
    sending.append(True)
    push.send_multipart([b"last"])
    sent_last.append(True)
    d.wait()
    assert seen_blocked == [True]
    assert drained[-1] == [b"last"] and len(drained) == sent + 1


def hub_reads(fd):
    """Whether eventlet's hub watches ``fd`` for reading now."""
    hub = eventlet.hubs.get_hub()
    return fd in hub.listeners[hub.READ]


def test_the_hub_keeps_watching_a_socket_read_in_a_loop(ctx):
    push, pull = pair(ctx, "watch")
    fd = pull.getsockopt(zmq.FD)
    got, seen = [], []

    def read():
        for _ in range(20):
            got.append(pull.recv_multipart())
            # between two waits, the listener of the last wait is kept
            seen.append(hub_reads(fd))

    reader = eventlet.spawn(read)
    for i in range(20):
        green_wait_for(lambda: len(got) == i, what="message %d read" % i)
        green_wait_for(lambda: hub_reads(fd), what="the reader to wait")
        push.send_multipart([b"%d" % i, b"x"])
    reader.wait()
    assert [m[0] for m in got] == [b"%d" % i for i in range(20)]
    assert seen == [True] * 20


def test_a_socket_readable_with_no_reader_is_no_longer_watched(ctx):
    push, pull = pair(ctx, "unwatched")
    pull.setsockopt(zmq.RCVTIMEO, int(scaled(5) * 1000))
    fd = pull.getsockopt(zmq.FD)
    reader, got = parked_reader(pull)
    green_wait_for(lambda: hub_reads(fd), what="the reader to wait")
    push.send_multipart([b"first"])
    reader.wait()
    assert got == [[b"first"]]
    assert hub_reads(fd)  # kept for the next wait
    # the reader is gone; with no one waiting, a readable fd must not make
    # the hub call back on every turn: the listener goes at the next event
    # (libzmq signals the fd for a message after a read found none)
    with pytest.raises(zmq.Again):
        pull.recv_multipart(zmq.NOBLOCK)
    push.send_multipart([b"second"])
    green_wait_for(lambda: not hub_reads(fd), what="the listener to go")
    # a new reader gets the message, and one that waits is watched again
    assert eventlet.spawn(pull.recv_multipart).wait() == [b"second"]
    reader, got = parked_reader(pull)
    green_wait_for(lambda: hub_reads(fd), what="the reader to wait")
    push.send_multipart([b"third"])
    reader.wait()
    assert got == [[b"third"]]


def test_closing_a_socket_wakes_its_waiting_reader(ctx):
    _push, pull = pair(ctx, "closing")
    fd = pull.getsockopt(zmq.FD)
    errors = []

    def read():
        try:
            pull.recv_multipart()
        except zmq.ZMQError as exc:
            errors.append(exc.errno)

    reader = eventlet.spawn(read)
    green_wait_for(lambda: hub_reads(fd), what="the reader to wait")
    pull.close(0)
    assert not hub_reads(fd)
    reader.wait()
    assert errors == [zmq.ENOTSOCK]


def test_a_watch_left_on_a_reused_fd_number_is_replaced(ctx):
    push, pull = pair(ctx, "reused")
    fd = pull.getsockopt(zmq.FD)
    # what a socket dropped without close() leaves when libzmq hands its
    # fd number to a new socket: a watch with no reader still in the hub
    stale = get_handler("eventlet").fd_watch(fd)
    stale.listener = stale._add()
    assert hub_reads(fd)
    reader, got = parked_reader(pull)
    push.send_multipart([b"y"])
    reader.wait()
    assert got == [[b"y"]]
    assert stale.listener is None


def test_rcvtimeo_counts_from_each_wait_not_from_the_first(ctx):
    """One timer serves many waits: a wait that starts late still gets
    its whole RCVTIMEO, and a wait that gets a message is not cut short."""
    push, pull = pair(ctx, "timeo-many")
    pull.setsockopt(zmq.RCVTIMEO, 150)
    got, outcome = [], []

    def sender():
        for i in range(6):  # a message every 60 ms: each wait < 150 ms
            eventlet.sleep(0.06)
            push.send_multipart([b"%d" % i])

    def reader():
        try:
            while True:
                got.append(pull.recv_multipart()[0])
                outcome.append(time.monotonic())
        except zmq.Again:
            outcome.append(("again", time.monotonic()))

    s = eventlet.spawn(sender)
    r = eventlet.spawn(reader)
    s.wait()
    r.wait()
    assert got == [b"%d" % i for i in range(6)]
    last_message, (what, ended) = outcome[-2], outcome[-1]
    assert what == "again"
    # the last wait began at the last message and lasted its own 150 ms
    assert 0.14 <= ended - last_message < scaled(1.0)


def test_a_new_rcvtimeo_holds_from_the_next_wait(ctx):
    """The socket keeps its RCVTIMEO between waits; setting it, as an
    attribute or with setsockopt, takes effect at the next wait."""
    _push, pull = pair(ctx, "timeo-change")

    def waited() -> float:
        started = time.monotonic()
        with pytest.raises(zmq.Again):
            pull.recv_multipart()
        return time.monotonic() - started

    pull.setsockopt(zmq.RCVTIMEO, 50)
    assert 0.04 <= waited() < scaled(1.0)
    pull.rcvtimeo = 400
    assert 0.38 <= waited() < scaled(2.0)
    pull.setsockopt(zmq.RCVTIMEO, 60)
    assert 0.05 <= waited() < 0.35


def test_two_green_readers_of_one_socket_share_its_messages(ctx):
    """Readers take turns at the socket's FD: the one that waits behind
    another asks EVENTS first, and neither misses a message."""
    push, pull = pair(ctx, "two-readers")
    pull.setsockopt(zmq.RCVTIMEO, int(scaled(2) * 1000))
    got: list = []

    def reader():
        try:
            while True:
                got.append(pull.recv_multipart()[0])
        except zmq.Again:
            pass

    readers = [eventlet.spawn(reader), eventlet.spawn(reader)]
    eventlet.sleep(0.01)  # both wait: one at the FD, one for its turn
    for i in range(50):
        push.send_multipart([b"%d" % i])
        if i % 10 == 0:
            eventlet.sleep(0.005)
    for r in readers:
        r.wait()
    assert sorted(got, key=int) == [b"%d" % i for i in range(50)]
