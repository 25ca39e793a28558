"""Fanout through PUB/SUB publisher proxies (``use_pub_sub = true`` with
``use_router_proxy = true``): real proxies and local publishers started
from their command line with a configuration file naming a real Redis,
servers and callers through oslo.messaging's public API only."""

from __future__ import annotations

import itertools
import logging
import os
import re
import signal
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import zmq

from nova_rpc_zmq.oslo_driver.pubsub import PUBLISH_ID, subscription
from nova_rpc_zmq.testing import Proc, child_env, free_port, scaled, wait_for
from tests.oslo import test_router_proxy as router_tests
from tests.oslo.test_router_proxy import (PROXY, RunningProxy, client,
                                          proxy_script, run_cli, serving,
                                          write_conf)

# the router proxy tests' fixtures: a Redis URL, proxies from the CLI
redis_url = router_tests.redis_url
proxy_factory = router_tests.proxy_factory

PUBLISHED = PROXY + "published_total"
PUB_SUB = "use_pub_sub = true\n"


def publisher_port(proxy: RunningProxy) -> int:
    """The publisher port a proxy printed when it started."""
    line = next(line for line in proxy.proc.output().splitlines()
                if "forwarding" in line or "publishing" in line)
    words = line.split()
    return int(words[words.index("publisher") + 1])


def pubsub_transport(transport_factory: Any, url: str, **kw: Any) -> Any:
    return transport_factory(url, use_router_proxy=True, use_pub_sub=True,
                             zmq_target_expire=30, zmq_target_update=10,
                             **kw)


@pytest.fixture
def publisher_factory(proxy_factory: Any, tmp_path: Path, redis_url: str
                      ) -> Callable[..., RunningProxy]:
    """``start(*extra_args)`` -> a router proxy with a publisher
    (``use_pub_sub = true`` in its file)."""
    names = itertools.count(1)

    def start(*extra: str) -> RunningProxy:
        conf = write_conf(tmp_path / ("pub%d.conf" % next(names)), redis_url,
                          PUB_SUB)
        return proxy_factory(*extra, conf=conf)

    return start


@pytest.fixture
def local_publisher(tmp_path: Path, redis_url: str
                    ) -> Iterator[Callable[[], RunningProxy]]:
    """``start()`` -> a local publisher (``--local-publisher``) on a free
    port, started once it publishes; stopped after the test."""
    procs: list[Proc] = []

    def start() -> RunningProxy:
        conf = write_conf(tmp_path / "local.conf", redis_url, PUB_SUB)
        argv = proxy_script() + [
            "--local-publisher", "--config-file", conf, "--host",
            "127.0.0.1", "--publisher-port", str(free_port()),
            "--health-port", str(free_port())]
        proc = Proc("local", argv, str(tmp_path / "local.out"),
                    env=child_env())
        procs.append(proc)
        proc.wait_for_line("publishing", scaled(30))
        running = RunningProxy.__new__(RunningProxy)
        running.proc = proc
        words = next(line for line in proc.output().splitlines()
                     if "publishing" in line).split()
        running.health = int(words[words.index("health") + 1])
        return running

    yield start
    for proc in procs:
        proc.stop()


class Fanouts:
    """Servers of one topic, each recording what its endpoint got."""

    def __init__(self, endpoints: list[Any]) -> None:
        self.endpoints = endpoints

    def got(self, value: Any) -> list[int]:
        """How many times each server got ``value``."""
        return [e.casts.count(value) for e in self.endpoints]

    def wait_all(self, values: list[Any], what: str,
                 timeout: float = 10) -> None:
        wait_for(lambda: all(min(self.got(v)) >= 1 for v in values),
                 timeout, what=what)

    def no_duplicates(self) -> None:
        for endpoint in self.endpoints:
            assert len(endpoint.casts) == len(set(endpoint.casts)), \
                endpoint.name


def serve_all(stack: ExitStack, transports: list[Any], topic: str
              ) -> Fanouts:
    return Fanouts([stack.enter_context(serving(t, topic, "s%d" % n))
                    for n, t in enumerate(transports)])


