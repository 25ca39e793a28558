"""Liveness-aware routing end to end: three hosts, a ring, real back ends.

Three "hosts" on this machine, 127.0.0.1, .2 and .3, each a ``LocalHost``
(receiver + one demo service) on the same port, sharing one ring file
``{"demo": [ip1, ip2, ip3], "demo_h1": [ip1], ...}`` and one ServiceGroup
back end: an SQLite file (db), a private ZooKeeper (zk) or a private
memcached (mc), with ``service_down_time = 3`` and ``report_interval = 1``.
The client is this process (``rpc.init`` with host 1's settings), plus
fresh client processes where a cold start matters.

Faults are real: services are SIGKILLed, receivers SIGTERMed, back-end
servers stopped and restarted on the same port.  Detection and recovery
times are printed as ``[measure]`` lines as they are taken, and again as a
summary at the end of the module.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nova_rpc_zmq import rpc
from nova_rpc_zmq.errors import NoLiveHostsError
from nova_rpc_zmq.impl_zmq import get_driver
from nova_rpc_zmq.servicegroup import API
from nova_rpc_zmq.testing import LocalHost, Proc, checkout_root, child_env, free_port
from tests.fixtures.servers import (ServerProcess, ServerUnavailable,
                                    make_memcached, make_zookeeper)
from tests.support import scaled, wait_for

CLIENT = Path(checkout_root()) / "tests" / "multihost" / "remote_client.py"
IPS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
NAMES = ("h1", "h2", "h3")
TOPIC = "demo"
DOWN, INTERVAL, ZK_TIMEOUT_MS = 3, 1, 2000
RECEIVERS = "rpc_zmq_receiver"
CALL_TIMEOUT = 5.0

#: what each test measured, printed again at the end of the module
MEASURED: dict[str, float] = {}
#: pytest's config, to print past its output capture
_CONFIG: list[Any] = []


def _print(line: str) -> None:
    if not _CONFIG:
        return
    plugins = _CONFIG[0].pluginmanager
    terminal = plugins.getplugin("terminalreporter")
    capture = plugins.getplugin("capturemanager")
    if terminal is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        terminal.write_line(line)


def report(what: str, seconds: float) -> None:
    """Print one measurement past pytest's capture, and keep it."""
    MEASURED[what] = seconds
    _print("[measure] %s: %.2fs" % (what, seconds))


def whoami() -> dict:
    return {"method": "whoami", "args": {}}


