"""Three hosts in network namespaces, each with its own address, receiver
and service, sharing one ring file: routing, fanout and replies across
hosts. Every client runs as a process inside a host's namespace."""

from __future__ import annotations

import collections
import secrets

import pytest

from tests.multihost.netns import NetnsCluster, op
from tests.support import wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster(netns_cluster_factory) -> NetnsCluster:
    return netns_cluster_factory(hosts=3, topic="demo")


def values(outcomes: list[dict]) -> list:
    """The values of a list of client outcomes; fails on any error."""
    errors = [o for o in outcomes if "ok" not in o]
    assert errors == [], errors
    return [o["ok"] for o in outcomes]


def stats_of_all(cluster: NetnsCluster, source: int = 1) -> dict[str, dict]:
    """Each host's service ``stats``, asked from host ``source``."""
    answer = cluster.host(source).client(
        [op("call", "demo_" + h.name, "stats", timeout=10)
         for h in cluster.hosts])
    return {h.name: values(r)[0] for h, r in zip(cluster.hosts,
                                                 answer["results"])}


def test_each_host_runs_in_its_own_namespace(cluster):
    ips = cluster.ips
    assert len(set(ips)) == 3
    assert len({h.netns for h in cluster.hosts}) == 3
    for host in cluster.hosts:
        pids = host.pids()
        assert host.service().pid in pids
        assert host.local.procs[0].pid in pids         # the receiver
        others = [h for h in cluster.hosts if h is not host]
        assert not any(h.service().pid in pids for h in others)


def test_round_robin_spreads_calls_over_all_hosts(cluster):
    answer = cluster.host(1).client([op("call", "demo", "whoami", repeat=30)])
    assert answer["host"] == cluster.host(1).ip
    replies = values(answer["results"][0])
    by_host = collections.Counter(cluster.host_of_pid(r["pid"])
                                  for r in replies)
    assert set(by_host) == {"h1", "h2", "h3"}, by_host
    assert sum(by_host.values()) == 30
    # round robin, not just "somewhere": no host more than one call ahead
    assert max(by_host.values()) - min(by_host.values()) <= 1, by_host
    for reply in replies:
        assert reply["name"] == cluster.host_of_pid(reply["pid"])


def test_fanout_reaches_every_host(cluster):
    before = stats_of_all(cluster)
    count = 20
    # a random first value tells this run's fanouts from earlier ones
    first = secrets.randbelow(10 ** 6) * 100
    answer = cluster.host(1).client([op(
        "fanout_cast", "demo", "announce", repeat=count,
        index_arg="value", offset=first)])
    values(answer["results"][0])           # no error while sending
    expected = list(range(first, first + count))
    seen: dict[str, dict] = {}

    def delivered() -> bool:
        seen.update(stats_of_all(cluster, source=2))
        return all(seen[h]["fanout"] >= before[h]["fanout"] + count
                   for h in seen)
    wait_for(delivered, timeout=30, interval=0.2,
             what="%d fanouts at all three hosts" % count)
    for name, stats in seen.items():
        assert stats["fanout"] == before[name]["fanout"] + count, (name, stats)
        assert stats["values"][-count:] == expected, name


def test_directed_topic_reaches_only_that_host(cluster):
    h2 = cluster.host(2)
    topic = "demo." + h2.ip
    before = stats_of_all(cluster)
    answer = cluster.host(1).client([
        op("call", topic, "whoami", repeat=10),
        op("cast", topic, "record", repeat=15, index_arg="value",
           offset=1000),
    ])
    pids = {r["pid"] for r in values(answer["results"][0])}
    assert pids == {h2.service().pid}
    values(answer["results"][1])
    seen: dict[str, dict] = {}

    def recorded() -> bool:
        seen.update(stats_of_all(cluster))
        return seen["h2"]["record"] >= before["h2"]["record"] + 15
    wait_for(recorded, timeout=30, interval=0.2,
             what="15 directed casts at host 2")
    assert seen["h2"]["record"] == before["h2"]["record"] + 15
    assert seen["h2"]["values"][-15:] == list(range(1000, 1015))
    # the casts, sent well before the last stats, went nowhere else
    for name in ("h1", "h3"):
        assert seen[name]["record"] == before[name]["record"], name


def test_replies_travel_back_across_hosts(cluster):
    h1, h3 = cluster.host(1), cluster.host(3)
    answer = h3.client([
        op("call", "demo." + h1.ip, "whoami", repeat=5),
        op("call", "demo_h1", "echo", args={"value": {"from": "h3"}}),
        op("multicall", "demo." + h1.ip, "count", args={"n": 4}),
    ])
    assert answer["host"] == h3.ip        # the caller's replies go to h3
    assert {r["pid"] for r in values(answer["results"][0])} == {
        h1.service().pid}
    assert values(answer["results"][1]) == [{"from": "h3"}]
    assert values(answer["results"][2]) == [[0, 1, 2, 3]]


def test_call_to_an_unlisted_topic_is_an_error_not_a_hang(cluster):
    answer = cluster.host(2).client([op("call", "nosuch", "whoami",
                                        timeout=5)])
    (outcome,) = answer["results"][0]
    assert outcome.get("error") == "NoHostsError", outcome
