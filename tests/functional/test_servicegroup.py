"""ServiceGroup API, drivers and liveness view against real servers.

One behavioural suite runs over every driver: db on SQLite, db on
PostgreSQL (when it can start here), zk, mc with one server, and mc with
the in-process store.  Members in other processes are real processes,
killed with SIGKILL.  Detection times are printed (run with ``-s``).
"""

from __future__ import annotations

import json
import logging
import select
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from oslo_config import cfg

from nova_rpc_zmq import config
from nova_rpc_zmq.servicegroup import API, LivenessView, ServiceGroupUnavailable
from nova_rpc_zmq.servicegroup.drivers import db as db_driver
from nova_rpc_zmq.servicegroup.drivers import mc as mc_driver
from nova_rpc_zmq.testing import checkout_root, child_env, free_port
from tests.fixtures.servers import TcpProxy
from tests.support import scaled, wait_for

_ROOT = checkout_root()
DOWN, INTERVAL, ZK_TIMEOUT_MS = 3.0, 1.0, 2000
BACKENDS = ["db-sqlite", "db-postgresql", "zk", "mc", "mc-local"]

# A member in its own process: joins, says READY, lives until killed (or
# its parent goes away, or 120 s pass).
MEMBER_SCRIPT = r"""
import json, os, sys, time
args = json.loads(sys.argv[1])
if args.get("eventlet"):
    import eventlet
    eventlet.monkey_patch()
from oslo_config import cfg
from nova_rpc_zmq import concurrency, config
from nova_rpc_zmq.servicegroup import API, LivenessView
api = API(config.load_settings(cfg.ConfigOpts(), **args["settings"]))
for group, member in args["joins"]:
    api.join(member, group, {"pid": os.getpid()})
view = LivenessView(api, topics=[g for g, _ in args["joins"]])
info = {"green": concurrency.get_handler().green, "driver": api.driver.name,
        "self_up": all(view.is_up(m, g) for g, m in args["joins"])}
if api.driver.name == "zk":
    info["kazoo_handler"] = type(api.driver.kz_handler).__name__
print("READY " + json.dumps(info), flush=True)
parent, deadline = os.getppid(), time.time() + 120
while time.time() < deadline and os.getppid() == parent:
    api.handler.sleep(0.1)
view.close()
api.stop()
"""


class Backend:
    """How to configure one driver against its (already running) server."""

    def __init__(self, name: str, settings: dict[str, Any], server: Any = None,
                 cross_process: bool = True) -> None:
        self.name = name
        self.base = settings
        self.server = server
        self.cross_process = cross_process

    def fields(self, **overrides: Any) -> dict[str, Any]:
        """The Settings fields of this back end, with ``overrides``."""
        return dict(self.base, **overrides)

    def settings(self, **overrides: Any) -> config.Settings:
        return config.load_settings(cfg.ConfigOpts(), **self.fields(**overrides))


def make_backend(name: str, request: Any, tmp_path: Any, server: Any = None) -> Backend:
    common = {"service_down_time": DOWN, "report_interval": INTERVAL}
    if name == "db-sqlite":
        return Backend(name, dict(common, servicegroup_driver="db",
                                  database_connection="sqlite:///%s" % (tmp_path / "sg.sqlite")))
    if name == "db-postgresql":
        server = server or request.getfixturevalue("postgres_server")
        return Backend(name, dict(common, servicegroup_driver="db",
                                  database_connection=server.url), server)
    if name == "zk":
        server = server or request.getfixturevalue("zookeeper_server")
        return Backend(name, dict(common, servicegroup_driver="zk",
                                  zookeeper_address=server.address,
                                  zookeeper_recv_timeout=ZK_TIMEOUT_MS,
                                  zookeeper_sg_prefix="/t%s" % uuid.uuid4().hex[:8],
                                  zookeeper_sg_retry_interval=1), server)
    if name == "mc":
        server = server or request.getfixturevalue("memcached_server")
        return Backend(name, dict(common, servicegroup_driver="mc",
                                  memcached_servers=[server.address]), server)
    assert name == "mc-local"
    return Backend(name, dict(common, servicegroup_driver="mc",
                              memcached_servers=None), cross_process=False)


@pytest.fixture(params=BACKENDS)
def backend(request: Any, tmp_path: Any) -> Backend:
    return make_backend(request.param, request, tmp_path)


@pytest.fixture
def apis() -> Any:
    """``make(settings)`` builds an API that is stopped after the test."""
    made: list[API] = []

    def make(settings: Any) -> API:
        api = API(settings)
        made.append(api)
        return api

    yield make
    for api in made:
        api.stop(leave=False)


