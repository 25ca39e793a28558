"""The receiver's count of connected TCP peers, on /metrics.

A receiver process of its own (no service, no client of this process
connected to it, so every connection is one the test makes) and plain
pyzmq PUSH peers that connect and go away: ``connections_open`` follows
them, ``connections_closed_total`` counts the ones that went, and
messages still flow.
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.request
from typing import Iterator

import pytest
import zmq

from nova_rpc_zmq import metrics
from nova_rpc_zmq.cli.cluster import LocalHost, free_port
from tests.support import scaled, wait_for

OPEN = metrics.metric_name("receiver", "connections_open")
CLOSED = metrics.counter_key("receiver", "connections_closed")


@pytest.fixture
def host() -> Iterator[LocalHost]:
    h = LocalHost(base_dir=tempfile.mkdtemp(prefix="nrzc-"),
                  extra={"rpc_zmq_health_port": free_port()})
    try:
        h.start_receiver(scaled(20))
        yield h
    finally:
        h.stop()


def _values(h: LocalHost) -> dict[str, float]:
    url = "http://127.0.0.1:%d/metrics" % h.options["rpc_zmq_health_port"]
    with urllib.request.urlopen(url, timeout=scaled(5)) as resp:
        return metrics.parse(resp.read().decode())


def _reads(h: LocalHost, key: str, value: int) -> bool:
    try:
        return _values(h).get(key) == value
    except OSError:  # the health page is not up yet
        return False


@pytest.mark.timeout(120)
def test_connections_open_follows_peers_coming_and_going(host: LocalHost) -> None:
    """Three peers connect: the gauge reads 3; two go: 1, and two closed
    connections are counted; the one left still delivers a message."""
    wait_for(lambda: _reads(host, OPEN, 0), 20, what="connections_open = 0")
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    peers = []
    try:
        for n in (1, 2, 3):
            peer = ctx.socket(zmq.PUSH)
            peer.setsockopt(zmq.LINGER, 0)
            peer.connect("tcp://127.0.0.1:%d" % host.port)
            peers.append(peer)
            wait_for(lambda: _reads(host, OPEN, n), 10,
                     what="connections_open = %d" % n)
        assert _values(host)[CLOSED] == 0
        for n in (2, 1):
            peers.pop().close(0)
            wait_for(lambda: _reads(host, OPEN, n), 10,
                     what="connections_open = %d" % n)
        wait_for(lambda: _reads(host, CLOSED, 2), 10,
                 what="connections_closed_total = 2")
        # the peer left is served as before
        pull.connect("ipc://" + os.path.join(host.ipc_dir, "zmq_topic_still"))
        body = json.dumps(["{}", {"method": "record", "args": {}}]).encode()
        peers[0].send_multipart([b"0", b"still", b"cast", body])
        assert pull.poll(int(scaled(10) * 1000)), "nothing routed"
        assert pull.recv_multipart()[1] == b"still"
    finally:
        for peer in peers:
            peer.close(0)
        pull.close(0)
        ctx.term()
    wait_for(lambda: _reads(host, OPEN, 0), 10, what="connections_open = 0")
