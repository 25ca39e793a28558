"""``ZapAuthenticator.watch_server(sock, on_connection=...)``: the one
monitor of a CURVE server socket counts refusals and hands its connection
events over, with real CURVE peers.

A peer let in is one ``ACCEPTED``, then one ``DISCONNECTED`` when it goes;
a refused one (a key not listed, no CURVE) is both at once, while it is
still there; and the refusals are still counted as before. A callback that
raises is logged and the authenticator goes on.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

import pytest
import zmq

from nova_rpc_zmq.security import (AllowList, KeyPair, ZapAuthenticator,
                                   configure_client, configure_server, keys)
from tests.support import scaled, wait_for

pytestmark = [pytest.mark.skipif(not zmq.has("curve"),
                                 reason="libzmq without CURVE"),
              pytest.mark.timeout(60)]

ACCEPTED, DISCONNECTED = zmq.EVENT_ACCEPTED, zmq.EVENT_DISCONNECTED


class Server:
    """A CURVE PULL behind a ZapAuthenticator that lists ``client``; its
    monitor hands connection events to ``on_connection`` (by default
    ``events``), and PUSH peers of its own context."""

    def __init__(self, keys_dir: Any, on_connection: Any = None) -> None:
        self.pair = KeyPair(*zmq.curve_keypair())
        self.client = keys.generate()
        keys.write_public(str(keys_dir / "hosta.key"), self.client.public,
                          host="hosta")
        self.events: list[int] = []
        self.ctx = zmq.Context()
        self.auth = ZapAuthenticator(self.ctx, AllowList(str(keys_dir)))
        self.auth.start()
        self.sock = self.ctx.socket(zmq.PULL)
        self.sock.linger = 0
        configure_server(self.sock, self.pair)
        self.auth.watch_server(self.sock,
                               on_connection=on_connection or self.events.append)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.peers: list[zmq.Socket] = []

    def peer(self, client: KeyPair | None) -> zmq.Socket:
        """A PUSH to the server, as ``client`` (None: without CURVE)."""
        sock = self.ctx.socket(zmq.PUSH)
        sock.linger = 0
        if client is not None:
            configure_client(sock, client, self.pair.public)
        sock.connect("tcp://127.0.0.1:%d" % self.port)
        self.peers.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.peers:
            sock.close(0)
        self.sock.close(0)
        self.auth.stop()
        self.ctx.term()


@pytest.fixture
def server(tmp_path: Any) -> Iterator[Server]:
    s = Server(tmp_path / "keys")
    yield s
    s.close()


def test_connection_events_of_peers_let_in_and_refused(server: Server) -> None:
    listed = server.peer(server.client)
    listed.send(b"hello")
    assert server.sock.poll(int(scaled(5) * 1000)), "the listed peer let in"
    assert server.sock.recv() == b"hello"
    wait_for(lambda: server.events == [ACCEPTED], 5, what="one ACCEPTED")
    server.peer(keys.generate())  # a key hostb does not list
    wait_for(lambda: server.auth.refused.get("no matching key") == 1, 10,
             what="the unknown key refused")
    wait_for(lambda: server.events == [ACCEPTED, ACCEPTED, DISCONNECTED], 5,
             what="the refused peer accepted then closed")
    server.peer(None)  # no CURVE: refused at the greeting, before ZAP
    wait_for(lambda: len(server.events) >= 5, 10,
             what="the plaintext peer accepted then closed")
    assert server.events[3:5] == [ACCEPTED, DISCONNECTED], server.events
    assert set(server.auth.refused) - {"no matching key"} <= {
        "mechanism mismatch", "handshake aborted"}, server.auth.refused
    listed.close(0)
    server.peers.remove(listed)

    def balanced() -> bool:
        # the plaintext peer retries on its own: every try ends closed
        events = list(server.events)
        return events.count(ACCEPTED) == events.count(DISCONNECTED)

    wait_for(balanced, 10, what="as many closed as accepted")
    assert server.auth.accepted == 1


def test_a_failing_callback_is_logged_and_the_loop_goes_on(
        tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="nova_rpc_zmq.security.zap")
    calls: list[int] = []

    def broken(event: int) -> None:
        calls.append(event)
        raise RuntimeError("count broken")

    server = Server(tmp_path / "keys", on_connection=broken)
    try:
        for n in (1, 2):
            peer = server.peer(server.client)
            peer.send(b"%d" % n)
            assert server.sock.poll(int(scaled(5) * 1000)), "peer %d let in" % n
            assert server.sock.recv() == b"%d" % n
            peer.close(0)
            server.peers.remove(peer)
        # (the second peer may be taken before the first one's close is seen)
        wait_for(lambda: sorted(calls) == sorted([ACCEPTED, DISCONNECTED] * 2),
                 10, what="every event handed over despite the failures")
        assert server.auth.running
        failed = [r for r in caplog.records
                  if "on_connection callback failed" in r.getMessage()]
        assert len(failed) == 4, [r.getMessage() for r in caplog.records]
    finally:
        server.close()