@pytest.fixture
def members() -> Any:
    """``spawn(settings, joins, eventlet=False)`` runs MEMBER_SCRIPT and
    waits for READY; every process is killed and reaped afterwards."""
    procs: list[subprocess.Popen] = []

    def spawn(fields: dict[str, Any], joins: list[tuple[str, str]],
              eventlet: bool = False) -> tuple[subprocess.Popen, dict]:
        arg = json.dumps({"settings": fields, "joins": joins,
                          "eventlet": eventlet})
        proc = subprocess.Popen([sys.executable, "-c", MEMBER_SCRIPT, arg],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, cwd=_ROOT, env=child_env())
        procs.append(proc)
        deadline = time.monotonic() + scaled(30)
        line = b""
        while time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                line = proc.stdout.readline()
                break
        if not line.startswith(b"READY "):
            proc.kill()
            _, err = proc.communicate(timeout=10)
            pytest.fail("member process did not start: %r %s"
                        % (line, err.decode(errors="replace")[-2000:]))
        return proc, json.loads(line[6:])

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def group_name() -> str:
    return "g%s" % uuid.uuid4().hex[:10]


def report(what: str, seconds: float, capsys: Any) -> None:
    with capsys.disabled():
        print("\n[measure] %s: %.2fs" % (what, seconds))


# ---------------------------------------------------------------------------
# the behavioural suite

@pytest.mark.timeout(60)
def test_join_get_all_leave_last_seen(backend: Backend, apis: Any) -> None:
    api = apis(backend.settings())
    observer = apis(backend.settings())
    group = group_name()
    t0 = time.time()
    api.join("host-a", group, {"binary": "nova-compute"})
    api.join("host-b", group)
    assert api.get_all(group) == ["host-a", "host-b"]
    wait_for(lambda: observer.get_all(group) == ["host-a", "host-b"], 10,
             what="observer sees both members")
    assert observer.service_is_up({"topic": group, "host": "host-a"})
    assert observer.service_is_up((group, "host-b"))
    assert not observer.service_is_up((group, "host-never"))
    seen = observer.last_seen("host-a", group)
    assert seen is not None and t0 - 1 <= seen <= time.time() + 1
    assert observer.last_seen("host-never", group) is None
    assert group in observer.groups()

    api.leave("host-a", group)
    wait_for(lambda: observer.get_all(group) == ["host-b"], 10,
             what="leave seen by the observer")
    assert not observer.service_is_up((group, "host-a"))
    # a member that left stays known (down), which the liveness rule needs
    recs = {r.member: r.up for r in observer.members([group])[group]}
    assert recs == {"host-a": False, "host-b": True}


@pytest.mark.timeout(90)
def test_killed_member_seen_down_then_back(backend: Backend, apis: Any, members: Any,
                                           capsys: Any) -> None:
    group = group_name()
    observer = apis(backend.settings())
    if backend.cross_process:
        proc, info = members(backend.fields(), [(group, "host-k")])
        assert info["self_up"] and info["green"] is False
    else:  # the in-process store: a second API in this process "crashes"
        member = apis(backend.settings())
        member.join("host-k", group)
    wait_for(lambda: observer.service_is_up((group, "host-k")), 10, what="member up")
    killed_at = time.monotonic()
    if backend.cross_process:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    else:
        member.stop(leave=False)
    wait_for(lambda: not observer.service_is_up((group, "host-k")), 15,
             interval=0.02, what="killed member seen down")
    detected = time.monotonic() - killed_at
    report("%s: SIGKILLed member seen down after" % backend.name, detected, capsys)
    bound = ZK_TIMEOUT_MS / 1000.0 + 3 if backend.name == "zk" else DOWN + INTERVAL + 2
    assert detected <= scaled(bound)
    assert observer.get_all(group) == []

    if backend.cross_process:
        members(backend.fields(), [(group, "host-k")])
    else:
        apis(backend.settings()).join("host-k", group)
    wait_for(lambda: observer.service_is_up((group, "host-k")), 10,
             what="restarted member up again")


