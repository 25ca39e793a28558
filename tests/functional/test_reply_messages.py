"""How many reply messages a call costs on the wire.

A caller of ours accepts streamed replies (frame 0 ``stream.<token>``), and
a server streams each value as its method produces it. A plain method
returns one value: that value and the end of the stream travel as one
message, not as a value and then an empty end. Each message is a wake-up
of the caller's reply reader and of the caller's thread, so a second one
costs every call about a third more of its CPU. A generator still sends
each value at once, and its end apart.

The caller here is driven by hand on raw sockets, so the messages can be
counted: it binds the direct reply socket its token names and sends the
request through the receiver; the service is the real driver.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Iterator

import pytest
import zmq

from nova_rpc_zmq import frames as frames_io
from nova_rpc_zmq import rpc, wire
from nova_rpc_zmq.rpc import dispatcher
from nova_rpc_zmq.ipcdir import direct_reply_path
from nova_rpc_zmq.testing import LocalHost
from tests.support import scaled

TOPIC = "replycount"


class Service:
    def echo(self, context: Any, value: Any = None) -> Any:
        return value

    def nothing(self, context: Any) -> None:
        return None

    def three(self, context: Any) -> Iterator[int]:
        yield from (1, 2, 3)

    def fail(self, context: Any) -> None:
        raise ValueError("no")


@pytest.fixture(scope="module")
def host():
    h = LocalHost(host="localhost")
    conn = None
    try:
        h.start_receiver()
        rpc.init(h.settings())
        conn = rpc.create_connection(new=True)
        conn.create_consumer(TOPIC, dispatcher.RpcDispatcher([Service()]))
        conn.consume_in_thread()
        yield h
    finally:
        if conn is not None:
            conn.close()
        rpc.cleanup()
        h.stop()


@pytest.fixture
def caller(host):
    """(send(method, **args) -> msg_id, replies(msg_id) -> list of
    (response, more)) of a hand-driven caller of ours."""
    token = uuid.uuid4().hex[:16]
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    pull.bind("ipc://" + direct_reply_path(host.ipc_dir, token))
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.connect("tcp://127.0.0.1:%d" % host.port)
    mark = wire.CALLER_STREAMS + b"." + token.encode()
    reply_topic = wire.reply_topic("localhost")
    ids = iter(range(1, 1000))

    def send(method: str, **args: Any) -> str:
        msg_id = "%s%016x" % (token, next(ids))
        body = wire.call_request(msg_id, reply_topic, {},
                                 {"method": method, "args": args})
        frames_io.send(push, wire.encode(mark, TOPIC, {}, body))
        return msg_id

    def replies(msg_id: str) -> list[tuple[list, Any]]:
        """Every reply part of ``msg_id`` until the last, then whatever
        else comes within half a second (nothing should)."""
        got: list[tuple[list, Any]] = []
        deadline = time.monotonic() + scaled(20)
        settle_until = None
        while time.monotonic() < (settle_until or deadline):
            if not pull.poll(100):
                continue
            msg = wire.decode(frames_io.recv(pull))
            reply = msg.reply
            assert reply is not None and reply.msg_id == msg_id, msg
            got.append((reply.response, reply.more))
            if not reply.more and settle_until is None:
                settle_until = time.monotonic() + 0.5
        return got

    yield send, replies
    pull.close()
    push.close()
    ctx.term()


def test_a_plain_return_value_and_the_end_are_one_message(caller):
    send, replies = caller
    assert replies(send("echo", value=7)) == [([7], False)]


def test_a_method_that_returns_none_answers_in_one_message(caller):
    send, replies = caller
    assert replies(send("nothing")) == [([None], False)]


def test_a_generator_streams_each_value_then_its_end(caller):
    send, replies = caller
    assert replies(send("three")) == [([1], True), ([2], True), ([3], True),
                                      ([], False)]


def test_a_failure_ends_the_stream_in_one_message(caller):
    send, replies = caller
    got = replies(send("fail"))
    assert len(got) == 1, got
    response, more = got[0]
    assert more is False
    assert "ValueError" in response[0][wire.EXC_KEY]


def test_the_api_still_returns_each_kind(host):
    assert rpc.call({}, TOPIC, {"method": "echo", "args": {"value": 5}},
                    timeout=scaled(10)) == 5
    assert list(rpc.multicall({}, TOPIC, {"method": "three", "args": {}},
                              timeout=scaled(10))) == [1, 2, 3]
    assert rpc.call({}, TOPIC, {"method": "nothing", "args": {}},
                    timeout=scaled(10)) is None