class LivenessCluster:
    """Three LocalHosts on 127.0.0.1-3 with one ServiceGroup back end.

    ``servers`` are the back-end server processes (none for db); the
    cluster does not own them.  The in-process client is ``rpc`` after
    ``start()``; ``view`` is its liveness view.
    """

    def __init__(self, driver: str, base_dir: Path, options: dict[str, Any],
                 servers: list[ServerProcess]) -> None:
        self.driver = driver
        self.servers = servers
        self.base_dir = base_dir
        self.ring_path = base_dir / "ring.json"
        ring = {TOPIC: list(IPS)}
        ring.update({"%s_%s" % (TOPIC, n): [ip] for n, ip in zip(NAMES, IPS)})
        self.ring_path.write_text(json.dumps(ring, indent=1))
        self.options = dict(options, service_down_time=DOWN,
                            report_interval=INTERVAL)
        port = free_port()
        self.hosts = [LocalHost(host=ip, address=ip, port=port,
                                matchmaker="ring", ringfile=str(self.ring_path),
                                extra=self.options, base_dir=str(base_dir))
                      for ip in IPS]
        self.receivers: list[Proc | None] = [None] * 3
        self.services: list[Proc | None] = [None] * 3
        self.settings: Any = None
        self._restarts = 0

    # -- processes -----------------------------------------------------------

    def start(self) -> "LivenessCluster":
        for i in range(3):
            self.start_receiver(i)
        self.start_services(range(3))
        self.settings = rpc.init(self.hosts[0].settings())
        assert self.settings.servicegroup_enabled
        self.wait_all_up()
        return self

    def start_receiver(self, i: int) -> Proc:
        """Start (or restart) host ``i``'s receiver; returns once it listens."""
        log = os.path.join(self.hosts[i].dir, "receiver.log")
        if os.path.exists(log):   # keep the old log; wait for a new line
            self._restarts += 1
            os.replace(log, "%s.%d" % (log, self._restarts))
        proc = self.hosts[i].start_receiver(scaled(20))
        self.receivers[i] = proc
        return proc

    def start_services(self, which: Any) -> dict[int, float]:
        """Start the services of hosts ``which`` together; returns the
        monotonic time each said READY."""
        procs = {i: self.hosts[i].start_service(NAMES[i], topic=TOPIC, wait=False)
                 for i in which}
        ready = {}
        for i, proc in procs.items():
            self.services[i] = proc
            # the log is appended to across restarts: this pid's own line
            proc.wait_for_line("READY %s %d" % (NAMES[i], proc.pid), scaled(30))
            ready[i] = time.monotonic()
        return ready

    def kill_service(self, i: int) -> float:
        """SIGKILL host ``i``'s service (a crash); returns when it happened."""
        proc = self.services[i]
        assert proc is not None and proc.popen.poll() is None
        proc.kill()
        return time.monotonic()

    def close(self) -> None:
        rpc.cleanup()
        for host in self.hosts:
            host.stop()

    # -- the client's view -------------------------------------------------

    @property
    def view(self) -> Any:
        return get_driver(self.settings).liveness

    def up_in_view(self, group: str) -> set[str]:
        """Members of ``group`` the client's view has read and found up."""
        recs = self.view.snapshot()["groups"].get(group, {})
        return {m for m, r in recs.items() if r["up"]}

    def routable(self) -> set[str]:
        """Hosts of the ring the client would route ``demo`` to now."""
        return {ip for ip in IPS if self.view.is_up(ip, TOPIC)}

    def wait_all_up(self, timeout: float = 30) -> None:
        def all_up() -> bool:
            return (self.up_in_view(TOPIC) >= set(IPS)
                    and self.up_in_view(RECEIVERS) >= set(IPS)
                    and self.routable() == set(IPS))
        wait_for(all_up, timeout, what="every host up in the client's view: %s"
                 % self.view.snapshot())

    def wait_routable(self, expected: set[str], timeout: float,
                      what: str) -> float:
        """Wait until exactly ``expected`` hosts are routable; returns when."""
        wait_for(lambda: self.routable() == expected, timeout,
                 interval=0.01, what=what)
        return time.monotonic()

    # -- calls ---------------------------------------------------------------

    def call_hosts(self, count: int) -> collections.Counter:
        """``count`` calls to ``demo``; the answering host of each (by
        service name).  Any error fails the test."""
        names: collections.Counter = collections.Counter()
        for _ in range(count):
            names[rpc.call({}, TOPIC, whoami(), timeout=CALL_TIMEOUT)["name"]] += 1
        return names

    def fresh_client(self, count: int, eventlet: bool = True) -> list[dict]:
        """``count`` calls from a new client process of host 1 (green
        threads by default: the legacy way, where a background task runs
        only once the caller yields)."""
        ops = [{"op": "call", "topic": TOPIC, "method": "whoami",
                "repeat": count, "timeout": CALL_TIMEOUT}]
        out = subprocess.run(
            [sys.executable, str(CLIENT), "--config-file",
             self.hosts[0].conf_path] + (["--eventlet"] if eventlet else [])
            + [json.dumps(ops)],
            capture_output=True, text=True, timeout=scaled(60),
            env=child_env())
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])["results"][0]

    def status(self) -> list[list[str]]:
        """``nova-rpc-zmq status`` of host 1's config: the table rows."""
        out = subprocess.run(
            [sys.executable, "-m", "nova_rpc_zmq.cli.main", "status",
             "--config-file", self.hosts[0].conf_path],
            capture_output=True, text=True, timeout=scaled(60),
            env=child_env())
        assert out.returncode == 0, out.stderr[-3000:]
        lines = out.stdout.splitlines()
        assert lines[0].startswith("driver %s at " % self.driver), lines
        assert lines[1].split() == ["GROUP", "MEMBER", "STATE", "LAST", "SEEN"]
        return [line.split(None, 3) for line in lines[2:]]

    def logs(self) -> str:
        parts = []
        for host in self.hosts:
            for proc in host.procs:
                parts.append("--- %s ---\n%s" % (proc.name, proc.output()[-2000:]))
        return "\n".join(parts)