def test_one_publisher_calls_casts_and_each_fanout_once(
        publisher_factory: Any, transport_factory: Any, redis_url: str
        ) -> None:
    port = free_port()
    proxy = publisher_factory("--publisher-port", str(port))
    assert publisher_port(proxy) == port
    servers = [pubsub_transport(transport_factory, redis_url)
               for _ in range(3)]
    caller = pubsub_transport(transport_factory, redis_url)
    with ExitStack() as stack:
        fan = serve_all(stack, servers, "ps")
        rpc = client(caller, "ps")
        # calls, casts and directed calls still go through the router
        assert sorted(rpc.call({}, "whoami") for _ in range(6)) == \
            ["s0", "s0", "s1", "s1", "s2", "s2"]
        assert client(caller, "ps", server="s1").call({}, "whoami") == "s1"
        with pytest.raises(ValueError, match="bad input"):
            rpc.call({}, "boom", text="bad input")
        for n in range(3):
            rpc.cast({}, "record", value=n)
        fanout = client(caller, "ps", fanout=True)
        values = ["all%d" % n for n in range(10)]
        for value in values:
            fanout.cast({}, "record", value=value)
        fan.wait_all(values, "every fanout at every server")
        wait_for(lambda: sum(len(e.casts) for e in fan.endpoints) == 33, 10,
                 what="the casts")
        assert all(fan.got(v) == [1, 1, 1] for v in values)
        fan.no_duplicates()
        metrics = proxy.metrics()
        # one message per fanout, published once; three subscribers
        assert metrics[PUBLISHED] == 10
        # every proxy metric the README names is there (those of CURVE
        # only with CURVE on: tests/oslo/test_proxy_curve.py)
        readme = os.path.join(os.path.dirname(__file__), "..", "..",
                              "README.md")
        with open(readme) as f:
            named = {name for name in re.findall(
                r"\b(nova_rpc_zmq_proxy_[a-z0-9_]+)", f.read())
                if not name.startswith("nova_rpc_zmq_proxy_curve_")}
        assert named
        assert named <= {name.partition("{")[0] for name in metrics}, \
            sorted(named)
        assert metrics[PROXY + 'peers{side="publisher"}'] == 3
        assert metrics[PROXY + 'dropped_total{reason="no_publisher"}'] == 0
    # registered under both keys while it runs, under neither once stopped
    import redis
    keys = redis.Redis(port=int(redis_url.rsplit(":", 1)[1]),
                       decode_responses=True)
    published = "127.0.0.1:%d:%d" % (proxy.frontend, port)
    routed = "127.0.0.1:%d:%d" % (proxy.frontend, proxy.backend)
    assert keys.smembers("nova_rpc_zmq:oslo:proxy/publisher") == {published}
    assert keys.smembers("nova_rpc_zmq:oslo:proxy/router") == {routed}
    assert proxy.proc.stop() == 0
    assert not keys.exists("nova_rpc_zmq:oslo:proxy/publisher|" + published)
    assert not keys.exists("nova_rpc_zmq:oslo:proxy/router|" + routed)
    keys.close()


def test_a_bad_publish_request_is_counted_dropped_and_the_proxy_goes_on(
        publisher_factory: Any, proxy_factory: Any, transport_factory: Any,
        redis_url: str) -> None:
    proxy = publisher_factory()
    plain = proxy_factory()  # no publisher: use_pub_sub = false
    ctx = zmq.Context()
    raws = []
    try:
        for target in (proxy, plain):
            raw = ctx.socket(zmq.DEALER)
            raw.setsockopt(zmq.LINGER, 0)
            raw.connect("tcp://127.0.0.1:%d" % target.frontend)
            raws.append(raw)
        raws[0].send_multipart([PUBLISH_ID, b"no end", b"body"])
        raws[0].send_multipart([PUBLISH_ID, b"x" * 2000 + b"\x00", b"b"])
        raws[0].send_multipart([PUBLISH_ID, subscription("rpc/a/b")])
        raws[1].send_multipart([PUBLISH_ID, subscription("rpc/a/b"), b"b"])
        dropped = PROXY + 'dropped_total{reason="%s"}'
        wait_for(lambda: proxy.metrics()[dropped % "bad_subscription"] == 3
                 and plain.metrics().get(dropped % "no_publisher") == 1, 10,
                 what="the drops counted")
    finally:
        for raw in raws:
            raw.close()
        ctx.term()
    assert proxy.metrics()[PUBLISHED] == 0
    servers = [pubsub_transport(transport_factory, redis_url)
               for _ in range(2)]
    caller = pubsub_transport(transport_factory, redis_url)
    with ExitStack() as stack:
        fan = serve_all(stack, servers, "after")
        client(caller, "after", fanout=True).cast({}, "record", value="x")
        fan.wait_all(["x"], "the fanout after the bad ones")
    assert proxy.metrics()[PUBLISHED] == 1
    assert "dropped a message from publisher" in proxy.proc.output()