def _count(caplog: Any, word: str) -> int:
    return sum(1 for r in caplog.records
               if r.name.startswith("nova_rpc_zmq.servicegroup") and word in r.getMessage())


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", ["db-postgresql", "zk", "mc"])
def test_backend_restart_keeps_last_view(name: str, request: Any, tmp_path: Any,
                                         server_factory: Any, apis: Any,
                                         caplog: Any, capsys: Any) -> None:
    kind = {"db-postgresql": "postgresql", "zk": "zookeeper", "mc": "memcached"}[name]
    server = server_factory(kind)
    backend = make_backend(name, request, tmp_path, server)
    member, observer = apis(backend.settings()), apis(backend.settings())
    view = LivenessView(observer, refresh_interval=0.5, topics=["compute"])
    try:
        member.join("host-r", "rpc_zmq_receiver")
        member.join("host-r", "compute")
        wait_for(lambda: observer.service_is_up(("compute", "host-r")), 10, what="up")
        view.refresh()
        caplog.set_level(logging.INFO)

        server.stop()
        stopped_at = time.monotonic()
        # longer than service_down_time: the old view must not age out
        while time.monotonic() - stopped_at < DOWN + 2 * INTERVAL:
            assert observer.service_is_up(("compute", "host-r"))
            assert observer.get_all("compute") == ["host-r"]
            assert view.is_up("host-r", "compute")
            time.sleep(0.1)
        assert not observer.available or name == "zk"

        server.start()  # same port, same data directory
        restarted_at = time.monotonic()
        fresh = apis(backend.settings())  # no memory: proves re-registration
        wait_for(lambda: fresh.service_is_up(("compute", "host-r")), 20,
                 what="membership back after restart")
        wait_for(lambda: observer.available and member.available, 20,
                 what="drivers report the back end restored")
        report("%s: membership visible again after server restart" % name,
               time.monotonic() - restarted_at, capsys)
        wait_for(lambda: view.is_up("host-r", "compute"), 10, what="view up")
        # each driver instance logs the loss and the recovery once, not
        # once per retry (db instances of one URL share one heartbeat)
        lost, restored = _count(caplog, " lost ("), _count(caplog, " restored after")
        assert 1 <= lost <= 3 and 1 <= restored <= 3, (lost, restored)
    finally:
        view.close()


@pytest.mark.timeout(120)
def test_zk_session_expiry_rejoins(zookeeper_server: Any, request: Any, tmp_path: Any,
                                   apis: Any, capsys: Any) -> None:
    """Cut one member off ZooKeeper until the servers expire its session,
    then let it back: it must re-create its node in a new session."""
    backend = make_backend("zk", request, tmp_path, zookeeper_server)
    proxy = TcpProxy(zookeeper_server.port)
    try:
        member = apis(backend.settings(zookeeper_address=proxy.address))
        observer = apis(backend.settings())
        member.join("host-z", "compute")
        wait_for(lambda: observer.service_is_up(("compute", "host-z")), 10, what="up")
        # the member reads the group once, so it has a view to answer from
        wait_for(lambda: member.service_is_up(("compute", "host-z")), 10, what="own view")
        old_session = member.driver.session_id()

        proxy.block()
        blocked_at = time.monotonic()
        wait_for(lambda: not observer.service_is_up(("compute", "host-z")), 15,
                 what="member down after its session expired")
        report("zk: partitioned member seen down after", time.monotonic() - blocked_at,
               capsys)
        # the cut-off member answers from its own last view: up while its
        # connection is only SUSPENDED, down once kazoo has told it that
        # the session expired (LOST: its ephemeral node is gone)
        from kazoo.protocol.states import KazooState
        for _ in range(50):
            before = member.driver.client.state
            answer = member.service_is_up(("compute", "host-z"))
            if member.driver.client.state == before:
                break
        assert answer is (before != KazooState.LOST), (before, answer)

        proxy.unblock()
        wait_for(lambda: observer.service_is_up(("compute", "host-z")), 20,
                 what="member re-joined in a new session")
        assert member.driver.session_id() != old_session
        # the node is visible a moment before the driver counts the rejoin
        wait_for(lambda: member.driver.rejoins >= 1, 10, what="the rejoin counted")
    finally:
        proxy.close()


