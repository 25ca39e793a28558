"""ServiceGroup pieces that need no network: names, keys, back-off, the
API's last-known view, the liveness rule, the db driver on SQLite, the
in-process memcached store and the status command."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
import time
import uuid
from typing import Any, Iterable

import pytest
import sqlalchemy as sa
from oslo_config import cfg

from nova_rpc_zmq import config, errors
from nova_rpc_zmq.cli import main as cli_main
from nova_rpc_zmq.servicegroup import (
    API, LivenessView, MemberRecord, ServiceGroupUnavailable, member_key)
from nova_rpc_zmq.servicegroup.drivers import base, db, mc
from tests.support import wait_for


def gname() -> str:
    return "g%s" % uuid.uuid4().hex[:10]


def local_settings(**kw: Any) -> config.Settings:
    d = {"servicegroup_driver": "mc", "memcached_servers": None,
         "service_down_time": 1.0, "report_interval": 0.2}
    d.update(kw)
    return config.load_settings(cfg.ConfigOpts(), **d)


# -- names, keys, settings ---------------------------------------------------

@pytest.mark.parametrize("bad", ["", "a/b", ".known", "x\ny", "x\x7f", None, 3,
                                 "h" * 300])
def test_check_name_rejects(bad: Any) -> None:
    with pytest.raises(errors.LocalError):
        base.check_name("member", bad)


def test_check_name_accepts_hosts_and_topics() -> None:
    for ok in ("compute", "host-1.example.org", "fanout~compute", "10.0.0.1"):
        assert base.check_name("group", ok) == ok


def test_member_key_forms() -> None:
    assert member_key({"topic": "compute", "host": "h1", "binary": "x"}) == ("compute", "h1")
    assert member_key({"group": "g", "member": "m"}) == ("g", "m")
    assert member_key(("g", "m")) == ("g", "m")
    for bad in ("h1", {"host": "h1"}, ("a", "b", "c"), None):
        with pytest.raises(errors.LocalError):
            member_key(bad)


def test_safe_key_hashes_unsafe_or_long_names() -> None:
    assert mc.member_key("compute", "h1") == "nrz-sg:m:compute:h1"
    for group, member in (("compute", "host with space"), ("c", "h\u00e9"),
                          ("c", "x" * 240), ("c", "tab\there")):
        key = mc.member_key(group, member)
        assert len(key) < 250 and key.startswith("nrz-sg:h:")
        assert all(0x21 <= ord(c) <= 0x7E for c in key)
        assert key == mc.member_key(group, member)           # stable
    assert mc.member_key("c", "a b") != mc.member_key("c", "a  b")


def test_memcached_server_list() -> None:
    assert mc._server_list("a:1, b:2") == ["a:1", "b:2"]
    assert mc._server_list(["a:1"]) == ["a:1"]
    assert mc._server_list(None) == [] and mc._server_list("<None>") == []
    with pytest.raises(errors.ConfigurationError, match="memcached_servers"):
        mc._server_list("a:b:notaport")


def test_bad_configuration_is_reported() -> None:
    with pytest.raises(errors.ConfigurationError, match="servicegroup_driver"):
        API(local_settings(servicegroup_driver="redis"))
    with pytest.raises(errors.ConfigurationError, match="servicegroup_driver"):
        API(local_settings(), driver="redis")
    with pytest.raises(errors.ConfigurationError, match="service_down_time"):
        API(local_settings(service_down_time=1, report_interval=1))
    with pytest.raises(errors.ConfigurationError, match=r"\[zookeeper\] address"):
        API(local_settings(servicegroup_driver="zk", zookeeper_address=None))
    with pytest.raises(errors.ConfigurationError, match="sqlite"):
        API(local_settings(servicegroup_driver="db", database_connection="not a url"))


# -- back-off and health -------------------------------------------------------

def test_backoff_doubles_up_to_cap() -> None:
    b = base.Backoff(0.5, 3)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3, 3]
    b.reset()
    assert b.next() == 0.5


def test_health_logs_each_change_once(caplog: Any) -> None:
    caplog.set_level(logging.WARNING)
    h = base.BackendHealth("db", "sqlite:///x")
    for _ in range(20):
        h.lost("refused")
    for _ in range(20):
        h.restored()
    msgs = [r.getMessage() for r in caplog.records]
    assert sum(" lost " in m for m in msgs) == 1
    assert sum(" restored " in m for m in msgs) == 1
    assert h.failures == 20 and h.available


def test_health_grace_after_outage() -> None:
    h = base.BackendHealth("mc", "x")
    assert h.grace_cutoff(time.time(), 10) is None
    h.lost("gone")
    assert h.grace_cutoff(time.time(), 10) is None   # still away
    h.restored()
    assert h.grace_cutoff(time.time(), 10) == pytest.approx(h.lost_at - 10)
    assert h.grace_cutoff(time.time() + 11, 10) is None


class RecordingWake(threading.Event):
    """The heartbeat loop's Event, recording each pause instead of taking
    it: the back-off is the subject, not the clock."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.pauses.append(timeout)
        return False


