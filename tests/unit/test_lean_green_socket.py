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
