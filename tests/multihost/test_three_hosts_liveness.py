"""Three hosts in network namespaces with liveness-aware routing.

Every host joins one ServiceGroup back end reachable from all namespaces:
an SQLite file on the shared filesystem (db), or a ZooKeeper running in
the switch namespace (zk), with ``service_down_time = 3`` and
``report_interval = 1``.  A host's service is SIGKILLed: once the back end
says it is down, calls from a client in host 1 go only to the two others
and none is lost; restarted, it gets calls again.

A small watcher process in host 1 prints each membership change, so the
test sees detection the way the hosts see it (the test process itself
sends nothing beyond loopback).  Times are printed as ``[measure]`` lines.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import pytest

from nova_rpc_zmq.testing import Proc
from tests.fixtures.servers import zookeeper_classpath
from tests.multihost.netns import NetnsCluster, NetnsHost, op
from tests.multihost.test_three_hosts import values
from tests.support import scaled, wait_for

pytestmark = pytest.mark.timeout(240)

DOWN, INTERVAL, ZK_TIMEOUT_MS, ZK_PORT = 3, 1, 2000, 2181
TOPIC = "demo"

# Prints "UP|DOWN <group> <member>" for each change of the given groups as
# the ServiceGroup API sees them, after a first "WATCHING" line; ends when
# its parent goes away or after 600 s.
WATCHER = r"""
import os, sys, time
from nova_rpc_zmq import config
from nova_rpc_zmq.servicegroup import API
api = API(config.parse_args(["--config-file", sys.argv[1]]))
groups = sys.argv[2:]
state = {}
first = True
parent, deadline = os.getppid(), time.time() + 600
while time.time() < deadline and os.getppid() == parent:
    for group, recs in api.members(groups).items():
        for r in recs:
            if state.get((group, r.member)) != r.up:
                state[(group, r.member)] = r.up
                print("%s %s %s" % ("UP" if r.up else "DOWN", group, r.member),
                      flush=True)
    if first:
        print("WATCHING", flush=True)
        first = False
    time.sleep(0.05)
api.stop(leave=False)
"""

# Exit status 0 once a ZooKeeper session to argv[1] works.
ZK_PROBE = r"""
import logging, sys
from kazoo.client import KazooClient
logging.disable(logging.CRITICAL)
client = KazooClient(hosts=sys.argv[1], timeout=1.0,
                     connection_retry={"max_tries": 0})
try:
    client.start(timeout=1.0)
    client.get_children("/")
finally:
    client.stop()
    client.close()