class Unreachable(Exception):
    """What a back end's client raises while it is away."""


def run_heartbeats(outcomes: list[BaseException | None], interval: float,
                   health: base.BackendHealth) -> list[float]:
    """Run ``heartbeat_loop`` over scripted beats (None: success); the
    pauses it took between them."""
    script = list(outcomes)
    wake = RecordingWake()

    def beat() -> None:
        outcome = script.pop(0)
        if outcome is not None:
            raise outcome

    base.heartbeat_loop(beat, driver="test", health=health,
                        interval=lambda: interval, wake=wake,
                        stopped=lambda: not script,
                        unreachable=(Unreachable,),
                        reason=lambda exc: "away: %s" % exc)
    assert script == []
    return wake.pauses


def test_heartbeat_loop_backs_off_to_the_interval_and_resets(caplog: Any) -> None:
    caplog.set_level(logging.WARNING)
    health = base.BackendHealth("test", "here")
    gone = Unreachable("refused")
    pauses = run_heartbeats([None, gone, gone, gone, gone, None, gone, None],
                            4.0, health)
    # the interval after a success; 0.5 s doubling up to the interval
    # after failures; a success starts the back-off over
    assert pauses == [4.0, 0.5, 1.0, 2.0, 4.0, 4.0, 0.5, 4.0]
    assert health.failures == 5 and health.available
    msgs = [r.getMessage() for r in caplog.records]
    # two outages: each change logged once, not each failed beat
    assert sum(" lost (away: refused)" in m for m in msgs) == 2
    assert sum(" restored " in m for m in msgs) == 2


def test_heartbeat_loop_short_interval_caps_the_first_pause() -> None:
    health = base.BackendHealth("test", "here")
    gone = Unreachable("refused")
    assert run_heartbeats([gone, gone, None], 0.2, health) == [0.2, 0.2, 0.2]


def test_heartbeat_loop_survives_unexpected_errors(caplog: Any) -> None:
    health = base.BackendHealth("test", "here")
    already = health.unavailable("recorded by the beat itself")
    pauses = run_heartbeats([already, RuntimeError("bug"), None], 2.0, health)
    assert pauses == [0.5, 1.0, 2.0]
    # ServiceGroupUnavailable was counted where raised, not again here
    assert health.failures == 1 and health.available
    bugs = [r for r in caplog.records
            if r.getMessage() == "servicegroup test heartbeat failed"]
    assert len(bugs) == 1 and bugs[0].exc_info is not None


# -- the in-process store and the mc driver on it ---------------------------------

def test_local_store_ttl_and_merge() -> None:
    store = mc.LocalStore()
    store.set_multi({"a": "1", "b": "2"}, ttl=1)
    store.set_multi({"forever": "3"}, ttl=0)
    assert store.get_multi(["a", "b", "c"]) == {"a": "1", "b": "2"}
    wait_for(lambda: store.get_multi(["a"]) == {}, 5, what="ttl expiry")
    assert store.get_multi(["forever"]) == {"forever": "3"}
    assert store.merge("idx", lambda old: (old or "") + "x")
    assert store.merge("idx", lambda old: None)        # no change wanted
    assert store.get_multi(["idx"]) == {"idx": "x"}


def test_api_on_in_process_store() -> None:
    api = API(local_settings())
    other = API(local_settings())  # same process, same store
    g = gname()
    try:
        api.join("h1", g, {"binary": "nova-compute"})
        api.join("h2", g)
        assert other.get_all(g) == ["h1", "h2"]
        assert other.service_is_up({"topic": g, "host": "h1"})
        assert g in other.groups()
        assert abs(other.last_seen("h1", g) - time.time()) < 2
        api.leave("h1", g)
        assert other.get_all(g) == ["h2"]
        assert {r.member: r.up for r in other.members([g])[g]} == {"h1": False, "h2": True}
        api.stop(leave=False)            # a "crash": h2 ages out
        wait_for(lambda: other.get_all(g) == [], 5, what="h2 down after its TTL")
    finally:
        api.stop()
        other.stop()