def test_three_publishers_no_duplicates_and_one_killed_is_left(
        publisher_factory: Any, transport_factory: Any, redis_url: str
        ) -> None:
    proxies = [publisher_factory() for _ in range(3)]
    servers = [pubsub_transport(transport_factory, redis_url)
               for _ in range(3)]
    caller = pubsub_transport(transport_factory, redis_url)
    with ExitStack() as stack:
        fan = serve_all(stack, servers, "ha3")
        fanout = client(caller, "ha3", fanout=True)
        # the first fanout connects the caller to the publishers; the
        # ones sent after it has arrived are spread over all three
        fanout.cast({}, "record", value=-1)
        fan.wait_all([-1], "the first fanout")
        values = list(range(60))
        for value in values:
            fanout.cast({}, "record", value=value)
        fan.wait_all(values, "60 fanouts at 3 servers")
        assert all(fan.got(v) == [1, 1, 1] for v in [-1] + values)
        published = [p.metrics()[PUBLISHED] for p in proxies]
        assert sum(published) == 61 and min(published) >= 15, published
        # kill -9 one publisher while fanouts go on
        sent: list[tuple[float, int]] = []
        stop = threading.Event()

        def traffic() -> None:
            for i in range(1000, 1000000):
                if stop.is_set():
                    return
                started = time.monotonic()
                fanout.cast({}, "record", value=i)
                sent.append((started, i))
                time.sleep(0.01)

        worker = threading.Thread(target=traffic)
        worker.start()
        try:
            wait_for(lambda: len(sent) > 30, 10, what="traffic")
            proxies[1].proc.stop(signal.SIGKILL)
            killed = time.monotonic()
            wait_for(lambda: sent and sent[-1][0] > killed + scaled(3), 30,
                     what="traffic after the kill")
        finally:
            stop.set()
            worker.join(scaled(30))
        assert not worker.is_alive()
        late = [i for started, i in sent if started > killed + scaled(1)]
        fan.wait_all(late, "every fanout sent 1 s after the kill")
        lost = [i for started, i in sent if min(fan.got(i)) == 0]
        print("fanouts %d, %d sent after 1 s; missed by a server: %d (sent "
              "at %s s after the kill)" % (
                  len(sent), len(late), len(lost),
                  ", ".join("%.2f" % (t - killed) for t, i in sent
                            if i in lost)))
        fan.no_duplicates()


def test_a_publisher_started_later_is_subscribed_to_and_used(
        publisher_factory: Any, transport_factory: Any, redis_url: str
        ) -> None:
    first = publisher_factory()
    servers = [pubsub_transport(transport_factory, redis_url)
               for _ in range(2)]
    caller = pubsub_transport(transport_factory, redis_url)
    with ExitStack() as stack:
        fan = serve_all(stack, servers, "later")
        fanout = client(caller, "later", fanout=True)
        fanout.cast({}, "record", value=-1)
        fan.wait_all([-1], "the first fanout")
        second = publisher_factory()
        # the servers follow the matchmaker's list: subscribed within ~1 s
        wait_for(lambda: second.metrics()[PROXY + 'peers{side="publisher"}']
                 == 2, 10, what="both servers subscribed to the new one")
        # the caller uses it once it has settled (PROXY_SETTLE)
        values: list[int] = []

        def both_used() -> bool:
            values.append(len(values))
            fanout.cast({}, "record", value=values[-1])
            return second.metrics()[PUBLISHED] >= 3
        wait_for(both_used, 15, what="fanouts through the new publisher")
        fan.wait_all(values, "every fanout")
        assert all(fan.got(v) == [1, 1] for v in values)
        assert first.metrics()[PUBLISHED] + second.metrics()[PUBLISHED] \
            == len(values) + 1