"""


def _report(what: str, seconds: float, request: Any) -> None:
    plugins = request.config.pluginmanager
    terminal = plugins.getplugin("terminalreporter")
    capture = plugins.getplugin("capturemanager")
    if terminal is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            terminal.write_line("[measure] %s: %.2fs" % (what, seconds))


class ZooKeeperInSwitch:
    """A standalone ZooKeeper in the switch namespace, started the first
    time ``options_for`` asks for the hosts' options: the switch exists only
    once ``cluster.start()`` built the network, and the receivers that start
    right after need the back end to answer."""

    def __init__(self) -> None:
        self.java = shutil.which("java")
        self.classpath = zookeeper_classpath()
        self.proc: Proc | None = None
        self.address = ""

    def missing(self) -> str | None:
        if not self.java:
            return "java (for ZooKeeper) is not installed"
        if not self.classpath:
            return "ZooKeeper jars are not installed (Debian package zookeeper)"
        return None

    def options_for(self, host: NetnsHost) -> dict[str, Any]:
        cluster = host.cluster
        if self.proc is None:
            self.start(cluster)
        return {"zookeeper.address": self.address,
                "zookeeper.recv_timeout": ZK_TIMEOUT_MS,
                "zookeeper.sg_retry_interval": 1}

    def start(self, cluster: NetnsCluster) -> None:
        base = os.path.join(cluster.dir, "zookeeper")
        os.makedirs(os.path.join(base, "data"))
        cfg = os.path.join(base, "zoo.cfg")
        with open(cfg, "w") as f:
            f.write("\n".join([
                "tickTime=500", "initLimit=10", "syncLimit=5",
                "dataDir=%s" % os.path.join(base, "data"),
                "clientPort=%d" % ZK_PORT,
                "clientPortAddress=%s" % cluster.switch_ip,
                "minSessionTimeout=1000", "maxSessionTimeout=60000",
                "admin.enableServer=false", "4lw.commands.whitelist=", ""]))
        self.address = "%s:%d" % (cluster.switch_ip, ZK_PORT)
        self.proc = cluster.spawn_in_switch("zookeeper", [
            self.java, "-Xmx256m", "-XX:+UseSerialGC",
            "-Dzookeeper.admin.enableServer=false",
            "-cp", "%s:%s" % (base, self.classpath),
            "org.apache.zookeeper.server.quorum.QuorumPeerMain", cfg])
        probe = ["ip", "netns", "exec", cluster.switch, sys.executable,
                 "-c", ZK_PROBE, self.address]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))

        def answers() -> bool:
            assert self.proc is not None
            if self.proc.popen.poll() is not None:
                raise AssertionError("ZooKeeper exited: %s"
                                     % self.proc.output()[-2000:])
            try:
                return subprocess.run(probe, capture_output=True, env=env,
                                      timeout=scaled(10)).returncode == 0
            except subprocess.TimeoutExpired:
                return False
        wait_for(answers, 60, interval=0.3, what="ZooKeeper in the switch")


@pytest.fixture(scope="module", params=["db", "zk"])
def cluster(request: Any, netns_cluster_factory: Any) -> Any:
    """A started three-host cluster on the back end ``request.param``."""
    options: dict[str, Any] = {"servicegroup_driver": request.param,
                               "service_down_time": DOWN,
                               "report_interval": INTERVAL}
    options_for = None
    sg_dir = None
    if request.param == "db":
        # every namespace shares the filesystem: one SQLite file for all
        sg_dir = tempfile.mkdtemp(prefix="nrz-liveness-")
        options["database.connection"] = "sqlite:///%s/sg.sqlite" % sg_dir
    else:
        zookeeper = ZooKeeperInSwitch()
        reason = zookeeper.missing()
        if reason:
            pytest.skip(reason)
        options_for = zookeeper.options_for
    try:
        made = netns_cluster_factory(hosts=3, topic=TOPIC, options=options,
                                     options_for=options_for)
        yield made
        made.close()  # now, not at the end of the module: one at a time
    finally:
        if sg_dir:
            shutil.rmtree(sg_dir, ignore_errors=True)


class Watcher:
    """The membership watcher process in host 1, and its output."""

    def __init__(self, cluster: NetnsCluster) -> None:
        host = cluster.host(1)
        self.proc = host.spawn("sgwatch-%d" % time.monotonic_ns(), [
            sys.executable, "-c", WATCHER, host.conf_path, TOPIC,
            "rpc_zmq_receiver"])
        self.wait_line("WATCHING", 30)

    def lines(self) -> list[str]:
        return self.proc.output().splitlines()

    def wait_line(self, line: str, timeout: float, after: int = 0) -> float:
        """Wait until ``line`` appears among the lines from index ``after``
        on; returns when it was seen."""
        def seen() -> bool:
            if self.proc.popen.poll() is not None:
                raise AssertionError("watcher exited: %s"
                                     % self.proc.output()[-2000:])
            return line in self.lines()[after:]
        wait_for(seen, timeout, interval=0.02, what="watcher line %r" % line)
        return time.monotonic()

    def close(self) -> None:
        self.proc.stop()


@pytest.fixture
def watcher(cluster: NetnsCluster) -> Any:
    w = Watcher(cluster)
    yield w
    w.close()


def answered_by(cluster: NetnsCluster, count: int,
                eventlet: bool = False) -> collections.Counter:
    """``count`` calls to ``demo`` from a new client in host 1; which host
    answered each.  Any error (a timeout included) fails the test."""
    answer = cluster.host(1).client(
        [op("call", TOPIC, "whoami", repeat=count, timeout=5)],
        eventlet=eventlet)
    return collections.Counter(cluster.host_of_pid(r["pid"])
                               for r in values(answer["results"][0]))


def test_killed_host_is_skipped_then_serves_again(cluster: NetnsCluster,
                                                  watcher: Watcher,
                                                  request: Any) -> None:
    driver = request.node.callspec.params["cluster"]
    # host 1 is first in the ring: a new client's first call goes there
    # unless the client already knows it is down
    h1 = cluster.host(1)
    for host in cluster.hosts:
        watcher.wait_line("UP %s %s" % (TOPIC, host.ip), 20)
    got = answered_by(cluster, 30)
    assert got == {"h1": 10, "h2": 10, "h3": 10}, got

    mark = len(watcher.lines())
    killed_at = time.monotonic()
    h1.kill_service()
    seen_at = watcher.wait_line("DOWN %s %s" % (TOPIC, h1.ip), DOWN + 10, mark)
    _report("netns %s: killed service seen down after" % driver,
            seen_at - killed_at, request)
    # every call made after detection is answered, none by host 1, by the
    # legacy green-thread client and a native-thread one alike; the
    # receiver of host 1 still brings the replies home
    got = answered_by(cluster, 60, eventlet=True)
    assert got == {"h2": 30, "h3": 30}, got
    got = answered_by(cluster, 20)
    assert got == {"h2": 10, "h3": 10}, got

    mark = len(watcher.lines())
    started = time.monotonic()
    h1.restart_service()
    seen_at = watcher.wait_line("UP %s %s" % (TOPIC, h1.ip), 20, mark)
    _report("netns %s: restarted service seen up after" % driver,
            seen_at - started, request)
    got = answered_by(cluster, 30)
    assert got == {"h1": 10, "h2": 10, "h3": 10}, got
