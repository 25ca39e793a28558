"""The green handler's lean sockets: real zmq sockets over inproc, real
green threads in eventlet's hub (no monkey-patching needed for these)."""

from __future__ import annotations

import time

import pytest
import zmq

eventlet = pytest.importorskip("eventlet")

from nova_rpc_zmq.concurrency import get_handler  # noqa: E402


@pytest.fixture
def ctx():
    context = get_handler("eventlet").context(1)
    yield context
    context.destroy(0)


def pair(ctx, name, hwm=None):
    pull = ctx.socket(zmq.PULL)
    push = ctx.socket(zmq.PUSH)
    for s in (pull, push):
        s.setsockopt(zmq.LINGER, 0)
    if hwm is not None:
        pull.setsockopt(zmq.RCVHWM, hwm)
        push.setsockopt(zmq.SNDHWM, hwm)
    pull.bind("inproc://" + name)
    push.connect("inproc://" + name)
    return push, pull


def test_a_blocked_receive_lets_other_green_threads_run(ctx):
    push, pull = pair(ctx, "wake")
    got = []
    reader = eventlet.spawn(lambda: got.append(pull.recv_multipart()))
    eventlet.sleep(0.05)  # the reader now waits in the hub
    assert got == []
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

    def ticker():
        for _ in range(20):
            ticks.append(1)
            eventlet.sleep(0.01)

    t = eventlet.spawn(ticker)
    started = time.monotonic()
    with pytest.raises(zmq.Again):
        pull.recv_multipart()
    waited = time.monotonic() - started
    t.wait()
    assert 0.08 <= waited < 1.0
    assert len(ticks) >= 5  # the hub kept running other green threads


def test_a_killed_reader_leaves_the_socket_usable(ctx):
    push, pull = pair(ctx, "kill")
    reader = eventlet.spawn(pull.recv_multipart)
    eventlet.sleep(0.02)
    reader.kill()
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
    drained = []

    def drain():
        eventlet.sleep(0.05)
        for _ in range(sent + 1):
            drained.append(pull.recv_multipart())

    d = eventlet.spawn(drain)
    push.send_multipart([b"last"])
    d.wait()
    assert drained[-1] == [b"last"] and len(drained) == sent + 1
