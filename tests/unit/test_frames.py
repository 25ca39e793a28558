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


# -- one-part messages of the direct path ------------------------------------

MESSAGE = [b"stream.0123456789abcdef", b"compute.b", b"cast", b'["{}", {}]']


def test_a_packed_message_travels_as_one_part_and_unpacks_whole(pair):
    push, pull = pair
    frames.send(push, frames.pack(MESSAGE))
    got = frames.recv(pull)
    assert len(got) == 1
    assert frames.unpack(got) == MESSAGE


def test_what_cannot_be_packed_is_sent_as_parts():
    too_many = [b"x"] * 9
    assert frames.pack(too_many) == too_many
    too_large = [b"a", b"b", b"c", b"x" * (frames.PACK_MAX + 1)]
    assert frames.pack(too_large) == too_large
    # a message of parts is read as it is
    assert frames.unpack(MESSAGE) is MESSAGE


@pytest.mark.parametrize("data", [
    frames.PACKED_MARK,                                  # no count
    frames.PACKED_MARK + b"\x02\x00\x00",                # lengths cut short
    frames.PACKED_MARK + b"\x01\x00\x00\x00\x09abc",     # says 9, holds 3
    frames.PACKED_MARK + b"\x01\x00\x00\x00\x01abc",     # says 1, holds 3
    frames.PACKED_MARK + b"\x00",                        # zero parts
    frames.PACKED_MARK + b"\x09" + b"\x00" * 36,         # more than packed
    b"hello",                                            # not packed at all
])
def test_a_packed_message_that_does_not_add_up_stays_one_part(data):
    from nova_rpc_zmq import wire
    from nova_rpc_zmq.errors import RemoteProtocolError
    assert frames.unpack([data]) == [data]
    # which the wire decoder refuses, as any message of one part
    with pytest.raises(RemoteProtocolError) as caught:
        wire.decode(frames.unpack([data]))
    assert caught.value.reason == "too_few_frames"
