"""Matchmakers: localhost, stub, ring (routing, reload, validation, liveness)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest

from nova_rpc_zmq import config, errors
from nova_rpc_zmq.matchmaker import MATCHMAKERS, get_matchmaker, matchmaker_class
from nova_rpc_zmq.matchmaker.localhost import LocalhostMatchMaker
from nova_rpc_zmq.matchmaker.ring import (RingMatchMaker, load_ring_file,
                                          parse_ring_text)
from nova_rpc_zmq.matchmaker.stub import StubMatchMaker
from tests.support import wait_for

RINGFILES = Path(__file__).resolve().parents[2] / "ringfiles"


def ring_file(tmp_path: Path, data: object, name: str = "ring.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=1))
    return str(path)


class Liveness:
    """A liveness source whose answers the test sets; counts the questions."""

    def __init__(self, down: set[str] = frozenset()) -> None:
        self.down = set(down)
        self.asked = 0

    def is_up(self, host: str, topic: str) -> bool:
        self.asked += 1
        return host not in self.down


# -- localhost and stub ------------------------------------------------------

@pytest.mark.parametrize("topic, expected", [
    ("compute", ("compute.me", "me")),
    ("compute.other", ("compute.me", "me")),
    ("fanout~compute", ("fanout~compute.me", "me")),
    ("fanout~compute.x", ("fanout~compute.me", "me")),
    ("zmq_replies.h1", ("zmq_replies.h1", "me")),
])
def test_localhost(topic, expected):
    assert LocalhostMatchMaker("me").queues(topic) == [expected]


@pytest.mark.parametrize("topic", ["compute", "compute.h", "fanout~compute",
                                   "zmq_replies.h"])
def test_stub(topic):
    assert StubMatchMaker("me").queues(topic) == [(topic, "me")]


def test_directed_topic_with_empty_host_is_refused():
    with pytest.raises(errors.LocalError, match="no host"):
        LocalhostMatchMaker("me").queues("compute.")


def test_get_matchmaker_by_name(tmp_path):
    path = ring_file(tmp_path, {"compute": ["127.0.0.1"]})
    for name, cls in (("localhost", LocalhostMatchMaker),
                      ("stub", StubMatchMaker), ("ring", RingMatchMaker)):
        settings = config.load_settings(config.CONF, rpc_zmq_matchmaker=name,
                                        matchmaker_ringfile=path,
                                        rpc_zmq_host="me")
        mm = get_matchmaker(settings)
        assert type(mm) is cls
        mm.close()
    assert set(MATCHMAKERS) == {"ring", "localhost", "stub", "broker"}
    for name in MATCHMAKERS:
        assert matchmaker_class(name).queues is not None


def test_get_matchmaker_from_legacy_name(tmp_path):
    path = ring_file(tmp_path, {"compute": ["127.0.0.1"]})
    settings = config.load_settings(
        config.CONF, rpc_zmq_matchmaker="nova.rpc.matchmaker.MatchMakerRing",
        matchmaker_ringfile=path)
    liveness = Liveness()
    mm = get_matchmaker(settings, liveness=liveness)
    assert isinstance(mm, RingMatchMaker) and mm.liveness is liveness
    assert mm.queues("compute") == [("compute.127.0.0.1", "127.0.0.1")]


# -- ring routing ------------------------------------------------------------

def test_ring_round_robin_fanout_directed(tmp_path):
    mm = RingMatchMaker(ring_file(tmp_path, {"compute": ["a", "b", "c"],
                                             "scheduler": ["s1"]}),
                        resolve=False)
    got = [mm.queues("compute")[0] for _ in range(6)]
    assert got == [("compute.a", "a"), ("compute.b", "b"), ("compute.c", "c")] * 2
    assert mm.queues("scheduler") == [("scheduler.s1", "s1")]
    assert mm.queues("fanout~compute") == [
        ("fanout~compute.a", "a"), ("fanout~compute.b", "b"),
        ("fanout~compute.c", "c")]
    assert mm.queues("fanout~compute.b") == mm.queues("fanout~compute")
    # directed and reply topics go straight to their host, ring or not
    assert mm.queues("compute.z") == [("compute.z", "z")]
    assert mm.queues("nothere.h1.example.com") == [
        ("nothere.h1.example.com", "h1.example.com")]
    assert mm.queues("zmq_replies.a") == [("zmq_replies.a", "a")]


def test_round_robin_cursor_is_per_topic(tmp_path):
    mm = RingMatchMaker(ring_file(tmp_path, {"x": ["a", "b"], "y": ["a", "b"]}),
                        resolve=False)
    assert mm.queues("x")[0][1] == "a"
    assert mm.queues("y")[0][1] == "a"
    assert mm.queues("x")[0][1] == "b"


@pytest.mark.parametrize("topic", ["network", "fanout~network", "empty",
                                   "fanout~empty"])
def test_missing_topic(tmp_path, topic):
    path = ring_file(tmp_path, {"compute": ["a"], "empty": []})
    mm = RingMatchMaker(path, resolve=False)
    with pytest.raises(errors.NoHostsError) as err:
        mm.queues(topic)
    assert isinstance(err.value, errors.Timeout)    # legacy callers catch it
    bare = topic.replace("fanout~", "")
    assert path in str(err.value) and "topic %r" % bare in str(err.value)


def test_duplicate_hosts_are_dropped_with_a_warning(tmp_path, caplog):
    path = ring_file(tmp_path, '{"compute": ["a", "b", "a"]}')
    with caplog.at_level(logging.WARNING):
        mm = RingMatchMaker(path, resolve=False)
    assert [p[1] for p in mm.queues("fanout~compute")] == ["a", "b"]
    assert "listed twice" in caplog.text and "line 1" in caplog.text


# -- reload ------------------------------------------------------------------

def _eventually_routes_to(mm: RingMatchMaker, topic: str, host: str) -> None:
    wait_for(lambda: mm.queues(topic)[0][1] == host, timeout=5,
             what="ring reload routing %s to %s" % (topic, host))


def test_reload_after_in_place_edit(tmp_path):
    path = ring_file(tmp_path, {"compute": ["old"]})
    inode = os.stat(path).st_ino
    mm = RingMatchMaker(path, resolve=False, check_interval=0.05)
    assert mm.queues("compute") == [("compute.old", "old")]
    with open(path, "r+") as f:            # same inode, new content
        f.write(json.dumps({"compute": ["new"]}))
        f.truncate()
    assert os.stat(path).st_ino == inode
    _eventually_routes_to(mm, "compute", "new")


def test_reload_after_atomic_replace(tmp_path):
    path = ring_file(tmp_path, {"compute": ["old"]})
    mm = RingMatchMaker(path, resolve=False, check_interval=0.05)
    assert mm.queues("compute")[0][1] == "old"
    tmp = ring_file(tmp_path, {"compute": ["new"], "cert": ["c"]}, "ring.tmp")
    os.replace(tmp, path)                  # new inode
    _eventually_routes_to(mm, "compute", "new")
    assert mm.queues("cert") == [("cert.c", "c")]


def test_reload_within_five_seconds_with_default_interval(tmp_path):
    path = ring_file(tmp_path, {"compute": ["old"]})
    mm = RingMatchMaker(path, resolve=False)     # 1 s check interval
    os.replace(ring_file(tmp_path, {"compute": ["new"]}, "t"), path)
    _eventually_routes_to(mm, "compute", "new")


def test_stat_at_most_once_per_interval(tmp_path, monkeypatch):
    path = ring_file(tmp_path, {"compute": ["a"]})
    mm = RingMatchMaker(path, resolve=False, check_interval=3600)
    calls = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat",
                        lambda p, *a, **k: calls.append(p) or real_stat(p, *a, **k))
    for _ in range(1000):
        mm.queues("compute")
    assert calls == []
    mm.reload_now()
    mm.queues("compute")
    assert calls == [path]


def test_bad_reload_keeps_previous_ring_and_logs_once(tmp_path, caplog):
    path = ring_file(tmp_path, {"compute": ["old"]})
    mm = RingMatchMaker(path, resolve=False, check_interval=0.01)
    os.replace(ring_file(tmp_path, '{"compute": ["x",\n  ]}', "t"), path)
    with caplog.at_level(logging.ERROR):
        wait_for(lambda: mm.queues("compute") and any(
            "cannot be used" in r.getMessage() for r in caplog.records),
            timeout=5, what="the reload error")
        for _ in range(20):                 # later checks: no new log line
            mm.reload_now()
            assert mm.queues("compute") == [("compute.old", "old")]
    errors_logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors_logged) == 1
    assert path in errors_logged[0].getMessage()
    assert "line 2" in errors_logged[0].getMessage()
    os.replace(ring_file(tmp_path, {"compute": ["fixed"]}, "t"), path)
    _eventually_routes_to(mm, "compute", "fixed")


def test_deleted_file_keeps_ring(tmp_path, caplog):
    path = ring_file(tmp_path, {"compute": ["a"]})
    mm = RingMatchMaker(path, resolve=False, check_interval=0.01)
    os.unlink(path)
    with caplog.at_level(logging.ERROR):
        wait_for(lambda: mm.queues("compute") and "disappeared" in caplog.text,
                 timeout=5, what="the missing-file log")
    assert mm.queues("compute") == [("compute.a", "a")]


def test_first_load_failure_raises(tmp_path):
    with pytest.raises(errors.ConfigurationError, match="does not exist"):
        RingMatchMaker(str(tmp_path / "missing.json"))
    with pytest.raises(errors.ConfigurationError, match="line 1 column"):
        RingMatchMaker(ring_file(tmp_path, "{"), resolve=False)


# -- validation with positions -----------------------------------------------

@pytest.mark.parametrize("text, line, words", [
    ('{\n  "compute": ["a"]\n  "volume": ["b"]\n}', 3,
     ["invalid JSON", "column 3", "comma"]),
    ("{\n 'scheduler': [\"a\"]\n}", 2, ["double quotes"]),
    ('[\n"compute"]', 1, ["must be a JSON object", "a list"]),
    ('{\n"compute":\n  "a"\n}', 3, ['must be a list', '"compute": ["a"]']),
    ('{"compute": [\n"a",\n 7]}', 3, ["host 7", "not a host name"]),
    ('{"compute": [\n""]}', 2, ["empty host name"]),
    ('{"compute": [\n"bad host"]}', 2, ["characters a host name cannot"]),
    ('{"compute": [\n"%s.example.com"]}' % ("x" * 64), 2, ["too long"]),
    ('{\n\n"compute.h1": ["a"]}', 3, ["not a bare topic", "'compute'"]),
    ('{\n"com pute": ["a"]}', 2, ["not a bare topic"]),
    ('{\n"fanout~compute": ["a"]}', 2, ["fanout topic", "'compute'"]),
    ('{"compute": ["a"],\n"compute": ["b"]}', 2, ["listed twice",
                                                  "first on line 1"]),
])
def test_invalid_ring_files_with_positions(tmp_path, text, line, words):
    path = ring_file(tmp_path, text)
    with pytest.raises(errors.ConfigurationError) as err:
        load_ring_file(path)
    message = str(err.value)
    assert message.startswith("%s line %d" % (path, line)), message
    for word in words:
        assert word in message, message


def test_every_problem_is_listed(tmp_path):
    text = '{\n"a": [""],\n"b": "x",\n"c.d": ["h"]\n}'
    with pytest.raises(errors.ConfigurationError) as err:
        parse_ring_text(text, "r.json")
    lines = str(err.value).splitlines()
    assert [ln.split(":")[0] for ln in lines] == [
        "r.json line 2", "r.json line 3", "r.json line 4"]


def test_not_utf8(tmp_path):
    path = tmp_path / "r.json"
    path.write_bytes(b'{"compute": ["\xff"]}')
    with pytest.raises(errors.ConfigurationError, match="UTF-8"):
        load_ring_file(str(path))


def test_hosts_carry_their_lines():
    ring = parse_ring_text('{\n"compute": [\n  "a",\n  "b"\n],\n"x": []\n}',
                           "r.json")
    assert [(e.topic, e.line, e.hosts) for e in ring.entries] == [
        ("compute", 2, (("a", 3), ("b", 4))), ("x", 6, ())]
    assert any("lists no host" in w for w in ring.warnings)


# -- name resolution (no DNS traffic: literal addresses, /etc/hosts, or a
#    resolver that answers from a table) ------------------------------------

def test_resolution_of_literals_and_localhost(tmp_path):
    mm = RingMatchMaker(ring_file(tmp_path, {"compute": ["127.0.0.1", "::1",
                                                         "localhost"]}))
    assert len(mm.queues("fanout~compute")) == 3


def _table_resolver(table: dict[str, str], calls: list[str]):
    def resolve(host: str) -> list[str]:
        calls.append(host)
        return [table[host]] if host in table else []
    return resolve


def test_unresolvable_host_fails_with_line(tmp_path):
    path = ring_file(tmp_path, '{"compute": [\n"known",\n"unknown"]}')
    calls: list[str] = []
    with pytest.raises(errors.ConfigurationError) as err:
        RingMatchMaker(path, resolver=_table_resolver({"known": "10.0.0.1"},
                                                      calls))
    assert str(err.value).startswith("%s line 3: host 'unknown' does not "
                                     "resolve" % path)
    assert "/etc/hosts" in str(err.value)
    # resolve=False skips resolution entirely
    RingMatchMaker(path, resolve=False, resolver=_table_resolver({}, calls))
    assert calls == ["known", "unknown"]


def test_reload_resolves_only_new_hosts_and_rejects_bad_ones(tmp_path, caplog):
    path = ring_file(tmp_path, {"compute": ["a", "b"]})
    calls: list[str] = []
    resolver = _table_resolver({"a": "10.0.0.1", "b": "10.0.0.2",
                                "c": "10.0.0.3"}, calls)
    mm = RingMatchMaker(path, resolver=resolver, check_interval=0.01)
    os.replace(ring_file(tmp_path, {"compute": ["a", "b", "c"]}, "t"), path)
    wait_for(lambda: len(mm.queues("fanout~compute")) == 3, timeout=5,
             what="reload to three hosts")
    assert calls == ["a", "b", "c"]
    os.replace(ring_file(tmp_path, {"compute": ["zz"]}, "t"), path)
    with caplog.at_level(logging.ERROR):
        wait_for(lambda: mm.queues("compute")
                 and "does not resolve" in caplog.text,
                 timeout=5, what="the resolution error")
    assert len(mm.queues("fanout~compute")) == 3


# -- liveness ----------------------------------------------------------------

def test_round_robin_skips_down_hosts(tmp_path):
    live = Liveness(down={"b"})
    mm = RingMatchMaker(ring_file(tmp_path, {"compute": ["a", "b", "c"]}),
                        liveness=live, resolve=False)
    got = [mm.queues("compute")[0][1] for _ in range(6)]
    assert got == ["a", "c", "a", "c", "a", "c"]
    live.down.clear()
    got = {mm.queues("compute")[0][1] for _ in range(3)}
    assert got == {"a", "b", "c"}


def test_fanout_goes_to_live_hosts_only(tmp_path):
    live = Liveness(down={"a", "c"})
    mm = RingMatchMaker(ring_file(tmp_path, {"compute": ["a", "b", "c"]}),
                        liveness=live, resolve=False)
    assert mm.queues("fanout~compute") == [("fanout~compute.b", "b")]


@pytest.mark.parametrize("topic", ["compute", "fanout~compute"])
def test_all_dead_raises_at_once(tmp_path, topic):
    live = Liveness(down={"a", "b"})
    path = ring_file(tmp_path, {"compute": ["a", "b"]})
    mm = RingMatchMaker(path, liveness=live, resolve=False)
    with pytest.raises(errors.NoLiveHostsError) as err:
        mm.queues(topic)
    assert err.value.dead_hosts == ["a", "b"]
    assert path in str(err.value) and "a, b" in str(err.value)
    assert live.asked == 2


def test_dead_hosts_of_the_liveness_source_word_the_error(tmp_path):
    class WithDeadHosts(Liveness):
        def dead_hosts(self, hosts, topic):
            assert (list(hosts), topic) == (["a", "b"], "compute")
            return ["b"]

    live = WithDeadHosts(down={"a", "b"})
    mm = RingMatchMaker(ring_file(tmp_path, {"compute": ["a", "b"]}),
                        liveness=live, resolve=False)
    with pytest.raises(errors.NoLiveHostsError) as err:
        mm.queues("compute")
    assert err.value.dead_hosts == ["b"]


def test_ring_topics_are_announced_to_the_liveness_source(tmp_path):
    class Watching(Liveness):
        watched: list[list[str]] = []

        def watch_topics(self, topics):
            self.watched.append(list(topics))

    live = Watching()
    path = ring_file(tmp_path, {"compute": ["a"], "cert": ["b"]})
    mm = RingMatchMaker(path, liveness=live, resolve=False, check_interval=0.01)
    assert live.watched == [["compute", "cert"]]
    os.replace(ring_file(tmp_path, {"volume": ["a"]}, "t"), path)
    wait_for(lambda: mm.queues("zmq_replies.a") and mm.topics() == ["volume"],
             timeout=5, what="reload")
    assert live.watched[-1] == ["volume"]


def test_with_the_real_liveness_view(tmp_path):
    """The servicegroup LivenessView fed by a static member list."""
    from nova_rpc_zmq.servicegroup.drivers.base import MemberRecord
    from nova_rpc_zmq.servicegroup.liveness import LivenessView

    class StaticMembers:
        report_interval = 3600.0

        def members(self, groups):
            return {g: [MemberRecord(group=g, member="b", up=False)] if g == "rpc_zmq_receiver"
                    else [] for g in groups}

    view = LivenessView(StaticMembers())
    try:
        mm = RingMatchMaker(ring_file(tmp_path, {"compute": ["a", "b", "c"]}),
                            liveness=view, resolve=False)
        assert {mm.queues("compute")[0][1] for _ in range(6)} == {"a", "c"}
        assert [h for _, h in mm.queues("fanout~compute")] == ["a", "c"]
    finally:
        view.close()


def test_directed_topics_ignore_liveness(tmp_path):
    live = Liveness(down={"a"})
    mm = RingMatchMaker(ring_file(tmp_path, {"compute": ["a"]}),
                        liveness=live, resolve=False)
    assert mm.queues("compute.a") == [("compute.a", "a")]
    assert live.asked == 0


def test_broken_liveness_source_fails_open(tmp_path, caplog):
    class Broken:
        def is_up(self, host, topic):
            raise RuntimeError("db down")

    mm = RingMatchMaker(ring_file(tmp_path, {"compute": ["a"]}),
                        liveness=Broken(), resolve=False)
    with caplog.at_level(logging.ERROR):
        assert mm.queues("compute") == [("compute.a", "a")]
        assert mm.queues("compute") == [("compute.a", "a")]
    assert len([r for r in caplog.records if "liveness check" in r.getMessage()]) == 1


# -- routing cost does not grow with the ring --------------------------------

def _lines_executed(fn, calls: int) -> int:
    """Python line events while running fn() ``calls`` times."""
    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    previous = sys.gettrace()         # e.g. a coverage tracer
    sys.settrace(tracer)
    try:
        for _ in range(calls):
            fn()
    finally:
        sys.settrace(previous)
    return count


@pytest.mark.parametrize("with_liveness", [False, True])
def test_routing_cost_independent_of_ring_size(tmp_path, with_liveness):
    costs = {}
    asked = {}
    for size in (10, 5000):
        hosts = ["10.%d.%d.%d" % (i >> 16, (i >> 8) & 255, i & 255)
                 for i in range(size)]
        live = Liveness() if with_liveness else None
        mm = RingMatchMaker(ring_file(tmp_path, {"compute": hosts},
                                      "r%d.json" % size),
                            liveness=live, resolve=False, check_interval=3600)
        mm.queues("compute")                      # warm up
        costs[size] = (_lines_executed(lambda: mm.queues("compute"), 200),
                       _lines_executed(lambda: mm.queues("compute.h"), 200))
        asked[size] = live.asked if live else 0
    assert costs[10] == costs[5000]
    if with_liveness:
        assert asked[10] == asked[5000] == 201    # one is_up per call


# -- the example ring files --------------------------------------------------

@pytest.mark.parametrize("name", ["all-in-one.json",
                                  "controller-computes.json"])
def test_example_ring_files_load(name):
    mm = RingMatchMaker(str(RINGFILES / name), resolve=False)
    assert {"compute", "volume", "scheduler", "network", "console", "cert",
            "consoleauth", "conductor"} <= set(mm.topics())


def test_all_in_one_resolves_everywhere():
    mm = RingMatchMaker(str(RINGFILES / "all-in-one.json"))
    assert mm.queues("compute") == [("compute.127.0.0.1", "127.0.0.1")]


def test_controller_computes_layout():
    mm = RingMatchMaker(str(RINGFILES / "controller-computes.json"),
                        resolve=False)
    for topic in ("scheduler", "network", "console", "cert", "consoleauth",
                  "conductor"):
        assert mm.queues("fanout~" + topic) == [
            ("fanout~%s.controller1" % topic, "controller1")]
    for topic in ("compute", "volume"):
        assert [h for _, h in mm.queues("fanout~" + topic)] == [
            "compute1", "compute2", "compute3"]


def test_broker_matchmaker_sends_bare_and_fanout_to_the_broker(tmp_path):
    from nova_rpc_zmq.matchmaker.broker import BROKER, BrokerMatchMaker
    path = ring_file(tmp_path, {"compute": ["127.0.0.1"], "api": ["127.0.0.9"]})
    settings = config.load_settings(config.CONF, rpc_zmq_matchmaker="broker",
                                    rpc_zmq_broker_ip="10.0.0.5",
                                    matchmaker_ringfile=path,
                                    rpc_zmq_host="me")
    mm = get_matchmaker(settings)
    try:
        assert type(mm) is BrokerMatchMaker
        assert mm.queues("compute") == [("compute", BROKER)]
        assert mm.queues("fanout~compute") == [("fanout~compute", BROKER)]
        assert mm.queues("compute.h1") == [("compute.h1", "h1")]
        assert mm.queues("zmq_replies.h2") == [("zmq_replies.h2", "h2")]
        # replies only to this host and the ring's hosts, never the broker
        assert mm.knows_host("me") and mm.knows_host("127.0.0.9")
        assert not mm.knows_host("stranger") and not mm.knows_host(BROKER)
    finally:
        mm.close()
    with pytest.raises(errors.ConfigurationError, match="rpc_zmq_broker_ip"):
        config.load_settings(config.CONF, rpc_zmq_matchmaker="broker")
