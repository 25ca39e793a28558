"""Every topology across network namespaces: three service hosts (h1-h3)
and two proxy hosts (h4, h5) behind one bridge, Redis in the switch.

The oslo.messaging driver: static direct, router proxy (two proxies),
PUB/SUB (two proxies with publishers) and dynamic connections + PUB/SUB,
each under the threading and the eventlet executor: calls (round robin
and directed), casts, fanout, notifications; a proxy killed with SIGKILL
mid-traffic; the eight combinations of the topology flags. The Nova-era
API with its broker, under green and native threads. Every process is
started from its command line inside its host's namespace.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import time
from typing import Any, Callable, Iterator

import pytest

from nova_rpc_zmq.testing import Proc, scaled, wait_for
from tests.multihost.netns import NetnsCluster, NetnsHost, op

pytestmark = pytest.mark.slow

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "om_netns.py")
SERVICES = ("h1", "h2", "h3")
#: [oslo_messaging_zmq] flags of each topology, and whether its proxies
#: run a publisher (None: no proxy).
TOPOLOGIES: dict[str, tuple[dict[str, bool], bool | None]] = {
    "direct": ({}, None),
    "router": ({"use_router_proxy": True}, False),
    "pubsub": ({"use_router_proxy": True, "use_pub_sub": True}, True),
    # the same, the services subscribed on a local publisher in h3 (fed
    # by both central publishers) instead of the central ones
    "pubsub_local": ({"use_router_proxy": True, "use_pub_sub": True}, True),
    "dynamic_pubsub": ({"use_pub_sub": True,
                        "use_dynamic_connections": True}, True),
}
HEALTH_PORT = 9700
#: The local publisher's port (``pubsub_local``).
LOCAL_PORT = 9710
_runs = itertools.count(1)


def proxy_argv() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable),
                          "nova-rpc-zmq-proxy")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "nova_rpc_zmq.cli.proxy"]


def zmq_args(flags: dict[str, Any]) -> list[str]:
    """``--zmq NAME=VALUE`` arguments of om_netns.py for ``flags``."""
    return [arg for name, value in flags.items()
            for arg in ("--zmq", "%s=%s" % (
                name, str(value).lower() if isinstance(value, bool)
                else value))]


@pytest.fixture(scope="module")
def cluster(netns_cluster_factory: Callable[..., NetnsCluster]
            ) -> NetnsCluster:
    """Five hosts, no legacy services: h1-h3 serve, h4 and h5 proxy."""
    return netns_cluster_factory(hosts=5, start_services=False)


class Deployment:
    """The processes of one run: a Redis in the switch, proxies, services;
    all stopped by ``close``."""

    def __init__(self, cluster: NetnsCluster) -> None:
        self.cluster = cluster
        self.run = next(_runs)
        self.dir = os.path.join(cluster.dir, "run%d" % self.run)
        os.makedirs(self.dir)
        self.procs: list[Proc] = []
        port = 6380 + self.run
        self.redis = cluster.spawn_in_switch("redis%d" % self.run, [
            "redis-server", "--bind", cluster.switch_ip, "--port", str(port),
            "--save", "", "--appendonly", "no", "--protected-mode", "no"])
        self.procs.append(self.redis)
        self.redis.wait_for_line("Ready to accept connections", scaled(20))
        self.url = "zmq+redis://%s:%d" % (cluster.switch_ip, port)

    def _proxy_conf(self, host: NetnsHost, publisher: bool) -> str:
        conf = os.path.join(self.dir, "proxy-%s.conf" % host.name)
        with open(conf, "w") as f:
            f.write("[DEFAULT]\ntransport_url = %s\n[oslo_messaging_zmq]\n"
                    "use_pub_sub = %s\nzmq_target_expire = 60\n"
                    "zmq_target_update = 20\n"
                    % (self.url, str(publisher).lower()))
        return conf

    def proxy(self, host: NetnsHost, publisher: bool, *extra: str) -> Proc:
        """A router proxy (with a publisher) in ``host``, once it forwards."""
        proc = host.spawn("proxy%d" % self.run, proxy_argv() + [
            "--config-file", self._proxy_conf(host, publisher), "--host",
            host.ip, "--health-port", str(HEALTH_PORT), *extra])
        self.procs.append(proc)
        proc.wait_for_line("forwarding", scaled(30))
        return proc

    def local_publisher(self, host: NetnsHost) -> Proc:
        """A local publisher in ``host`` on LOCAL_PORT, fed by the central
        publishers, once it publishes."""
        proc = host.spawn("local%d" % self.run, proxy_argv() + [
            "--local-publisher", "--config-file",
            self._proxy_conf(host, True), "--host", host.ip,
            "--publisher-port", str(LOCAL_PORT), "--health-port",
            str(HEALTH_PORT)])
        self.procs.append(proc)
        proc.wait_for_line("publishing", scaled(30))
        return proc

    def metrics(self, host: NetnsHost, of: NetnsHost) -> dict[str, float]:
        """The /metrics of the proxy in ``of``, read from ``host``."""
        return json.loads(self.script(host, "metrics", "http://%s:%d/metrics"
                                      % (of.ip, HEALTH_PORT)))

    def service(self, host: NetnsHost, topic: str, flags: dict[str, Any],
                eventlet: bool, pools: list[str]) -> Proc:
        argv = [sys.executable, SCRIPT, "serve", self.url, host.ip, host.name,
                self.dir, "--topic", topic, *zmq_args(flags)]
        argv += [arg for pool in pools for arg in ("--pool", pool)]
        if eventlet:
            argv.append("--eventlet")
        proc = host.spawn("om%d-%d" % (self.run, len(self.procs)), argv)
        self.procs.append(proc)
        proc.wait_for_line("READY %d" % proc.pid, scaled(40))
        handler = "eventlet" if eventlet else "threading"
        assert "READY %d %s" % (proc.pid, handler) in proc.output()
        return proc

    def script(self, host: NetnsHost, *args: str, timeout: float = 60
               ) -> str:
        """Run om_netns.py ARGS in ``host``; its last output line."""
        out = host.run_script(SCRIPT, *args, timeout=timeout)
        assert out.returncode == 0, "%s\n%s" % (out.stderr[-3000:],
                                                self.logs())
        return out.stdout.strip().splitlines()[-1]

    def records(self, prefix: str = "") -> dict[str, list[str]]:
        """What each service recorded, values starting with ``prefix``."""
        got: dict[str, list[str]] = {}
        for entry in os.listdir(self.dir):
            path = os.path.join(self.dir, entry)
            if not os.path.isfile(path) or "." not in entry or \
                    entry.endswith(".conf"):
                continue
            with open(path) as f:
                value = f.read()
            if value.startswith(prefix):
                got.setdefault(entry.rsplit(".", 1)[0], []).append(value)
        return got

    def notified(self) -> dict[str, list[int]]:
        """The notifications each ``<host>.<pool>`` got (their ``n``)."""
        where = os.path.join(self.dir, "notified")
        got: dict[str, list[int]] = {}
        for entry in os.listdir(where) if os.path.isdir(where) else []:
            with open(os.path.join(where, entry)) as f:
                got.setdefault(entry.rsplit(".", 1)[0], []).append(
                    json.load(f)["n"])
        return got

    def logs(self) -> str:
        return "\n".join("--- %s ---\n%s" % (p.name, p.output()[-2000:])
                         for p in self.procs)

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture
def deployment(cluster: NetnsCluster) -> Iterator[Deployment]:
    made = Deployment(cluster)
    try:
        yield made
    finally:
        made.close()


def kill_a_proxy_mid_traffic(cluster: NetnsCluster, run: Deployment,
                             proxy: Proc, topic: str,
                             flags: dict[str, bool]) -> None:
    """SIGKILL ``proxy`` while h1 calls and fans out; assert nothing that
    returned and no fanout sent after the failure was detected (1 s after
    the kill, as on loopback) is lost; print what was in flight."""
    stop = os.path.join(run.dir, "stop-traffic")
    h1 = cluster.host(1)
    client = h1.spawn("traffic%d" % run.run, [
        sys.executable, SCRIPT, "traffic", run.url, h1.ip, topic, stop,
        *zmq_args(flags)])
    run.procs.append(client)

    def progress() -> int:
        lines = [line for line in client.output().splitlines()
                 if line.startswith("PROGRESS ")]
        return int(lines[-1].split()[1]) if lines else 0
    wait_for(lambda: progress() >= 30, scaled(60), what="traffic")
    proxy.stop(signal.SIGKILL)
    killed = time.time()
    at_kill = progress()
    wait_for(lambda: time.time() > killed + scaled(4)
             and progress() >= at_kill + 30, scaled(60),
             what="traffic after the kill")
    open(stop, "w").close()
    client.wait_for_line("RESULT", scaled(60))
    result = json.loads(client.output().split("RESULT ", 1)[1].splitlines()[0])
    detected = killed + scaled(1)
    returned = [(i, got) for _, i, got in result["calls"]
                if isinstance(got, int)]
    failed = [(started - killed, got) for started, _, got in result["calls"]
              if not isinstance(got, int)]
    # every call that returned has its own answer; after detection all do
    assert all(i == got for i, got in returned)
    late_calls = [got for started, _, got in result["calls"]
                  if started > detected]
    assert late_calls and all(isinstance(g, int) for g in late_calls), \
        failed
    # every fanout sent after detection reaches every service, once
    late = ["t%d" % i for sent, i in result["fanouts"] if sent > detected]

    def all_arrived() -> bool:
        got = run.records("t")
        return all(all(v in got.get(name, []) for v in late)
                   for name in SERVICES)
    wait_for(all_arrived, scaled(30), what="every fanout sent after "
             "detection at every service")
    got = run.records("t")
    for name in SERVICES:
        assert len(got[name]) == len(set(got[name])), name
    missed = [i for _, i in result["fanouts"]
              if any("t%d" % i not in got[name] for name in SERVICES)]
    print("proxy killed: %d calls (%d failed, in flight at the kill: %s), "
          "%d fanouts (%d sent after detection; missed by a service: %d)"
          % (len(result["calls"]), len(failed),
             ", ".join("%.2f s %s" % f for f in failed), len(result["fanouts"]),
             len(late), len(missed)))


@pytest.mark.parametrize("mode", ["threading", "eventlet"])
@pytest.mark.parametrize("topology", list(TOPOLOGIES))
def test_topology(cluster: NetnsCluster, deployment: Deployment,
                  topology: str, mode: str) -> None:
    flags, publisher = TOPOLOGIES[topology]
    topic = "%s_%s" % (topology, mode)
    proxies = [] if publisher is None else [
        deployment.proxy(cluster.host(n), publisher) for n in (4, 5)]
    service_flags: dict[str, Any] = dict(flags)
    if topology == "pubsub_local":
        deployment.local_publisher(cluster.host(3))
        service_flags["subscribe_on"] = "%s:%d" % (cluster.host(3).ip,
                                                   LOCAL_PORT)
    pools = {"h1": ["a"], "h2": ["a"], "h3": ["b"]}
    for name in SERVICES:
        host = cluster.host(int(name[1]))
        deployment.service(host, topic, service_flags, mode == "eventlet",
                           pools[name])
    h1 = cluster.host(1)
    out = json.loads(deployment.script(
        h1, "calls", deployment.url, h1.ip, topic, ",".join(SERVICES),
        deployment.dir, *zmq_args(flags)))
    assert set(out["round_robin"]) == set(SERVICES), out
    assert out["directed"] == {name: name for name in SERVICES}
    casts = ["c%d" % n for n in range(6)]
    fanouts = ["f%d" % n for n in range(3)]

    def delivered() -> bool:
        got = deployment.records()
        every = sum(got.values(), [])
        notes = deployment.notified()
        return (all(every.count(c) == 1 for c in casts)
                and all(f in got.get(name, []) for f in fanouts
                        for name in SERVICES)
                and len(notes.get("h1.a", []) + notes.get("h2.a", [])) >= 4
                and len(notes.get("h3.b", [])) >= 4)
    wait_for(delivered, scaled(30), what="casts, fanouts, notifications")
    got = deployment.records()
    every = sum(got.values(), [])
    assert all(every.count(c) == 1 for c in casts), got
    assert len({name for name, values in got.items()
                if any(v in casts for v in values)}) >= 2, got
    for name in SERVICES:
        assert sorted(v for v in got[name] if v in fanouts) == fanouts, got
    # a pool gets each notification once, whichever of its listeners
    notes = deployment.notified()
    assert sorted(notes.get("h1.a", []) + notes.get("h2.a", [])) == \
        [0, 1, 2, 3], notes
    assert sorted(notes["h3.b"]) == [0, 1, 2, 3], notes
    if topology == "pubsub_local":
        # each fanout came to the local publisher from a central one and
        # went out once to its three subscribers
        local = deployment.metrics(h1, cluster.host(3))
        prefix = "nova_rpc_zmq_proxy_"
        assert local[prefix + 'peers{side="publisher"}'] == 3, local
        assert local[prefix + "received_central_total"] == \
            local[prefix + "published_total"] == out["warm_up"] + 3, local
    if topology in ("router", "pubsub"):
        kill_a_proxy_mid_traffic(cluster, deployment, proxies[0], topic,
                                 flags)


COMBINATIONS = list(itertools.product((False, True), repeat=3))
SENSIBLE = {(False, False, False), (False, True, False),
            (True, True, False), (False, False, True), (True, False, True)}


def test_the_eight_combinations(cluster: NetnsCluster,
                                deployment: Deployment) -> None:
    """(use_pub_sub, use_router_proxy, use_dynamic_connections): the five
    topologies serve a call from another host, the three others refuse
    to start with one line naming the flags and what is on offer."""
    deployment.proxy(cluster.host(4), True)
    h1, h2 = cluster.host(1), cluster.host(2)
    for pub_sub, router, dynamic in COMBINATIONS:
        flags = {"use_pub_sub": pub_sub, "use_router_proxy": router,
                 "use_dynamic_connections": dynamic}
        topic = "combo_%d%d%d" % (pub_sub, router, dynamic)
        if (pub_sub, router, dynamic) in SENSIBLE:
            service = deployment.service(h2, topic, flags, False, [])
            assert deployment.script(
                h1, "whoami", deployment.url, h1.ip, topic, "h2",
                *zmq_args(flags)) == "h2", flags
            assert service.stop() == 0
            continue
        out = h2.run_script(SCRIPT, "serve", deployment.url, h2.ip, "h2",
                            deployment.dir, "--topic", topic,
                            *zmq_args(flags), timeout=60)
        assert out.returncode != 0, flags
        line = out.stderr.strip().splitlines()[-1]
        assert "use_pub_sub = %s, use_router_proxy = %s, " \
            "use_dynamic_connections = %s" % (
                str(pub_sub).lower(), str(router).lower(),
                str(dynamic).lower()) in line, out.stderr[-2000:]
        assert "use_router_proxy = true with use_pub_sub and " \
            "use_dynamic_connections false (router proxy)" in line


BROKER_PORT = 9600


def broker_options(host: NetnsHost) -> dict[str, Any]:
    """h1-h3 use the broker on h4; h4 (the broker's nova.conf) the ring."""
    if host.index == 4:
        return {"rpc_zmq_start_port": BROKER_PORT}
    return {"rpc_zmq_matchmaker": "broker",
            "rpc_zmq_broker_ip": host.cluster.host(4).ip,
            "rpc_zmq_start_port": BROKER_PORT}


@pytest.mark.parametrize("green", [False, True], ids=["threads", "eventlet"])
def test_legacy_broker(netns_cluster_factory: Callable[..., NetnsCluster],
                       green: bool) -> None:
    legacy = netns_cluster_factory(hosts=4, eventlet=green,
                                   start_services=False,
                                   options_for=broker_options)
    try:
        hosts = [legacy.host(n) for n in (1, 2, 3)]
        broker_host = legacy.host(4)
        legacy.write_ring({"demo": [h.ip for h in hosts]})
        broker = broker_host.spawn("broker", proxy_argv() + [
            "--legacy-broker", "--config-file", broker_host.conf_path,
            "--health-port", str(HEALTH_PORT)])
        broker.wait_for_line("legacy broker", scaled(30))
        for host in hosts:
            host.start_service()
        h1 = hosts[0]
        metrics_url = "http://%s:%d/metrics" % (broker_host.ip, HEALTH_PORT)

        def counters() -> dict[str, float]:
            out = h1.run_script(SCRIPT, "metrics", metrics_url)
            assert out.returncode == 0, out.stderr[-2000:]
            return json.loads(out.stdout)

        def client(ops: list[dict]) -> list[list[dict]]:
            return h1.client(ops, eventlet=green)["results"]

        def directed(method: str, **args: Any) -> list[dict]:
            return [r[0] for r in client([
                op("call", "demo.%s" % h.ip, method, args=args, timeout=20)
                for h in hosts])]

        # bare calls and casts go through the broker to the ring hosts
        wait_for(lambda: all("ok" in r[0] for r in client(
            [op("call", "demo", "whoami", timeout=5)])), scaled(60),
            what="a bare call through the broker")
        before = counters()["nova_rpc_zmq_proxy_forwarded_total"]
        names = [r["ok"]["name"] for r in client(
            [op("call", "demo", "whoami", repeat=6, timeout=20)])[0]]
        assert sorted(set(names)) == list(SERVICES), names
        client([op("cast", "demo", "announce", repeat=6,
                   args={"value": "cast"})])
        assert counters()["nova_rpc_zmq_proxy_forwarded_total"] >= \
            before + 12

        def values(value: str) -> list[int]:
            return [r["ok"]["values"].count(value)
                    for r in directed("stats")]
        wait_for(lambda: sum(values("cast")) == 6, scaled(20),
                 what="six casts through the broker")
        # fanout: once on every host (subscriptions settle first)
        wait_for(lambda: client([op("fanout_cast", "demo", "announce",
                                    args={"value": "warm"})])
                 and min(values("warm")) >= 1, scaled(30),
                 what="a fanout at every host")
        published = counters()["nova_rpc_zmq_proxy_published_total"]
        client([op("fanout_cast", "demo", "announce", args={"value": v})
                for v in ("all0", "all1", "all2")])
        wait_for(lambda: all(values(v) == [1, 1, 1]
                             for v in ("all0", "all1", "all2")),
                 scaled(20), what="each fanout once at every host")
        assert counters()["nova_rpc_zmq_proxy_published_total"] == \
            published + 3
        # directed topics go straight to their host, not via the broker
        received = counters()["nova_rpc_zmq_proxy_received_total"]
        assert [r["ok"]["name"] for r in directed("whoami")] == \
            list(SERVICES)
        assert counters()["nova_rpc_zmq_proxy_received_total"] == received
        # the broker killed: directed calls keep working
        broker.stop(signal.SIGKILL)
        assert [r["ok"]["name"] for r in directed("whoami")] == \
            list(SERVICES)
    finally:
        legacy.close()