def test_mc_index_merges_concurrent_joins() -> None:
    g = gname()
    apis = [API(local_settings()) for _ in range(4)]
    try:
        threads = [threading.Thread(target=a.join, args=("h%d" % i, g))
                   for i, a in enumerate(apis)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert apis[0].get_all(g) == ["h0", "h1", "h2", "h3"]
    finally:
        for a in apis:
            a.stop()


# -- the API's last known view ------------------------------------------------------

class SwitchableDriver(base.Driver):
    """An in-memory back end that can be switched off, to test the API."""

    name = "test"

    def __init__(self) -> None:
        super().__init__(service_down_time=3, report_interval=1)
        self.health = base.BackendHealth("test", "memory")
        self.up: dict[str, set[str]] = {}
        self.reachable = True

    @property
    def address(self) -> str:
        return "memory"

    def _check(self) -> None:
        if not self.reachable:
            raise self.health.unavailable("switched off")
        self.health.restored()

    def join(self, member_id: str, group_id: str, service: Any = None) -> None:
        self._check()
        self.up.setdefault(group_id, set()).add(member_id)

    def leave(self, member_id: str, group_id: str) -> None:
        self._check()
        self.up.get(group_id, set()).discard(member_id)

    def members(self, group_ids: Iterable[str]) -> dict[str, list[MemberRecord]]:
        self._check()
        return {g: [MemberRecord(g, m, True, time.time()) for m in sorted(self.up.get(g, ()))]
                for g in group_ids}

    def is_up(self, group_id: str, member_id: str) -> bool:
        self._check()
        return member_id in self.up.get(group_id, set())

    def groups(self) -> list[str]:
        self._check()
        return sorted(self.up)

    def stop(self, leave: bool = True) -> None:
        pass


def test_api_answers_from_last_view_while_backend_away() -> None:
    drv = SwitchableDriver()
    api = API(driver=drv)
    drv.join("h1", "compute")
    assert api.get_all("compute") == ["h1"]
    assert api.service_is_up(("compute", "h1"))
    drv.reachable = False
    # frozen verdicts, no exception, however long it lasts
    assert api.service_is_up(("compute", "h1"))
    assert not api.available
    assert api.get_all("compute") == ["h1"]
    assert not api.service_is_up(("compute", "never-read"))
    assert api.groups() == ["compute"]
    drv.reachable = True
    drv.up["compute"] = set()
    assert api.get_all("compute") == []
    assert api.available


# -- the liveness rule --------------------------------------------------------------

class RecordsAPI:
    """Just enough API for LivenessView: a table of records."""

    report_interval = 0.1
    pushes_changes = False
    available = True

    def __init__(self, table: dict[str, dict[str, bool]]) -> None:
        self.table = table
        self.reads = 0

    def members(self, groups: Iterable[str]) -> dict[str, list[MemberRecord]]:
        self.reads += 1
        return {g: [MemberRecord(g, m, up, 1.0) for m, up in self.table.get(g, {}).items()]
                for g in groups}


def test_liveness_rule() -> None:
    api = RecordsAPI({"rpc_zmq_receiver": {"a": True, "b": True, "dead": False},
                      "compute": {"a": True, "b": False}})
    view = LivenessView(api, topics=["compute"], refresh_interval=0.1)
    try:
        assert view.is_up("a", "compute")
        assert not view.is_up("b", "compute")            # down in the topic group
        assert not view.is_up("dead", "compute")         # receiver down
        assert not view.is_up("dead")
        assert view.is_up("stranger", "compute")         # never seen: fail open
        assert view.is_up("b", "network")                # unknown topic: fail open
        assert view.dead_hosts(["a", "b", "dead", "x"], "compute") == ["b", "dead"]
        # the unknown topic is fetched in the background
        api.table["network"] = {"b": False}
        wait_for(lambda: not view.is_up("b", "network"), 5, what="new topic fetched")
        snap = view.snapshot()
        assert snap["groups"]["compute"]["b"]["up"] is False
        reads = api.reads
        for _ in range(1000):
            view.is_up("a", "compute")
        assert api.reads - reads <= 2                     # only the timer reads
    finally:
        view.close()


def test_watch_topics_reads_at_once() -> None:
    # a new topic's first message must already skip dead hosts: the view
    # reads the back end before watch_topics returns, not in the background
    api = RecordsAPI({"rpc_zmq_receiver": {"a": True, "b": True},
                      "compute": {"a": True}})
    view = LivenessView(api, refresh_interval=60.0)
    try:
        api.table["volume"] = {"b": False}
        reads = api.reads
        view.watch_topics(["volume"])
        assert api.reads == reads + 1
        assert not view.is_up("b", "volume")
        view.watch_topics(["volume"])                   # known: no read
        assert api.reads == reads + 1
    finally:
        view.close()


# -- the db driver on SQLite ----------------------------------------------------------

def test_db_coalesces_heartbeats(tmp_path: Any) -> None:
    url = "sqlite:///%s" % (tmp_path / "sg.sqlite")
    api = API(local_settings(servicegroup_driver="db", database_connection=url,
                         service_down_time=2.0, report_interval=0.2))
    commits: list[float] = []
    sa.event.listen(api.driver.engine, "commit", lambda conn: commits.append(time.time()))
    try:
        g = gname()
        for i in range(50):
            api.join("h%02d" % i, g)
        del commits[:]
        start = api.driver.heartbeat_transactions
        wait_for(lambda: api.driver.heartbeat_transactions >= start + 5, 10,
                 what="five heartbeat rounds")
        # five rounds for 50 members: a handful of commits, not 250
        assert len(commits) <= 7, len(commits)
        assert len(api.get_all(g)) == 50
    finally:
        api.stop()


def test_db_unreachable_at_start_names_url(tmp_path: Any) -> None:
    url = "sqlite:///%s" % (tmp_path / "missing-dir" / "sg.sqlite")
    with pytest.raises(ServiceGroupUnavailable) as err:
        API(local_settings(servicegroup_driver="db", database_connection=url,
                         service_down_time=3, report_interval=1))
    assert "missing-dir" in str(err.value)


def test_db_row_recreated_when_table_emptied(tmp_path: Any) -> None:
    url = "sqlite:///%s" % (tmp_path / "sg.sqlite")
    api = API(local_settings(servicegroup_driver="db", database_connection=url,
                         service_down_time=2.0, report_interval=0.2))
    try:
        api.join("h1", "compute")
        with api.driver.engine.begin() as conn:
            conn.execute(sa.delete(db.heartbeats))
        beats = api.driver.heartbeat_transactions

        def reinserted() -> bool:
            # the delete has committed: any row now was written after it
            with api.driver.engine.connect() as conn:
                rows = conn.execute(sa.select(db.heartbeats.c.member_id)).scalars().all()
            return rows == ["h1"] and api.driver.heartbeat_transactions > beats

        wait_for(reinserted, 5, what="heartbeat re-inserts the row")
        assert api.get_all("compute") == ["h1"]
    finally:
        api.stop()


# -- nova-rpc-zmq status ----------------------------------------------------------------

def run_status(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main.main(["status"] + argv)
    return code, out.getvalue(), err.getvalue()


def test_status_in_process_and_json() -> None:
    api = API(local_settings())
    g = gname()
    try:
        api.join("h1", g)
        api.join("h2", g)
        api.leave("h2", g)
        code, out, _ = run_status(["--servicegroup-driver", "mc", "--group", g])
        assert code == 0
        rows = {tuple(line.split()[:3]) for line in out.splitlines()}
        assert (g, "h1", "up") in rows and (g, "h2", "DOWN") in rows
        code, out, _ = run_status(["--servicegroup-driver", "mc", "--group", g, "--json"])
        doc = json.loads(out)
        assert {r["member"]: r["up"] for r in doc[g]} == {"h1": True, "h2": False}
    finally:
        api.stop()


def test_status_reads_config_file_and_fails_cleanly(tmp_path: Any) -> None:
    url = "sqlite:///%s" % (tmp_path / "sg.sqlite")
    api = API(local_settings(servicegroup_driver="db", database_connection=url,
                         service_down_time=3, report_interval=1))
    try:
        api.join("h1", "compute")
        cfg = tmp_path / "nova.conf"
        cfg.write_text("[DEFAULT]\nservicegroup_driver = db\n[database]\n"
                       "connection = %s\n" % url)
        code, out, _ = run_status(["--config-file", str(cfg)])
        assert code == 0 and "h1" in out and "up" in out
    finally:
        api.stop()
    bad = "sqlite:///%s" % (tmp_path / "nowhere" / "x.sqlite")
    code, _, err = run_status(["--servicegroup-driver", "db", "--database-connection", bad])
    assert code == 1 and "nowhere" in err


def test_built_from_config_settings() -> None:
    """The field names config.load_settings produces are the ones read."""
    from oslo_config import cfg

    from nova_rpc_zmq import config
    conf = cfg.ConfigOpts()
    conf([], project="nova", default_config_files=[])
    settings = config.load_settings(conf, servicegroup_driver="mc", service_down_time=3,
                                    report_interval=1, rpc_zmq_receiver_group="rcv")
    api = API(settings)
    view = LivenessView.from_settings(api, settings)
    try:
        assert api.driver.name == "mc" and api.driver.servers == []
        assert (api.service_down_time, api.report_interval) == (3, 1)
        assert view.receiver_group == "rcv" and view.refresh_interval == 1
        g = gname()
        api.join("h1", g)
        assert api.get_all(g) == ["h1"]
    finally:
        view.close()
        api.stop()