# ---------------------------------------------------------------------------
# fixtures: one cluster per driver, with private back-end servers

def _start(server: ServerProcess) -> ServerProcess:
    try:
        return server.start()
    except ServerUnavailable as exc:
        server.kill()
        pytest.fail(str(exc))


def _backend(driver: str, tmp: Path) -> tuple[dict[str, Any], list[ServerProcess]]:
    if driver == "db":
        return {"servicegroup_driver": "db",
                "database.connection": "sqlite:///%s" % (tmp / "sg.sqlite")}, []
    if driver == "zk":
        server = _start(make_zookeeper(tmp / "zookeeper"))
        return {"servicegroup_driver": "zk",
                "zookeeper.address": server.address,
                "zookeeper.recv_timeout": ZK_TIMEOUT_MS,
                "zookeeper.sg_retry_interval": 1}, [server]
    if driver == "mc":
        server = _start(make_memcached(tmp / "memcached"))
        return {"servicegroup_driver": "mc",
                "memcached_servers": server.address}, [server]
    assert driver == "mc2"
    servers = [_start(make_memcached(tmp / ("memcached-%d" % i))) for i in range(2)]
    return {"servicegroup_driver": "mc",
            "memcached_servers": ",".join(s.address for s in servers)}, servers


def _cluster(driver: str, tmp_path_factory: Any) -> Any:
    tmp = tmp_path_factory.mktemp("liveness-" + driver)
    options, servers = _backend(driver, tmp)
    cluster = LivenessCluster(driver, tmp, options, servers)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
        for server in servers:
            server.stop()


