"""multicall against a hand-driven server on raw sockets: the request
leaves at the call (before the first ``next()``), and streamed parts that
take different paths (straight to the caller, or through the receiver)
come out in the order the server produced them, none dropped."""

from __future__ import annotations

import os

import pytest
import zmq

from nova_rpc_zmq import frames as frames_io
from nova_rpc_zmq import impl_zmq, rpc, wire
from nova_rpc_zmq.impl_zmq.replies import caller_mark
from nova_rpc_zmq.testing import LocalHost
from tests.support import scaled, wait_for

TOPIC = "handdriven"


@pytest.fixture(scope="module")
def host():
    h = LocalHost(host="localhost")
    try:
        h.start_receiver()
        rpc.init(h.settings())
        yield h
    finally:
        rpc.cleanup()
        h.stop()


@pytest.fixture
def server(host):
    """A PULL socket where the receiver delivers requests for TOPIC."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    pull.setsockopt(zmq.RCVTIMEO, int(scaled(10) * 1000))
    for name in (TOPIC, wire.directed_topic(TOPIC, "localhost")):
        pull.connect("ipc://" + os.path.join(host.ipc_dir, "zmq_topic_" + name))
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.connect("tcp://127.0.0.1:%d" % host.port)
    direct = ctx.socket(zmq.PUSH)
    direct.setsockopt(zmq.LINGER, 1000)
    yield pull, push, direct
    for sock in (pull, push, direct):
        sock.close()
    ctx.term()


def read_request(pull) -> tuple[str, str, str | None]:
    """(msg_id, reply topic, caller token) of the next call request."""
    while True:
        msg = wire.decode(frames_io.recv(pull))
        if isinstance(msg, wire.Probe):
            continue
        request = wire.parse_call_request(msg.body)
        _stream, token = caller_mark(msg.msg_id)
        return request.msg_id, request.reply_topic, token


def part(msg_id: str, reply_topic: str, value, more: bool, seq: int) -> list[bytes]:
    return wire.encode(msg_id, reply_topic, {},
                       wire.reply_body(msg_id, [value], more, seq))


def test_request_leaves_at_the_call_not_at_first_next(server):
    pull, push, _direct = server
    values = rpc.multicall({}, TOPIC, {"method": "count", "args": {}}, timeout=scaled(10))
    # nothing iterated yet: the server must have the request already
    msg_id, reply_topic, _token = read_request(pull)
    frames_io.send(push, part(msg_id, reply_topic, "only", False, 0))
    assert list(values) == ["only"]


def test_parts_that_overtake_each_other_come_out_in_order(host, server):
    pull, push, direct = server
    values = rpc.multicall({}, TOPIC, {"method": "count", "args": {}}, timeout=scaled(10))
    msg_id, reply_topic, token = read_request(pull)
    assert token, "our caller names its direct reply socket"
    direct.connect("ipc://" + os.path.join(host.ipc_dir, "zmq_direct_" + token))
    # parts 1 and 2 (the last) go straight to the caller and arrive first;
    # part 0 took the receiver's path and arrives after them
    frames_io.send(direct, part(msg_id, reply_topic, 1, True, 1))
    frames_io.send(direct, part(msg_id, reply_topic, 2, False, 2))
    waiting = impl_zmq.get_driver(rpc.get_settings()).replies._waiters[msg_id]
    wait_for(lambda: waiting.qsize() == 2, timeout=10, what="parts 1 and 2 to arrive")
    frames_io.send(push, part(msg_id, reply_topic, 0, True, 0))
    assert list(values) == [0, 1, 2]
