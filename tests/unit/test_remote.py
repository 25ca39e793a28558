"""impl_zmq.remote without a network: the port range option, the where
ask and answer, and what a caller does with an answer."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from nova_rpc_zmq import config, wire, zmqio
from nova_rpc_zmq.concurrency import get_handler
from nova_rpc_zmq.impl_zmq import remote
from nova_rpc_zmq.metrics import Counters

TOKEN = "0123456789abcdef"


def settings(**overrides: Any) -> Any:
    config.reset()
    config.CONF([], project="nova")
    base = config.load_settings(config.CONF)
    return dataclasses.replace(base, **overrides)


def test_the_default_range_is_inside_the_reserved_ports() -> None:
    ports = remote.port_range(settings())
    assert ports == range(9504, 9550)
    assert 9501 not in ports and 9503 not in ports


@pytest.mark.parametrize("overrides", [
    {"rpc_zmq_direct_ports": ""},
    {"rpc_zmq_direct_calls": False},
])
def test_the_direct_path_can_be_off(overrides: dict) -> None:
    assert remote.port_range(settings(**overrides)) is None


def test_curve_keeps_the_direct_path() -> None:
    # its sockets are CURVE sockets (tests/functional/test_curve_direct.py)
    assert remote.port_range(settings(rpc_zmq_curve=True)) == range(9504, 9550)


@pytest.mark.parametrize("text", ["x", "9549:9504", "0:10", "9504:70000"])
def test_a_bad_range_names_the_option(text: str) -> None:
    with pytest.raises(ValueError, match="rpc_zmq_direct_ports"):
        remote.port_range(settings(rpc_zmq_direct_ports=text))


def test_an_ask_is_read_back_and_a_bad_one_is_not() -> None:
    assert remote.parse_ask(TOKEN + "where7:9510:host-a.example") == \
        (TOKEN, 7, 9510, "host-a.example")
    for bad in (TOKEN + "probe1", TOKEN.upper() + "where1:1:h",
                TOKEN + "where1:x:h", TOKEN + "where1:1:"):
        assert remote.parse_ask(bad) is None


def make_calls(sent: list, scheme: str = "tcp") -> remote.RemoteCalls:
    handler = get_handler()
    ctx = zmqio.context(handler)
    return remote.RemoteCalls(
        handler, ctx, settings(), Counters("t"), range(9504, 9550),
        send_receiver=lambda host, frames, topic: sent.append(
            (host, frames, topic)),
        endpoint=lambda host: "%s://%s:9501" % (scheme, host), token=TOKEN,
        reply_port=lambda: 9520)


def test_a_caller_asks_once_and_drops_a_port_outside_the_range() -> None:
    sent: list = []
    calls = make_calls(sent)
    try:
        assert not calls.send("compute.b", "b", [b"x"])
        assert not calls.send("compute.b", "b", [b"x"])
        # one round of asks (one per consumer process the receiver hands
        # them to) while it is under way
        assert len(sent) == remote.ASKS
        host, frames, topic = sent[0]
        assert (host, topic, frames[1], frames[2]) == \
            ("b", "compute.b", b"compute.b", wire.STYLE_PROBE)
        token, n, port, asker = remote.parse_ask(frames[0].decode())
        assert (token, port, asker) == (TOKEN, 9520, calls.own_host)
        forged = remote.answer_frames(token, n, 22, asker)
        calls.answered(forged[0].decode())
        assert calls.counters.get("direct.where_bad_port") == 1
        assert "compute.b" not in {k[0] for k in calls._peers.pools}
        # an answer no one asked for (the ask was used up): counted too
        calls.answered(remote.answer_frames(token, n, 9510, asker)[0].decode())
        assert calls.counters.get("direct.where_unknown") == 1
    finally:
        calls.close()
        calls._peers.ctx.term()


def test_the_direct_path_sends_one_part_that_unpacks_to_the_message() -> None:
    import zmq

    from nova_rpc_zmq import frames
    handler = get_handler("threading")
    ctx = zmqio.context(handler, 1)
    pull = zmqio.make_socket(ctx, zmq.PULL, linger=0, rcvtimeo=5000)
    pull.bind("inproc://direct-one-part")  # TCP in tests/functional
    peers = remote._Peers(handler, ctx, Counters(), "direct.calls")
    message = wire.encode(b"stream." + TOKEN.encode(), "compute.b", {},
                          {"method": "echo", "args": {"value": 1}})
    try:
        peers.set(("compute.b", "b"), ("inproc://direct-one-part",), "b",
                  packed=True)
        sent = False
        for _ in range(200):  # the IMMEDIATE socket connects first
            sent = peers.send(("compute.b", "b"), message)
            if sent:
                break
            handler.sleep(0.01)
        assert sent
        got = frames.recv(pull)
        assert len(got) == 1 and got[0].startswith(frames.PACKED_MARK)
        assert frames.unpack(got) == message
        assert wire.decode(frames.unpack(got)).body["method"] == "echo"
    finally:
        peers.close()
        pull.close(0)
        ctx.term()


def test_one_part_only_between_versions_that_unpack() -> None:
    """Our asks say we unpack replies (numbered from PACKED_ASKS); our
    consumers say they unpack calls (``:p``). An earlier version of ours
    does neither and keeps getting messages of parts."""
    sent: list = []
    calls = make_calls(sent, scheme="inproc")  # no connection is made
    try:
        calls.send("compute.b", "b", [b"x"])
        asks = [remote.parse_ask(frames[0].decode()) for _h, frames, _t in sent]
        # ... and that we take direct replies (from DIRECT_ASKS)
        assert all(n >= remote.DIRECT_ASKS for _t, n, _p, _h in asks)
        (_t, n1, _p, host), (_t, n2, _p, _h), (_t, n3, _p, _h) = asks
        # a consumer of this version answers the first ask with ``:d``
        # (one part, and direct calls)
        ours = remote.answer_frames(TOKEN, n1, 9510, host)[0].decode()
        assert ours.endswith(":9510:d")
        calls.answered(ours)
        pools = calls._peers.pools
        assert pools[("compute.b", "b")].packed
        assert pools[("compute.b", "b")].direct_style
        assert calls.takes_direct_calls("compute.b", "b")
        # the previous version (``:p``) on another port: one part still,
        # but the wire's form, which both read
        calls.answered("%swhereis%d:9512:p" % (TOKEN, n3))
        assert pools[("compute.b", "b")].packed
        assert not calls.takes_direct_calls("compute.b", "b")
        # an earlier version answers the next on another port: the socket
        # reaches all, so messages go as parts
        calls.answered("%swhereis%d:9511" % (TOKEN, n2))
        assert not pools[("compute.b", "b")].packed
        assert not calls.takes_direct_calls("compute.b", "b")
        assert not calls.takes_direct_calls("compute.c", "b")
        # an ask numbered as an earlier version numbers them gets no ``:p``
        assert remote.answer_frames(TOKEN, 7, 9510, host)[0].decode() \
            .endswith("whereis7:9510")
        n = remote.PACKED_ASKS + 7
        assert remote.answer_frames(TOKEN, n, 9510, host)[0].decode() \
            .endswith("whereis%d:9510:p" % n)
    finally:
        calls.close()
        calls._peers.ctx.term()


def test_a_service_packs_replies_only_for_a_caller_that_asked_so() -> None:
    handler = get_handler()
    ctx = zmqio.context(handler)
    replies = remote.RemoteReplies(
        handler, ctx, settings(), Counters("t"), range(9504, 9550),
        endpoint=lambda host: "inproc://%s:9501" % host,
        allows=lambda topic: True)
    answers: list = []
    try:
        for token, n in (("0" * 16, 5), ("1" * 16, remote.PACKED_ASKS + 5)):
            ask = "%swhere%d:9520:hosta" % (token, n)
            assert replies.asked(ask, 9530, lambda *a: answers.append(a))
        pools = replies._peers.pools
        assert not pools[("hosta", "0" * 16)].packed
        assert pools[("hosta", "1" * 16)].packed
        assert [a[1][0].decode()[16:] for a in answers] == \
            ["whereis5:9530", "whereis%d:9530:p" % (remote.PACKED_ASKS + 5)]
        # neither of those takes direct replies: they get the wire's parts
        assert not replies.takes_direct_replies("zmq_replies.hosta", "0" * 16)
        assert not replies.takes_direct_replies("zmq_replies.hosta", "1" * 16)
        ask = "%swhere%d:9521:hosta" % ("2" * 16, remote.DIRECT_ASKS)
        assert replies.asked(ask, 9530, lambda *a: answers.append(a))
        assert pools[("hosta", "2" * 16)].packed
        assert replies.takes_direct_replies("zmq_replies.hosta", "2" * 16)
        assert answers[-1][1][0].decode().endswith(":9530:d")
        # a caller with no port here, or a topic that is not a reply topic
        assert not replies.takes_direct_replies("zmq_replies.hostb", "2" * 16)
        assert not replies.takes_direct_replies("compute.hosta", "2" * 16)
    finally:
        replies.close()
        ctx.term()


def test_sockets_only_a_burst_needed_are_closed_after_a_quiet_period(
        monkeypatch: Any) -> None:
    """A burst of overlapping sends leaves extra sockets on a peer's
    stack; each TRIM_EVERY in which no send took them closes half of
    them (at least one), down to the one the sends use; nothing lost."""
    import zmq

    from nova_rpc_zmq import frames
    monkeypatch.setattr(remote, "TRIM_EVERY", 0.3)
    handler = get_handler("threading")
    ctx = zmqio.context(handler, 1)
    pull = zmqio.make_socket(ctx, zmq.PULL, linger=0, rcvtimeo=5000)
    pull.bind("inproc://direct-trim")
    counters = Counters()
    peers = remote._Peers(handler, ctx, counters, "direct.calls")
    key = ("compute.b", "b")
    message = wire.encode(b"stream." + TOKEN.encode(), "compute.b", {},
                          {"method": "echo", "args": {}})
    try:
        peers.set(key, ("inproc://direct-trim",), "b")
        pool = peers.pools[key]
        # four sends in flight at once: three more sockets, connected
        burst = [peers._socket(pool) for _ in range(3)]
        pool.made += len(burst)
        pool.idle[:0] = burst
        sent = 0
        end = time.monotonic() + 5.0
        # one send at a time, past the trims (~0.3 s apart): 3 unused
        # sockets -> 2 closed, then the last unused one
        trims = []
        while time.monotonic() < end and \
                counters.get("direct.calls.sockets_trimmed") < 3:
            if peers.send(key, message):
                sent += 1
            trimmed = counters.get("direct.calls.sockets_trimmed")
            if trimmed and (not trims or trims[-1] != trimmed):
                trims.append(trimmed)
            handler.sleep(0.005)
        assert trims == [2, 3]
        assert len(pool.idle) == 1 and pool.made == 1
        assert all(sock.closed for sock in burst)
        # the kept socket is the one the sends were using
        assert peers.send(key, message)
        sent += 1
        got = 0
        while got < sent:
            frames.recv(pull)
            got += 1
        with pytest.raises(zmq.Again):
            frames.recv(pull, zmq.NOBLOCK)
    finally:
        peers.close()
        pull.close(0)
        ctx.term()