def test_a_local_publisher_and_subscribe_on(
        publisher_factory: Any, local_publisher: Any, transport_factory: Any,
        redis_url: str) -> None:
    central = publisher_factory()
    local = local_publisher()
    # the local publisher subscribes to the central one from the matchmaker
    wait_for(lambda: local.metrics()[PROXY + 'peers{side="central"}'] == 1,
             10, what="the local publisher connected to the central one")
    wait_for(lambda: central.metrics()[PROXY + 'peers{side="publisher"}']
             == 1, 10, what="the local publisher subscribed")
    on = ["localhost:%d" % publisher_port(local)]
    servers = [pubsub_transport(transport_factory, redis_url,
                                subscribe_on=on) for _ in range(2)]
    caller = pubsub_transport(transport_factory, redis_url)
    with ExitStack() as stack:
        fan = serve_all(stack, servers, "loc")
        values = ["v%d" % n for n in range(5)]
        fanout = client(caller, "loc", fanout=True)
        for value in values:
            fanout.cast({}, "record", value=value)
        fan.wait_all(values, "the fanouts through the local publisher")
        assert all(fan.got(v) == [1, 1] for v in values)
        fan.no_duplicates()
        # subscribe_on wins: the servers are the local publisher's
        # subscribers, the central one has only the local publisher
        assert central.metrics()[PROXY + 'peers{side="publisher"}'] == 1
        values_local = local.metrics()
        assert values_local[PROXY + 'peers{side="publisher"}'] == 2
        assert values_local[PUBLISHED] == 5
        assert values_local[PROXY + "received_central_total"] == 5
        assert central.metrics()[PUBLISHED] == 5