@pytest.fixture(scope="module", params=["db", "zk", "mc"])
def cluster(request: Any, tmp_path_factory: Any) -> Any:
    """A started cluster for each driver; tests leave every part running."""
    yield from _cluster(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def mc_pair_cluster(tmp_path_factory: Any) -> Any:
    """A cluster whose mc driver uses two memcached servers."""
    yield from _cluster("mc2", tmp_path_factory)


@pytest.fixture(scope="module", autouse=True)
def _summary(request: Any) -> Any:
    _CONFIG[:] = [request.config]
    yield
    if MEASURED:
        _print("[measure] summary:")
        for key, value in sorted(MEASURED.items()):
            _print("  %-58s %6.2fs" % (key, value))
    _CONFIG[:] = []


def _names(ips: Any) -> set[str]:
    return {NAMES[IPS.index(ip)] for ip in ips}


# ---------------------------------------------------------------------------
# the tests

@pytest.mark.timeout(60)
def test_every_host_gets_calls(cluster: LivenessCluster) -> None:
    got = cluster.call_hosts(30)
    assert got == {"h1": 10, "h2": 10, "h3": 10}, got


@pytest.mark.timeout(120)
def test_killed_service_is_skipped_then_rejoins(cluster: LivenessCluster) -> None:
    driver = cluster.driver
    # host 1 is first in the ring: a cold client would try it first
    killed_at = cluster.kill_service(0)
    seen_at = cluster.wait_routable({IPS[1], IPS[2]}, DOWN + 10,
                                    "killed host 1 seen down")
    report("%s: killed service seen down after" % driver, seen_at - killed_at)
    assert seen_at - killed_at <= scaled(DOWN + 2 * INTERVAL + 1)

    # every call made after detection is answered, none by the dead host
    got = cluster.call_hosts(60)
    assert got == {"h2": 30, "h3": 30}, got
    # a client process started now skips it from its very first call
    outcomes = cluster.fresh_client(4)
    assert [o.get("error") for o in outcomes] == [None] * 4, outcomes
    assert {o["ok"]["name"] for o in outcomes} == {"h2", "h3"}, outcomes

    # the status command shows who is down and when each was last seen
    rows = cluster.status()
    table = {(r[0], r[1]): r for r in rows}
    for group in (TOPIC, RECEIVERS):
        for ip in IPS:
            assert (group, ip) in table, (group, ip, rows)
    assert table[(TOPIC, IPS[0])][2] == "DOWN", rows
    assert table[("demo_h1", IPS[0])][2] == "DOWN", rows
    for ip in IPS[1:]:
        assert table[(TOPIC, ip)][2] == "up", rows
        assert table[(TOPIC, ip)][3].endswith("s ago"), rows
    for ip in IPS:
        assert table[(RECEIVERS, ip)][2] == "up", rows
    down_seen = table[(TOPIC, IPS[0])][3]
    if driver == "zk":   # a fresh ZooKeeper reader cannot know when
        assert down_seen in ("unknown",) or down_seen.endswith("s ago"), rows
    else:
        assert down_seen.endswith("s ago"), rows
        assert float(down_seen.split("s")[0]) >= DOWN, rows

    # back: seen up again, and it gets calls again (times from the start
    # of the new process, Python start-up included)
    started = time.monotonic()
    cluster.start_services([0])
    up_at = cluster.wait_routable(set(IPS), 20, "restarted host 1 seen up")
    report("%s: restarted service seen up after" % driver, up_at - started)
    new_pid = cluster.services[0].pid
    reached_at = None
    for _ in range(30):
        if rpc.call({}, TOPIC, whoami(), timeout=CALL_TIMEOUT)["pid"] == new_pid:
            reached_at = time.monotonic()
            break
    assert reached_at is not None, "the restarted service got no call"
    report("%s: restarted service answers a call after" % driver,
           reached_at - started)
    got = cluster.call_hosts(30)
    assert got == {"h1": 10, "h2": 10, "h3": 10}, got


@pytest.mark.timeout(120)
def test_all_hosts_down_fails_at_once(cluster: LivenessCluster) -> None:
    for i in range(3):
        cluster.kill_service(i)
    cluster.wait_routable(set(), DOWN + 10, "every host seen down")
    started = time.monotonic()
    with pytest.raises(NoLiveHostsError) as info:
        rpc.call({}, TOPIC, whoami(), timeout=30)
    took = time.monotonic() - started
    report("%s: call with every host down failed after" % cluster.driver, took)
    assert took < scaled(1.0), took
    assert sorted(info.value.dead_hosts) == list(IPS)
    text = str(info.value)
    assert repr(TOPIC) in text and all(ip in text for ip in IPS), text
    # a cast fails the same way, rather than queueing for a dead host
    with pytest.raises(NoLiveHostsError):
        rpc.cast({}, TOPIC, {"method": "record", "args": {"value": 1}})

    cluster.start_services(range(3))
    cluster.wait_routable(set(IPS), 20, "every host back")
    got = cluster.call_hosts(30)
    assert got == {"h1": 10, "h2": 10, "h3": 10}, got


@pytest.mark.timeout(120)
def test_stopped_receiver_is_skipped(cluster: LivenessCluster) -> None:
    proc = cluster.receivers[2]
    assert proc is not None
    stopped_at = time.monotonic()
    assert proc.stop() == 0, proc.output()[-2000:]
    seen_at = cluster.wait_routable({IPS[0], IPS[1]}, DOWN + 10,
                                    "host 3 without receiver seen down")
    report("%s: stopped receiver seen down after" % cluster.driver,
           seen_at - stopped_at)
    assert IPS[2] not in cluster.up_in_view(RECEIVERS)
    # the service of host 3 still runs: only its receiver is away
    assert IPS[2] in cluster.up_in_view(TOPIC)
    got = cluster.call_hosts(40)
    assert got == {"h1": 20, "h2": 20}, got

    started = time.monotonic()
    cluster.start_receiver(2)
    cluster.wait_routable(set(IPS), 20, "host 3 back with its receiver")
    report("%s: restarted receiver seen up after" % cluster.driver,
           time.monotonic() - started)
    got = wait_for(lambda: _all_three(cluster), 20,
                   what="host 3 answering through its new receiver")
    assert set(got) == {"h1", "h2", "h3"}, got


def _all_three(cluster: LivenessCluster) -> collections.Counter | None:
    got = cluster.call_hosts(9)
    return got if len(got) == 3 else None


@pytest.mark.timeout(150)
@pytest.mark.parametrize("cluster", ["zk", "mc"], indirect=True)
def test_backend_outage_keeps_routing(cluster: LivenessCluster) -> None:
    # (not db: its SQLite file has no server to stop)
    server = cluster.servers[0]
    driver = cluster.driver
    server.stop()
    stopped_at = time.monotonic()
    calls = 0
    # longer than service_down_time: the last view must not age out
    while time.monotonic() - stopped_at < DOWN + 2 * INTERVAL:
        got = cluster.call_hosts(9)
        calls += 9
        assert got == {"h1": 3, "h2": 3, "h3": 3}, got
        assert cluster.routable() == set(IPS)
        time.sleep(0.1)
    assert calls >= 27

    server.start()   # same port and data directory
    restarted_at = time.monotonic()
    settings = cluster.settings

    def fresh_reader_sees_all() -> bool:
        api = API(settings)
        try:
            members = api.members([TOPIC, RECEIVERS])
        finally:
            api.stop(leave=False)
        return all({r.member for r in members[g] if r.up} >= set(IPS)
                   for g in (TOPIC, RECEIVERS))
    wait_for(fresh_reader_sees_all, 30, interval=0.2,
             what="every member registered again after the restart")
    report("%s: membership complete again after server restart" % driver,
           time.monotonic() - restarted_at)
    wait_for(lambda: get_driver(settings).servicegroup.available, 20,
             what="the client's driver reports the back end restored")
    cluster.wait_all_up(20)
    got = cluster.call_hosts(30)
    assert got == {"h1": 10, "h2": 10, "h3": 10}, got

    # liveness works again: a crash is detected through the new server
    killed_at = cluster.kill_service(1)
    seen_at = cluster.wait_routable({IPS[0], IPS[2]}, DOWN + 15,
                                    "a crash after the outage seen")
    report("%s: crash after the outage seen down after" % driver,
           seen_at - killed_at)
    cluster.start_services([1])
    cluster.wait_routable(set(IPS), 20, "host 2 back")


@pytest.mark.timeout(150)
def test_mc_two_servers_one_stopped(mc_pair_cluster: LivenessCluster) -> None:
    cluster = mc_pair_cluster
    first, second = cluster.servers
    second.stop()
    stopped_at = time.monotonic()
    while time.monotonic() - stopped_at < DOWN + 2 * INTERVAL:
        got = cluster.call_hosts(9)
        assert got == {"h1": 3, "h2": 3, "h3": 3}, got
        time.sleep(0.1)
    # heartbeats went to the live server: the client sees every member,
    # and so does a reader that starts now and can ask only that server
    cluster.wait_all_up(10)
    api = API(cluster.settings)
    try:
        members = api.members([TOPIC, RECEIVERS])
    finally:
        api.stop(leave=False)
    for group in (TOPIC, RECEIVERS):
        assert {r.member for r in members[group] if r.up} == set(IPS), members

    killed_at = cluster.kill_service(2)
    seen_at = cluster.wait_routable({IPS[0], IPS[1]}, DOWN + 10,
                                    "crash seen with one memcached left")
    report("mc (2 servers, 1 stopped): killed service seen down after",
           seen_at - killed_at)
    got = cluster.call_hosts(40)
    assert got == {"h1": 20, "h2": 20}, got
    started = time.monotonic()
    cluster.start_services([2])
    up_at = cluster.wait_routable(set(IPS), 20, "host 3 back")
    report("mc (2 servers, 1 stopped): restarted service seen up after",
           up_at - started)
    second.start()
