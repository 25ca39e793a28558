"""The receiver's count of connected TCP peers, on /metrics, with CURVE
off and on.

A receiver process of its own (no service, no client of this process
connected to it, so every connection is one the test makes) and plain
pyzmq PUSH peers that connect and go away: ``connections_open`` follows
them, ``connections_closed_total`` counts the ones that went, and
messages still flow. With ``rpc_zmq_curve`` the port's one monitor is the
ZAP authenticator's, which hands the count its connection events: peers
with the host's key are counted like plain ones, and peers refused (a key
the receiver does not list, a wrong server key) are counted as closed and
do not stay open.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import urllib.request
from typing import Iterator

import pytest
import zmq

from nova_rpc_zmq import metrics
from nova_rpc_zmq.testing import LocalHost, free_port
from nova_rpc_zmq.security import KeyPair, configure_client
from tests.support import scaled, wait_for

OPEN = metrics.metric_name("receiver", "connections_open")
CLOSED = metrics.counter_key("receiver", "connections_closed")
REFUSED = metrics.metric_name("receiver", "curve_refused_total")


class Site:
    """A receiver of its own, and how a peer reaches it: ``pair`` is the
    host's key pair (listed in its keys dir) with CURVE on, else None."""

    def __init__(self, host: LocalHost, pair: KeyPair | None) -> None:
        self.host = host
        self.pair = pair
        self.ctx = zmq.Context()
        self.peers: list[zmq.Socket] = []

    def peer(self, client: KeyPair | None = None,
             server_key: bytes | None = None) -> zmq.Socket:
        """A PUSH connected to the receiver; with CURVE on, as ``client``
        (the host's own pair by default) expecting ``server_key`` (the
        receiver's own by default)."""
        sock = self.ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        if self.pair is not None:
            configure_client(sock, client or self.pair,
                             server_key or self.pair.public)
        sock.connect("tcp://127.0.0.1:%d" % self.host.port)
        self.peers.append(sock)
        return sock

    def values(self) -> dict[str, float]:
        url = "http://127.0.0.1:%d/metrics" % self.host.options["rpc_zmq_health_port"]
        with urllib.request.urlopen(url, timeout=scaled(5)) as resp:
            return metrics.parse(resp.read().decode())

    def reads(self, key: str, value: int) -> bool:
        try:
            return self.values().get(key) == value
        except OSError:  # the health page is not up yet
            return False

    def close(self) -> None:
        for sock in self.peers:
            sock.close(0)
        self.ctx.term()


@contextlib.contextmanager
def running(curve: bool) -> Iterator[Site]:
    """A receiver process, with ``rpc_zmq_curve`` as asked, and its peers."""
    base = tempfile.mkdtemp(prefix="nrzc-")
    h = LocalHost(base_dir=base, extra={"rpc_zmq_health_port": free_port()})
    s = Site(h, h.enable_curve() if curve else None)
    try:
        h.start_receiver(scaled(20))
        yield s
    finally:
        s.close()
        h.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=[False, True], ids=["curve_off", "curve_on"])
def site(request: pytest.FixtureRequest) -> Iterator[Site]:
    with running(curve=request.param) as s:
        yield s


@pytest.fixture
def curve_site() -> Iterator[Site]:
    with running(curve=True) as s:
        yield s


@pytest.mark.timeout(120)
def test_connections_open_follows_peers_coming_and_going(site: Site) -> None:
    """Three peers connect: the gauge reads 3; two go: 1, and two closed
    connections are counted; the one left still delivers a message."""
    wait_for(lambda: site.reads(OPEN, 0), 20, what="connections_open = 0")
    pull = site.ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    peers = []
    try:
        for n in (1, 2, 3):
            peers.append(site.peer())
            wait_for(lambda: site.reads(OPEN, n), 10,
                     what="connections_open = %d" % n)
        assert site.values()[CLOSED] == 0
        for n in (2, 1):
            peers.pop().close(0)
            wait_for(lambda: site.reads(OPEN, n), 10,
                     what="connections_open = %d" % n)
        wait_for(lambda: site.reads(CLOSED, 2), 10,
                 what="connections_closed_total = 2")
        # the peer left is served as before
        pull.connect("ipc://" + os.path.join(site.host.ipc_dir, "zmq_topic_still"))
        body = json.dumps(["{}", {"method": "record", "args": {}}]).encode()
        peers[0].send_multipart([b"0", b"still", b"cast", body])
        assert pull.poll(int(scaled(10) * 1000)), "nothing routed"
        assert pull.recv_multipart()[1] == b"still"
    finally:
        for peer in peers:
            peer.close(0)
        pull.close(0)
    wait_for(lambda: site.reads(OPEN, 0), 10, what="connections_open = 0")


@pytest.mark.timeout(120)
def test_refused_peers_are_closed_not_open(curve_site: Site) -> None:
    """With CURVE on, a peer whose key the receiver does not list and a
    peer with a wrong server key (which libzmq retries on its own) are
    each refused, counted as closed and not left open, while they are
    still there; then a peer with the right keys counts as one."""
    site = curve_site
    wait_for(lambda: site.reads(OPEN, 0), 20, what="connections_open = 0")
    unknown = KeyPair(*zmq.curve_keypair())
    site.peer(client=unknown)
    no_key = metrics.sample_key(REFUSED, {"reason": "no_matching_key"})
    wait_for(lambda: site.values().get(no_key, 0) >= 1, 10,
             what="the unknown key refused")
    # libzmq does not retry after a ZAP refusal: one connection, closed
    wait_for(lambda: site.reads(CLOSED, 1) and site.reads(OPEN, 0), 10,
             what="the refused peer closed, connections_open = 0")
    wrong = site.peer(server_key=zmq.curve_keypair()[0])
    bad = metrics.sample_key(REFUSED, {"reason": "bad_handshake"})
    wait_for(lambda: site.values().get(bad, 0) >= 3, 10,
             what="three refused retries of the wrong server key")

    def none_open() -> dict[str, float] | None:
        values = site.values()
        return values if values[OPEN] == 0 else None

    # every retry is a connection that ends: the count must not pile up
    # (between two retries, about 100 ms apart, none is open)
    values = wait_for(none_open, 10, what="connections_open = 0 between retries")
    # each refusal is a closed connection (the last one may be in flight)
    assert values[CLOSED] >= values[bad], values
    wrong.close(0)
    site.peers.remove(wrong)
    wait_for(lambda: site.reads(OPEN, 0), 10, what="connections_open = 0")
    # and the count is still right for a peer that is let in
    good = site.peer()
    wait_for(lambda: site.reads(OPEN, 1), 10, what="connections_open = 1")
    good.close(0)
    site.peers.remove(good)
    wait_for(lambda: site.reads(OPEN, 0), 10, what="connections_open = 0")
