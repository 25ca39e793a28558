"""A direct-path pool (``impl_zmq/remote.py``) on real TCP sockets:
what a send that finds no connected socket means for the peer."""

from __future__ import annotations

import pytest
import zmq

from nova_rpc_zmq import frames, wire, zmqio
from nova_rpc_zmq.concurrency import get_handler
from nova_rpc_zmq.impl_zmq import remote
from nova_rpc_zmq.metrics import Counters
from nova_rpc_zmq.testing import free_port
from tests.unit.test_remote import TOKEN, settings


def test_a_socket_made_for_a_burst_does_not_make_the_caller_forget_the_peer(
        ) -> None:
    """A send that finds every socket of the pool busy makes another,
    which is not connected yet, so that send takes the receivers' path.
    That says nothing of the peer: the pool (and the calls queued on its
    other sockets) must stay, however old it is."""
    handler = get_handler("threading")
    ctx = zmqio.context(handler, 1)
    port = free_port("127.0.0.1")
    pull = zmqio.make_socket(ctx, zmq.PULL, linger=0, rcvtimeo=5000)
    pull.bind("tcp://127.0.0.1:%d" % port)
    sent: list = []
    calls = remote.RemoteCalls(
        handler, ctx, settings(), Counters("t"), range(port, port + 1),
        send_receiver=lambda host, f, topic: sent.append(f),
        endpoint=lambda host: "tcp://127.0.0.1:9501", token=TOKEN,
        reply_port=lambda: 0)
    key = ("compute.b", "b")
    busy: list = []  # sockets taken out of the pool by the test

    def call(value: int) -> list:
        return wire.encode(b"stream." + TOKEN.encode(), "compute.b", {},
                           {"method": "echo", "args": {"value": value}})
    try:
        assert not calls.send("compute.b", "b", call(0))  # asks
        n = remote.parse_ask(sent[0][0].decode())[1]
        calls.answered("%swhereis%d:%d:p" % (TOKEN, n, port))
        pool = calls._peers.pools[key]
        for _ in range(500):  # the first socket connects
            if calls.send("compute.b", "b", call(1)):
                break
            handler.sleep(0.01)
        assert wire.decode(frames.unpack(frames.recv(pull))).body["args"] \
            == {"value": 1}
        pool.born -= 10 * remote.STALE_AFTER
        counters = calls.counters
        for _ in range(20):
            # every socket is busy (other threads send on them): this
            # send makes one more, which has not connected yet unless
            # the machine stalled between its connect and its send
            busy.extend(pool.idle)
            pool.idle.clear()
            before = counters.get("direct.calls.unready")
            calls.send("compute.b", "b", call(2))
            if counters.get("direct.calls.unready") > before:
                break
        else:
            pytest.fail("each new socket was connected before its send")
        assert calls._peers.pools.get(key) is pool and not pool.closed
        frames.send(busy[0], frames.pack(call(3)), frames.NOBLOCK)
        pool.idle.extend(busy)
        for _ in range(25):  # calls of value 2 that went, then ours
            got = wire.decode(frames.unpack(frames.recv(pull)))
            if got.body["args"] == {"value": 3}:
                break
        assert got.body["args"] == {"value": 3}
    finally:
        for sock in busy:
            sock.close(0)  # one the pool does not hold would keep ctx up
        calls.close()
        pull.close(0)
        assert zmqio.term_context(ctx, handler, 10.0)
