"""impl_zmq.remote without a network: the port range option, the where
ask and answer, and what a caller does with an answer."""

from __future__ import annotations

import dataclasses
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
    {"rpc_zmq_curve": True},
])
def test_the_direct_path_can_be_off(overrides: dict) -> None:
    assert remote.port_range(settings(**overrides)) is None


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


def make_calls(sent: list) -> remote.RemoteCalls:
    handler = get_handler()
    ctx = zmqio.context(handler)
    return remote.RemoteCalls(
        handler, ctx, settings(), Counters("t"), range(9504, 9550),
        send_receiver=lambda host, frames, topic: sent.append(
            (host, frames, topic)),
        endpoint=lambda host: "tcp://%s:9501" % host, token=TOKEN,
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
        peers.set(("compute.b", "b"), ("inproc://direct-one-part",))
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