@pytest.mark.timeout(120)
def test_mc_two_servers_one_stopped(server_factory: Any, request: Any, tmp_path: Any,
                                    apis: Any) -> None:
    import memcache
    a, b = server_factory("memcached"), server_factory("memcached")
    backend = make_backend("mc", request, tmp_path, a)
    settings = backend.settings(memcached_servers=[a.address, b.address])
    member, observer = apis(settings), apis(settings)
    group = group_name()
    names = ["host-%02d" % i for i in range(16)]
    for n in names:
        member.join(n, group)
    wait_for(lambda: observer.get_all(group) == names, 10, what="all up")
    on_a = memcache.Client([a.address])
    keyed_on_a = [n for n in names if on_a.get(mc_driver.member_key(group, n))]
    assert 0 < len(keyed_on_a) < len(names), "keys should spread over both servers"

    b.stop()
    stopped_at = time.monotonic()
    while time.monotonic() - stopped_at < DOWN + 2 * INTERVAL:
        up = set(observer.get_all(group))
        assert set(keyed_on_a) <= up, "members keyed on the live server vanished"
        time.sleep(0.1)
    # the driver keeps working: heartbeats moved to the live server (each
    # member's next beat after its failed one: under load a beat may come
    # a moment late), a new member joins, and a reader with no memory finds
    # everyone via the index
    wait_for(lambda: observer.get_all(group) == names, DOWN + 2 * INTERVAL,
             what="every member's heartbeat on the live server")
    member.join("host-new", group)
    fresh = apis(settings)
    wait_for(lambda: fresh.get_all(group) == sorted(names + ["host-new"]), 15,
             what="a fresh reader sees every member through the live server")


@pytest.mark.timeout(60)
def test_mc_index_survives_concurrent_joins_and_odd_names(memcached_server: Any,
                                                          request: Any, tmp_path: Any,
                                                          apis: Any) -> None:
    """Eight processes' worth of drivers join one group at once: gets/cas
    on the index must keep every member; unsafe names are hashed."""
    import threading
    backend = make_backend("mc", request, tmp_path, memcached_server)
    group = group_name()
    names = ["host-%d" % i for i in range(6)] + ["h" * 240, "h\u00f4te d'\u00e9t\u00e9"]
    drivers = [apis(backend.settings()) for _ in names]
    barrier = threading.Barrier(len(names))

    def join(api: API, name: str) -> None:
        barrier.wait(10)
        api.join(name, group)

    threads = [threading.Thread(target=join, args=(a, n)) for a, n in zip(drivers, names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    fresh = apis(backend.settings())
    assert fresh.get_all(group) == sorted(names)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["zookeeper", "memcached", "redis", "postgresql"])
def test_fixture_restarts_on_same_port(kind: str, server_factory: Any) -> None:
    server = server_factory(kind)
    port = server.port
    assert server.ready()
    server.stop()
    assert not server.running
    server.wait_port_free()
    assert not server.ready()
    server.start()
    assert server.port == port and server.ready()
    server.kill()
    assert not server.running and server.proc is None
    server.start()  # after SIGKILL too, on the same data directory
    assert server.ready()


# ---------------------------------------------------------------------------
# liveness view

@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["db-sqlite", "zk", "mc"])
def test_liveness_rule_and_refresh(name: str, request: Any, tmp_path: Any,
                                   apis: Any) -> None:
    backend = make_backend(name, request, tmp_path)
    rg = "rcv%s" % uuid.uuid4().hex[:6]
    topic = group_name()
    svc = apis(backend.settings())
    svc.join("both", rg)
    svc.join("both", topic)
    svc.join("receiver-only", rg)          # never in the topic group: fail open
    svc.join("left-topic", rg)
    svc.join("left-topic", topic)
    svc.leave("left-topic", topic)
    svc.join("left-receiver", rg)
    svc.join("left-receiver", topic)
    svc.leave("left-receiver", rg)
    reader = apis(backend.settings())
    # zk pushes changes: a long interval proves the view needs no polling
    refresh = 60.0 if name == "zk" else 0.3
    view = LivenessView(reader, receiver_group=rg, refresh_interval=refresh,
                        topics=[topic])
    try:
        expect = {"both": True, "receiver-only": True, "left-topic": False,
                  "left-receiver": False, "stranger": True}
        wait_for(lambda: {h: view.is_up(h, topic) for h in expect} == expect, 10,
                 what="liveness rule")
        assert view.is_up("left-topic", "other-topic")       # only down for its topic
        assert not view.is_up("left-receiver", "other-topic")  # receiver down: down
        assert view.dead_hosts(list(expect), topic) == ["left-topic", "left-receiver"]

        calls = view.refreshes
        for _ in range(10000):
            view.is_up("both", topic)
        assert view.refreshes - calls <= 2, "is_up must not read the back end"

        svc.stop(leave=False)
        wait_for(lambda: not view.is_up("both", topic), DOWN + 10,
                 what="view refreshed after the service died")
        snap = view.snapshot()
        assert snap["groups"][rg]["both"]["up"] is False
    finally:
        view.close()


# ---------------------------------------------------------------------------
# concurrency models and start-up errors

