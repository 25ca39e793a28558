"""One-part messages on static direct connections (``sockets.py``,
"One-part messages"): callers announce in their call ids that they
unpack, servers pack their replies to them, callers pack toward servers
whose replies came packed; peers of earlier versions (played here by raw
pyzmq sockets speaking the wire format) keep getting messages of parts;
a bad one-part message is dropped and counted."""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

import oslo_messaging
import pytest
import zmq

from nova_rpc_zmq import frames, wire
from nova_rpc_zmq.oslo_driver import registry
from nova_rpc_zmq.oslo_driver.driver import rpc_key
from nova_rpc_zmq.oslo_driver.sockets import UNPACKS_MARK
from nova_rpc_zmq.testing import scaled, wait_for
from tests.oslo.omsupport import Endpoint

EXCHANGE = "openstack"
REQUEST = {"method": "echo", "args": {"value": 5}, "namespace": None,
           "version": "1.0"}


def client(transport: Any, topic: str, server: str,
           timeout: float = 10) -> Any:
    return oslo_messaging.get_rpc_client(
        transport, oslo_messaging.Target(topic=topic, server=server),
        timeout=scaled(timeout))


@contextlib.contextmanager
def serving(transport: Any, topic: str, server: str) -> Iterator[Any]:
    """An RPCServer on ``topic``/``server``; yields its listener."""
    rpc_server = oslo_messaging.get_rpc_server(
        transport, oslo_messaging.Target(topic=topic, server=server),
        [Endpoint(server)], executor="threading")
    rpc_server.start()
    try:
        yield rpc_server.listener._inbox
    finally:
        rpc_server.stop()
        rpc_server.wait()


def member_of(topic: str, server: str) -> str:
    [member] = registry.DirectoryRegistry().members(
        rpc_key(EXCHANGE, topic, server))
    return member


class FakeServer:
    """A server of ``topic``/``server`` on raw pyzmq: it records how each
    request came (number of parts) and answers ``echo`` with a reply of
    parts, or of one part when ``pack_replies`` and the call id says that
    the caller unpacks. With ``drop_packed`` it drops one-part requests
    unread, as earlier versions of the driver do (their decoder refuses
    them)."""

    def __init__(self, topic: str, server: str, pack_replies: bool) -> None:
        self.pack_replies = pack_replies
        self.drop_packed = False
        self.requests: list[tuple[int, str]] = []  # (parts, msg_id)
        self._ctx = zmq.Context()
        self._pull = self._ctx.socket(zmq.PULL)
        self._pull.linger = 0
        port = self._pull.bind_to_random_port("tcp://127.0.0.1")
        self._pushes: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self.member = "127.0.0.1:%d" % port
        self.key = rpc_key(EXCHANGE, topic, server)
        registry.DirectoryRegistry().register(self.key, self.member, 60)

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._pull, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(50):
                continue
            parts = self._pull.recv_multipart()
            if len(parts) == 1 and self.drop_packed:
                self.requests.append((1, "dropped"))
                continue
            msg = wire.decode(frames.unpack(parts))
            request = msg.call
            self.requests.append((len(parts), request.msg_id))
            reply_to = request.reply_topic[len(wire.REPLIES_PREFIX) + 1:]
            answer = wire.encode(
                request.msg_id, wire.reply_topic(reply_to), {},
                wire.reply_body(request.msg_id,
                                [request.msg["args"]["value"]]), True)
            if self.pack_replies and \
                    request.msg_id.startswith(UNPACKS_MARK):
                answer = frames.pack(answer)
            push = self._pushes.get(reply_to)
            if push is None:
                push = self._pushes[reply_to] = self._ctx.socket(zmq.PUSH)
                push.linger = 0
                push.connect("tcp://%s" % reply_to)
            push.send_multipart(answer)

    def close(self) -> None:
        registry.DirectoryRegistry().unregister(self.key, self.member)
        self._stop.set()
        self._thread.join(scaled(5))
        for sock in [self._pull, *self._pushes.values()]:
            sock.close(0)
        self._ctx.term()


@pytest.fixture
def fake_server() -> Iterator[Any]:
    """``make(topic, server, pack_replies)`` -> a running FakeServer,
    closed after the test."""
    made: list[FakeServer] = []

    def make(topic: str, server: str, pack_replies: bool) -> FakeServer:
        fake = FakeServer(topic, server, pack_replies)
        made.append(fake)
        return fake

    yield make
    for fake in made:
        fake.close()


def test_packed_calls_round_trip_through_oslo_messaging(
        transport_factory: Any) -> None:
    server_side = transport_factory("zmq://")
    caller_side = transport_factory("zmq://")
    with serving(server_side, "packed", "s1") as listener:
        rpc = client(caller_side, "packed", "s1")
        member = member_of("packed", "s1")
        assert rpc.call({}, "echo", value={"a": [1, 2.5, "x"]}) == \
            {"a": [1, 2.5, "x"]}
        out = caller_side._driver._direct
        # the reply came as one part: the server unpacks, so from now on
        # the requests go to it as one part
        assert out.unpacks(member)
        for n in range(20):
            assert rpc.call({"user": "u%d" % n}, "context_value",
                            key="user") == "u%d" % n
        # too large to pack: parts both ways, and the next one packed again
        big = "x" * (frames.PACK_MAX + 1)
        assert rpc.call({}, "echo", value=big) == big
        assert rpc.call({}, "echo", value=7) == 7
        with pytest.raises(ValueError, match="bad value"):
            rpc.call({}, "boom", text="bad value")
        assert rpc.call({}, "whoami") == "s1"
        assert out.unpacks(member)
        rpc.cast({}, "record", value="packed cast")
        assert rpc.call({}, "echo", value=8) == 8
        assert listener.dropped == {}


