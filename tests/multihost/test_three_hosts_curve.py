"""The three-host namespace test with CURVE on: every host has its own key
pair, every receiver allows the three public keys, and routing, fanout
and cross-host replies work as without encryption."""

from __future__ import annotations

import collections
import os
import tempfile

import pytest

from nova_rpc_zmq.security import generate, write_keypair, write_public
from tests.multihost.netns import NetnsCluster, op
from tests.multihost.test_three_hosts import stats_of_all, values
from tests.support import wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster(netns_cluster_factory) -> NetnsCluster:
    keydir = tempfile.mkdtemp(prefix="nrz-curve-")
    public = os.path.join(keydir, "public")

    def options_for(host):
        path = os.path.join(keydir, "%s.secret" % host.name)
        kp = generate()
        write_keypair(path, kp)
        write_public(os.path.join(public, "%s.key" % host.ip), kp.public)
        return {"rpc_zmq_curve": True, "rpc_zmq_curve_key_file": path,
                "rpc_zmq_curve_keys_dir": public}

    return netns_cluster_factory(hosts=3, topic="demo", options_for=options_for)


def test_round_robin_and_replies_across_hosts_with_curve(cluster):
    for host in cluster.hosts:
        assert "rpc_zmq_curve = true" in open(host.conf_path).read()
    answer = cluster.host(3).client([op("call", "demo", "whoami", repeat=30)])
    by_host = collections.Counter(cluster.host_of_pid(r["pid"])
                                  for r in values(answer["results"][0]))
    assert set(by_host) == {"h1", "h2", "h3"}, by_host


def test_fanout_reaches_every_host_with_curve(cluster):
    before = stats_of_all(cluster)
    cluster.host(2).client([op("fanout_cast", "demo", "announce", value="c")])
    wait_for(lambda: all(stats_of_all(cluster)[h]["fanout"] == before[h]["fanout"] + 1
                         for h in before), timeout=20, what="fanout at all hosts")


def test_directed_call_with_curve(cluster):
    ip2 = cluster.host(2).ip
    answer = cluster.host(1).client([op("call", "demo." + ip2, "whoami", repeat=5)])
    assert {cluster.host_of_pid(r["pid"]) for r in values(answer["results"][0])} == {"h2"}