@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", ["db-sqlite", "zk", "mc"])
def test_member_under_eventlet(name: str, request: Any, tmp_path: Any, apis: Any,
                               members: Any) -> None:
    backend = make_backend(name, request, tmp_path)
    group = group_name()
    observer = apis(backend.settings())  # this process: native threads
    assert not observer.handler.green
    proc, info = members(backend.fields(), [(group, "green")], eventlet=True)
    assert info["green"] is True and info["self_up"]
    if name == "zk":
        assert info["kazoo_handler"] == "SequentialEventletHandler"
    wait_for(lambda: observer.service_is_up((group, "green")), 10, what="green member up")
    first = observer.last_seen("green", group)
    # stays up past the down time: green heartbeats / kazoo pings really run
    until = time.monotonic() + DOWN + INTERVAL
    while time.monotonic() < until:
        assert observer.service_is_up((group, "green"))
        time.sleep(0.1)
    if name != "zk":
        assert observer.last_seen("green", group) > first
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    wait_for(lambda: not observer.service_is_up((group, "green")), 15,
             what="green member down after SIGKILL")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("driver", ["zk", "mc", "db"])
def test_unreachable_backend_at_start_names_address(driver: str) -> None:
    port = free_port()
    settings = config.load_settings(
        cfg.ConfigOpts(), servicegroup_driver=driver, service_down_time=3, report_interval=1,
        zookeeper_address="127.0.0.1:%d" % port, zookeeper_recv_timeout=1000,
        memcached_servers=["127.0.0.1:%d" % port],
        database_connection="postgresql+pg8000://u:secret@127.0.0.1:%d/db" % port)
    if driver == "db":
        pytest.importorskip("pg8000", reason="pg8000 (PostgreSQL driver) absent")
    with pytest.raises(ServiceGroupUnavailable) as err:
        API(settings)
    assert str(port) in str(err.value)
    assert "secret" not in str(err.value)


@pytest.mark.timeout(60)
def test_db_unreachable_names_the_address_masked(caplog: Any) -> None:
    """A database that refuses connections: ServiceGroupUnavailable and
    every log line show the URL with the password masked."""
    pytest.importorskip("pg8000")
    password = "Hunter2SecretPw"
    caplog.set_level(logging.DEBUG)
    url = "postgresql+pg8000://nova:%s@127.0.0.1:%d/nova" % (password, free_port())
    with pytest.raises(ServiceGroupUnavailable) as info:
        db_driver.DbDriver(url, report_interval=1, service_down_time=3, connect_timeout=1)
    assert password not in str(info.value)
    assert "nova:***@127.0.0.1" in str(info.value)
    assert not [r for r in caplog.records if password in r.getMessage()]


@pytest.mark.timeout(60)
def test_status_command_lists_members(zookeeper_server: Any, request: Any,
                                      tmp_path: Any, apis: Any) -> None:
    backend = make_backend("zk", request, tmp_path, zookeeper_server)
    svc = apis(backend.settings())
    svc.join("host-s1", "compute")
    svc.join("host-s2", "compute")
    svc.leave("host-s2", "compute")
    cfg = tmp_path / "nova.conf"
    cfg.write_text("[DEFAULT]\nservicegroup_driver = zk\nservice_down_time = 3\n"
                   "report_interval = 1\n[zookeeper]\naddress = %s\nsg_prefix = %s\n"
                   % (zookeeper_server.address, backend.base["zookeeper_sg_prefix"]))
    res = subprocess.run([sys.executable, "-m", "nova_rpc_zmq.cli.main", "status",
                          "--config-file", str(cfg)], cwd=_ROOT, timeout=60,
                         capture_output=True, text=True,
                         env=child_env())
    assert res.returncode == 0, res.stderr
    lines = {tuple(line.split()[:3]) for line in res.stdout.splitlines()}
    assert ("compute", "host-s1", "up") in lines, res.stdout
    assert ("compute", "host-s2", "DOWN") in lines, res.stdout



@pytest.mark.timeout(120)
def test_many_services_creating_the_schema_at_once(tmp_path: Any) -> None:
    """Services that start together against a new database each find no
    table and each try to create it; every one of them must start."""
    import threading
    failures: list[BaseException] = []
    for attempt in range(12):
        url = "sqlite:///%s" % (tmp_path / ("race%d.sqlite" % attempt))
        engines = [db_driver.make_engine(url, 5) for _ in range(6)]
        gate = threading.Barrier(len(engines))

        def start(engine: Any) -> None:
            try:
                gate.wait(10)
                db_driver.create_schema(engine)
            except BaseException as exc:  # noqa: BLE001 - asserted below
                failures.append(exc)

        threads = [threading.Thread(target=start, args=(e,)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for engine in engines:
            engine.dispose()
    assert not failures, failures[:3]