@pytest.mark.parametrize("pack_replies, sizes", [
    (False, [8] * 5),            # an earlier version: never packed replies
    (True, [8, 1, 1, 1, 1]),     # this version: one part once it answered
])
def test_a_caller_packs_only_toward_a_server_that_answered_packed(
        transport_factory: Any, fake_server: Any, pack_replies: bool,
        sizes: list) -> None:
    fake = fake_server("peer", "s1", pack_replies=pack_replies)
    rpc = client(transport_factory("zmq://"), "peer", "s1")
    for n in range(5):
        assert rpc.call({}, "echo", value=n) == n
    assert [parts for parts, _ in fake.requests] == sizes
    # every call said that the caller unpacks
    assert all(msg_id.startswith(UNPACKS_MARK) for _, msg_id in fake.requests)


def test_a_call_that_times_out_sends_parts_again(
        transport_factory: Any, fake_server: Any) -> None:
    # a server at the same address that no longer unpacks (an earlier
    # version started there): one call is lost, then parts go again
    fake = fake_server("downgraded", "s1", pack_replies=True)
    transport = transport_factory("zmq://")
    rpc = client(transport, "downgraded", "s1")
    assert rpc.call({}, "echo", value=1) == 1
    fake.pack_replies, fake.drop_packed = False, True
    with pytest.raises(oslo_messaging.MessagingTimeout):
        client(transport, "downgraded", "s1", timeout=1).call(
            {}, "echo", value=2)
    assert rpc.call({}, "echo", value=3) == 3
    assert rpc.call({}, "echo", value=4) == 4
    assert [parts for parts, _ in fake.requests] == [8, 1, 8, 8]


class RawCaller:
    """A caller on raw pyzmq: a PULL for replies, a PUSH to ``member``."""

    def __init__(self, member: str) -> None:
        self._ctx = zmq.Context()
        self.pull = self._ctx.socket(zmq.PULL)
        self.pull.linger = 0
        self.pull.rcvtimeo = int(scaled(10) * 1000)
        port = self.pull.bind_to_random_port("tcp://127.0.0.1")
        self.reply_topic = wire.reply_topic("127.0.0.1:%d" % port)
        self.push = self._ctx.socket(zmq.PUSH)
        self.push.linger = 0
        self.push.connect("tcp://%s" % member)

    def request(self, msg_id: str, topic: str, value: Any) -> list[bytes]:
        body = wire.call_request(msg_id, self.reply_topic, {},
                                 dict(REQUEST, args={"value": value}))
        return wire.encode(msg_id, topic, {}, body, True)

    def reply(self) -> tuple[int, Any]:
        """(number of parts, the reply's response) of the next reply."""
        parts = self.pull.recv_multipart()
        return len(parts), wire.decode(frames.unpack(parts)).reply.response

    def close(self) -> None:
        self.pull.close(0)
        self.push.close(0)
        self._ctx.term()


def test_the_server_packs_replies_only_to_callers_that_unpack(
        transport_factory: Any) -> None:
    with serving(transport_factory("zmq://"), "answers", "s1"):
        raw = RawCaller(member_of("answers", "s1"))
        try:
            topic = wire.directed_topic("answers", "s1")
            # an earlier version's caller: hex ids, replies of parts
            raw.push.send_multipart(raw.request("0af3", topic, 1))
            assert raw.reply() == (8, [1])
            # a caller that unpacks: one part
            marked = UNPACKS_MARK + "0af4"
            raw.push.send_multipart(raw.request(marked, topic, 2))
            assert raw.reply() == (1, [2])
            # a one-part request is taken as well
            raw.push.send_multipart(frames.pack(raw.request("0af5", topic,
                                                            3)))
            assert raw.reply() == (8, [3])
        finally:
            raw.close()


def test_a_bad_one_part_message_is_dropped_and_counted(
        transport_factory: Any) -> None:
    transport = transport_factory("zmq://")
    with serving(transport, "hostile", "s1") as listener:
        rpc = client(transport, "hostile", "s1")
        assert rpc.call({}, "echo", value=1) == 1
        raw = RawCaller(member_of("hostile", "s1"))
        try:
            good = frames.pack(raw.request("0b01", wire.directed_topic(
                "hostile", "s1"), 9))[0]
            # lengths that do not add up (short, long), a mark alone, a
            # count of parts no message has
            for bad in (good[:-1], good + b"x", frames.PACKED_MARK,
                        frames.PACKED_MARK + b"\x09" + good[6:]):
                raw.push.send(bad)
            wait_for(lambda: sum(listener.dropped.values()) == 4, 10,
                     what="four bad messages counted")
            # the reader goes on
            assert rpc.call({}, "echo", value=2) == 2
            raw.push.send(good)
            assert raw.reply() == (8, [9])
        finally:
            raw.close()
        # the caller's reply socket drops and counts its bad ones too
        replies = transport._driver._replies
        raw = RawCaller(replies.member)
        try:
            raw.push.send(frames.PACKED_MARK + b"\x02\x00")
            wait_for(lambda: rpc.call({}, "echo", value=3) == 3 and
                     sum(replies.dropped.values()) == 1, 10,
                     what="the bad reply counted")
        finally:
            raw.close()
