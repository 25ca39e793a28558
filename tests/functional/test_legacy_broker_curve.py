"""The Nova-era broker with CURVE (``rpc_zmq_matchmaker = broker`` and
``rpc_zmq_curve = true``): the hosts and the broker of
``test_legacy_broker.py``, each with its key pair, every keys dir holding
every host's certificate, the broker's as ``<rpc_zmq_broker_ip>.key``.
The legacy API (``rpc.call``, ``cast``, ``fanout_cast``) as Nova-era code
uses it."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest
import zmq

from nova_rpc_zmq import rpc
from nova_rpc_zmq.errors import AuthenticationError, ConfigurationError
from nova_rpc_zmq.security import generate, write_keypair, write_public
from nova_rpc_zmq.testing import scaled, wait_for
from tests.functional.test_legacy_broker import (BROKER_IP, METRIC, SERVERS,
                                                 BrokerCluster, _fanouts,
                                                 whoami)

pytestmark = [pytest.mark.skipif(not zmq.has("curve"),
                                 reason="libzmq without CURVE"),
              pytest.mark.timeout(180)]

REFUSED = 'nova_rpc_zmq_proxy_curve_refused_total{reason="no_matching_key"}'


class CurveBrokerCluster(BrokerCluster):
    """``BrokerCluster`` with CURVE on every host and on the broker; a
    ``stranger`` key pair (``stranger_file``) for the caller's host, which
    the caller's receiver lists (replies come back) and nobody else."""

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        pairs = {host.host: host.enable_curve()
                 for host in self.hosts + [self.broker_host]}
        for host in self.hosts + [self.broker_host]:
            keys_dir = host.options["rpc_zmq_curve_keys_dir"]
            for name, pair in pairs.items():
                write_public(os.path.join(keys_dir, name + ".key"),
                             pair.public, host=name)
        stranger = generate()
        self.stranger_file = str(base / "stranger.pair")
        write_keypair(self.stranger_file, stranger, host=self.hosts[2].host)
        write_public(os.path.join(
            self.hosts[2].options["rpc_zmq_curve_keys_dir"], "stranger.key"),
            stranger.public)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[CurveBrokerCluster]:
    c = CurveBrokerCluster(tmp_path)
    try:
        yield c.start()
    finally:
        c.close()


def test_call_cast_and_fanout_through_a_curve_broker(
        cluster: CurveBrokerCluster) -> None:
    names = sorted(rpc.call({}, "demo", whoami(), timeout=scaled(20))["name"]
                   for _ in range(4))
    assert names == ["s1", "s1", "s2", "s2"]
    rpc.cast({}, "demo", {"method": "announce", "args": {"value": "cast"}})
    wait_for(lambda: sum(_fanouts("cast")) == 1, scaled(20),
             what="the cast through the broker")
    # the receivers' CURVE subscriptions reach the broker's PUB
    deadline = time.monotonic() + scaled(20)
    while min(_fanouts("warm")) == 0 and time.monotonic() < deadline:
        rpc.fanout_cast({}, "demo", {"method": "announce",
                                     "args": {"value": "warm"}})
        time.sleep(0.2)
    assert min(_fanouts("warm")) >= 1
    rpc.fanout_cast({}, "demo", {"method": "announce",
                                 "args": {"value": "all"}})
    wait_for(lambda: _fanouts("all") == [1, 1], scaled(20),
             what="the fanout once on each host")
    values = cluster.metrics()
    assert values["nova_rpc_zmq_proxy_curve_accepted_total"] >= 3, values
    assert values[REFUSED] == 0
    assert values[METRIC % "published"] >= 2


def test_a_caller_whose_key_the_broker_does_not_list_is_refused(
        cluster: CurveBrokerCluster) -> None:
    caller = cluster.hosts[2]
    before = cluster.metrics()[REFUSED]
    rpc.init(caller.settings(rpc_zmq_curve_key_file=cluster.stranger_file,
                             rpc_response_timeout=scaled(20)))
    start = time.monotonic()
    with pytest.raises(AuthenticationError) as caught:
        rpc.call({}, "demo", whoami(), timeout=scaled(20))
    assert time.monotonic() - start < scaled(15)
    assert BROKER_IP in str(caught.value)
    assert "no matching key" in str(caught.value)
    wait_for(lambda: cluster.metrics()[REFUSED] > before, scaled(10),
             what="the refusal counted by the broker")
    # a directed call skips the broker: the servers list no stranger
    # either, and the broker's own keys still reach them
    rpc.init(caller.settings())
    assert rpc.call({}, "demo.%s" % SERVERS[0], whoami(),
                    timeout=scaled(20))["name"] == "s1"
    assert rpc.call({}, "demo", whoami(), timeout=scaled(20))["name"] in \
        ("s1", "s2")


def test_a_caller_without_the_broker_certificate_is_told_the_file(
        cluster: CurveBrokerCluster, tmp_path: Path) -> None:
    caller = cluster.hosts[2]
    keys_dir = tmp_path / "no-broker-cert"
    shutil.copytree(caller.options["rpc_zmq_curve_keys_dir"], keys_dir)
    expected = keys_dir / (BROKER_IP + ".key")
    expected.unlink()
    rpc.init(caller.settings(rpc_zmq_curve_keys_dir=str(keys_dir)))
    with pytest.raises(ConfigurationError) as caught:
        rpc.call({}, "demo", whoami(), timeout=scaled(20))
    assert str(expected) in str(caught.value)