def test_proxies_without_publisher_one_error_and_fanout_still_arrives(
        proxy_factory: Any, transport_factory: Any, redis_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    proxy = proxy_factory()  # use_pub_sub = false: no publisher
    servers = [pubsub_transport(transport_factory, redis_url)
               for _ in range(2)]
    caller = pubsub_transport(transport_factory, redis_url)
    with ExitStack() as stack, caplog.at_level(logging.ERROR):
        fan = serve_all(stack, servers, "mis")
        fanout = client(caller, "mis", fanout=True)
        for n in range(3):
            fanout.cast({}, "record", value=n)
        fan.wait_all([0, 1, 2], "the fanouts through the router proxy")
        assert all(fan.got(v) == [1, 1] for v in (0, 1, 2))
    errors = [r.getMessage() for r in caplog.records
              if "no publisher proxy is registered" in r.getMessage()]
    assert len(errors) == 1, errors
    assert "use_pub_sub = true here" in errors[0]
    assert "proxies run with use_pub_sub = false" in errors[0]
    assert "127.0.0.1:%d:%d" % (proxy.frontend, proxy.backend) in errors[0]


def test_proxy_cli_refuses_publisher_settings_that_disagree(
        tmp_path: Path, redis_url: str) -> None:
    plain = write_conf(tmp_path / "plain.conf", redis_url)
    pubsub = write_conf(tmp_path / "pubsub.conf", redis_url, PUB_SUB)
    for conf, args, expected in (
            (plain, ["--publisher-port", "50003"],
             "--publisher-port / [zmq_proxy_opts] publisher_port = 50003 "
             "with [oslo_messaging_zmq] use_pub_sub = false"),
            (plain, ["--local-publisher", "--publisher-port", "60001"],
             "--local-publisher with [oslo_messaging_zmq] use_pub_sub = "
             "false"),
            (pubsub, ["--local-publisher"],
             "--local-publisher without --publisher-port")):
        done = run_cli("--config-file", conf, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert expected in done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("green", [False, True], ids=["native", "eventlet"])
def test_servers_in_their_own_processes_get_each_fanout_once(
        publisher_factory: Any, transport_factory: Any, redis_url: str,
        tmp_path: Path, green: bool) -> None:
    proxies = [publisher_factory() for _ in range(2)]
    record_dir = tmp_path / "casts"
    record_dir.mkdir()
    procs = []
    try:
        for name in ("p1", "p2"):
            argv = [sys.executable, "-m", "tests.oslo.om_server", redis_url,
                    "own", name, str(record_dir), "--expire", "30",
                    "--update", "10", "--zmq", "use_router_proxy=true",
                    "--zmq", "use_pub_sub=true"]
            proc = Proc(name, argv + (["--eventlet"] if green else []),
                        str(tmp_path / ("%s.log" % name)), env=child_env())
            procs.append(proc)
            proc.wait_for_line("READY", scaled(30))
            assert ("eventlet" in proc.output()) == green
        caller = pubsub_transport(transport_factory, redis_url)
        fanout = client(caller, "own", fanout=True)
        for n in range(20):
            fanout.cast({}, "record", value=n)
        wait_for(lambda: len(os.listdir(record_dir)) >= 40, 15,
                 what="20 fanouts at both servers")
        assert sum(p.metrics()[PUBLISHED] for p in proxies) == 20
        for proc in procs:
            assert proc.stop() == 0
            assert "STOPPED" in proc.output()
        got = {}
        for name in os.listdir(record_dir):
            server = name.rsplit(".", 1)[0]
            got.setdefault(server, []).append(
                (record_dir / name).read_text())
        assert {k: sorted(v, key=int) for k, v in got.items()} == \
            {k: [str(n) for n in range(20)] for k in ("p1", "p2")}
    finally:
        for proc in procs:
            proc.stop()


def test_subscriptions_and_subscribe_on_entries() -> None:
    from nova_rpc_zmq.oslo_driver.pubsub import parse_subscribe_on
    from nova_rpc_zmq.proxy.publisher import bad_subscription
    assert subscription("rpc/nova/compute") == b"rpc/nova/compute\x00"
    # a prefix ends with the zero byte: compute does not match computer
    assert not subscription("rpc/nova/computer").startswith(
        subscription("rpc/nova/compute"))
    assert bad_subscription([subscription("rpc/a/b"), b"body"]) is None
    assert bad_subscription([b"x\x00"]) is not None
    assert bad_subscription([b"no end", b"body"]) is not None
    assert parse_subscribe_on(["localhost:60001", " host-2:50003"]) == \
        ["tcp://localhost:60001", "tcp://host-2:50003"]
    for bad in ("localhost", ":60001", "host:0", "host:port"):
        with pytest.raises(ValueError, match="subscribe_on entry"):
            parse_subscribe_on([bad])


def test_dynamic_connections_with_pub_sub_the_guides_recommended_mix(
        publisher_factory: Any, transport_factory: Any, redis_url: str
        ) -> None:
    """use_pub_sub + use_dynamic_connections, no router proxy: calls and
    casts go straight to the servers over a connection each, fanout once
    to a publisher proxy, which every server gets once."""
    proxy = publisher_factory()

    def transport() -> Any:
        return transport_factory(redis_url, use_pub_sub=True,
                                 use_dynamic_connections=True,
                                 zmq_linger=1, zmq_target_expire=30,
                                 zmq_target_update=10)

    servers = [transport() for _ in range(3)]
    caller = transport()
    with ExitStack() as stack:
        fan = serve_all(stack, servers, "mix")
        rpc = client(caller, "mix")
        assert sorted(rpc.call({}, "whoami") for _ in range(3)) == \
            ["s0", "s1", "s2"]
        forwarded = proxy.metrics()[PROXY + "forwarded_backend_total"]
        assert forwarded == 0  # calls did not go through the proxy
        fanout = client(caller, "mix", fanout=True)
        values = ["mix%d" % n for n in range(5)]
        for value in values:
            fanout.cast({}, "record", value=value)
        fan.wait_all(values, "every fanout at every server")
        fan.no_duplicates()
        assert proxy.metrics()[PUBLISHED] == 5
