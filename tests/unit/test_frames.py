"""nova_rpc_zmq.frames over real inproc sockets."""

from __future__ import annotations

import pytest
import zmq

from nova_rpc_zmq import frames


@pytest.fixture
def pair():
    ctx = zmq.Context(1)
    pull = ctx.socket(zmq.PULL)
    push = ctx.socket(zmq.PUSH)
    pull.bind("inproc://frames")
    push.connect("inproc://frames")
    yield push, pull
    ctx.destroy(0)


def test_parts_arrive_whole_and_in_order(pair):
    push, pull = pair
    frames.send(push, [b"a", b"", b"c" * 5000], frames.NOBLOCK)
    frames.send(push, [b"single"])
    assert frames.recv(pull) == [b"a", b"", b"c" * 5000]
    assert frames.recv(pull, frames.NOBLOCK) == [b"single"]


def test_nothing_waiting_raises_again(pair):
    _push, pull = pair
    with pytest.raises(zmq.Again):
        frames.recv(pull, frames.NOBLOCK)
    with pytest.raises(zmq.Again):
        frames.recv_first(pull, frames.NOBLOCK)


def test_a_full_queue_refuses_the_whole_message(pair):
    ctx = pair[0].context
    pull = ctx.socket(zmq.PULL)
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 1)
    pull.setsockopt(zmq.RCVHWM, 1)
    pull.bind("inproc://full")
    push.connect("inproc://full")
    sent = 0
    with pytest.raises(zmq.Again):
        for _ in range(100):
            frames.send(push, [b"x", b"y"], frames.NOBLOCK)
            sent += 1
    got = []
    while True:
        try:
            got.append(frames.recv(pull, frames.NOBLOCK))
        except zmq.Again:
            break
    assert got == [[b"x", b"y"]] * sent  # no torn message left behind


def test_recv_rest_keeps_at_most_max_parts_and_drains_the_rest(pair):
    push, pull = pair
    frames.send(push, [b"%d" % i for i in range(10)])
    frames.send(push, [b"next", b"one"])
    first = frames.recv_first(pull)
    parts = [first.bytes]
    assert first.more
    assert frames.recv_rest(pull, parts, 4) == frames.PARTS_TOO_MANY
    assert parts == [b"0", b"1", b"2", b"3"]
    first = frames.recv_first(pull)
    parts = [first.bytes]
    assert frames.recv_rest(pull, parts, 4) == frames.PARTS_OK
    assert parts == [b"next", b"one"]
