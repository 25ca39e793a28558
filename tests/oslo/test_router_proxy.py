"""The router proxy (``nova-rpc-zmq-proxy``) and the driver's
``use_router_proxy = true``: real proxies started from their command line
with a configuration file naming a real Redis, servers, listeners and
callers through oslo.messaging's public API only."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import oslo_messaging
import pytest
import zmq

from nova_rpc_zmq import metrics
from nova_rpc_zmq.oslo_driver import options
from nova_rpc_zmq.testing import Proc, child_env, free_port, scaled, wait_for
from tests.oslo.omsupport import Endpoint

PROXY = "nova_rpc_zmq_proxy_"
FORWARDED = PROXY + "forwarded_backend_total"


def proxy_script() -> list[str]:
    """The installed console script (its module when not installed)."""
    script = os.path.join(os.path.dirname(sys.executable),
                          "nova-rpc-zmq-proxy")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "nova_rpc_zmq.cli.proxy"]


def write_conf(path: Path, url: str, zmq_opts: str = "",
               proxy_opts: str = "host = 127.0.0.1\n") -> str:
    """A configuration file as the seed's "Router Proxy" example has it."""
    path.write_text(
        "[DEFAULT]\ntransport_url = %s\n\n[oslo_messaging_zmq]\n"
        "use_pub_sub = false\nzmq_target_expire = 30\n"
        "zmq_target_update = 10\n%s\n[zmq_proxy_opt]\n%s"
        % (url, zmq_opts, proxy_opts))
    return str(path)


class RunningProxy:
    """A proxy process and what it printed when it started."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        line = next(line for line in proc.output().splitlines()
                    if "forwarding" in line)
        words = line.split()
        self.frontend = int(words[words.index("frontend") + 1])
        self.backend = int(words[words.index("backend") + 1])
        self.health = int(words[words.index("health") + 1]) \
            if "health" in words else 0

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics"
                                    % self.health, timeout=5) as page:
            return metrics.parse(page.read().decode())

    def forwarded(self) -> float:
        return self.metrics()[FORWARDED]

    def dropped(self, reason: str) -> float:
        return self.metrics()['%sdropped_total{reason="%s"}'
                              % (PROXY, reason)]


@pytest.fixture
def redis_url(redis_server: Any) -> str:
    return "zmq+redis://127.0.0.1:%d" % redis_server.port


@pytest.fixture
def proxy_factory(tmp_path: Path, redis_url: str
                  ) -> Iterator[Callable[..., RunningProxy]]:
    """``start(*extra_args, conf=None)`` -> a proxy started from its
    command line with a config file naming the test's Redis, once it
    forwards; stopped (SIGTERM) after the test."""
    procs: list[Proc] = []
    names = itertools.count(1)

    def start(*extra: str, conf: str | None = None,
              health: bool = True) -> RunningProxy:
        n = next(names)
        conf = conf or write_conf(tmp_path / ("proxy%d.conf" % n), redis_url)
        argv = proxy_script() + ["--config-file", conf, *extra]
        if health:
            argv += ["--health-port", str(free_port())]
        proc = Proc("proxy%d" % n, argv, str(tmp_path / ("proxy%d.out" % n)),
                    env=child_env())
        procs.append(proc)
        proc.wait_for_line("forwarding", scaled(30))
        return RunningProxy(proc)

    yield start
    for proc in procs:
        proc.stop()


def rpc_transport(transport_factory: Any, url: str, **kw: Any) -> Any:
    return transport_factory(url, use_router_proxy=True,
                             zmq_target_expire=30, zmq_target_update=10, **kw)


@contextlib.contextmanager
def serving(transport: Any, topic: str, name: str) -> Iterator[Endpoint]:
    endpoint = Endpoint(name)
    server = oslo_messaging.get_rpc_server(
        transport, oslo_messaging.Target(topic=topic, server=name),
        [endpoint], executor="threading")
    server.start()
    try:
        yield endpoint
    finally:
        server.stop()
        server.wait()


class Collector:
    """A notification endpoint that keeps the payloads it gets."""

    def __init__(self) -> None:
        self.got: list[Any] = []

    def info(self, ctxt: dict, publisher_id: str, event_type: str,
             payload: Any, metadata: dict) -> None:
        self.got.append(payload)


@contextlib.contextmanager
def notified(transport: Any, topic: str, pool: str) -> Iterator[Collector]:
    endpoint = Collector()
    listener = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=topic)], [endpoint],
        executor="threading", pool=pool)
    listener.start()
    try:
        yield endpoint
    finally:
        listener.stop()
        listener.wait()


def client(transport: Any, topic: str, timeout: float = 10,
           **target: Any) -> Any:
    return oslo_messaging.get_rpc_client(
        transport, oslo_messaging.Target(topic=topic, **target),
        timeout=scaled(timeout))


def dispatch_lines(proxy: RunningProxy) -> int:
    return sum(1 for line in proxy.proc.output().splitlines()
               if "frontend -> backend" in line)


def test_calls_casts_directed_fanout_notifications_through_one_proxy(
        proxy_factory: Any, transport_factory: Any, redis_url: str) -> None:
    proxy = proxy_factory("--debug")
    servers = [rpc_transport(transport_factory, redis_url) for _ in range(2)]
    caller = rpc_transport(transport_factory, redis_url)
    with serving(servers[0], "px", "a") as a, \
            serving(servers[1], "px", "b") as b:
        rpc = client(caller, "px")
        # calls: round robin over both servers, each answer its own
        assert sorted(rpc.call({}, "whoami") for _ in range(4)) == \
            ["a", "a", "b", "b"]
        assert [rpc.call({}, "echo", value=i) for i in range(20)] == \
            list(range(20))
        assert client(caller, "px", server="b").call({}, "whoami") == "b"
        with pytest.raises(ValueError, match="bad input"):
            rpc.call({}, "boom", text="bad input")
        for n in range(4):
            rpc.cast({}, "record", value=n)
        client(caller, "px", fanout=True).cast({}, "record", value="all")
        wait_for(lambda: len(a.casts) + len(b.casts) == 6, 10, what="casts")
        assert len(a.casts) == len(b.casts) == 3  # round robin + fanout
        assert "all" in a.casts and "all" in b.casts
        # backend: two servers and the caller's reply socket; frontend:
        # the caller and both servers (their replies)
        values = proxy.metrics()
        assert values[PROXY + 'peers{side="backend"}'] == 3
        assert values[PROXY + 'peers{side="frontend"}'] == 3
    # notifications: one listener of each pool gets each notification
    listeners = [transport_factory(redis_url, notification=True,
                                   use_router_proxy=True) for _ in range(3)]
    notifier = oslo_messaging.Notifier(
        transport_factory(redis_url, notification=True,
                          use_router_proxy=True),
        publisher_id="test", driver="messagingv2", topics=["pxn"])
    with notified(listeners[0], "pxn", "p1") as p1a, \
            notified(listeners[1], "pxn", "p1") as p1b, \
            notified(listeners[2], "pxn", "p2") as p2:
        for n in range(4):
            notifier.info({}, "thing.happened", {"n": n})
        wait_for(lambda: len(p1a.got) + len(p1b.got) == 4 and len(p2.got)
                 == 4, 10, what="notifications in both pools")
        assert sorted(x["n"] for x in p1a.got + p1b.got) == [0, 1, 2, 3]
    # --debug: a line per message forwarded
    forwarded = proxy.forwarded()
    assert forwarded >= 40
    assert dispatch_lines(proxy) == forwarded


def test_three_proxies_share_the_traffic_and_one_killed_is_left(
        proxy_factory: Any, transport_factory: Any, redis_url: str) -> None:
    proxies = [proxy_factory() for _ in range(3)]
    servers = [rpc_transport(transport_factory, redis_url) for _ in range(2)]
    caller = rpc_transport(transport_factory, redis_url)
    with serving(servers[0], "ha", "a") as a, \
            serving(servers[1], "ha", "b") as b:
        rpc = client(caller, "ha", timeout=3)
        assert [rpc.call({}, "echo", value=i) for i in range(60)] == \
            list(range(60))
        counts = [p.forwarded() for p in proxies]
        assert all(c >= 10 for c in counts), counts  # requests and replies
        assert sum(dispatch_lines(p) for p in proxies) == 0  # no --debug
        results: list[tuple[float, int, Any]] = []
        stop = threading.Event()

        def traffic() -> None:
            for i in itertools.count():
                if stop.is_set() or i > 100000:
                    return
                started = time.monotonic()
                try:
                    got: Any = rpc.call({}, "echo", value=i)
                except Exception as exc:  # noqa: BLE001 - counted below
                    got = exc
                results.append((started, i, got))
                rpc.cast({}, "record", value=i)

        worker = threading.Thread(target=traffic)
        worker.start()
        try:
            wait_for(lambda: len(results) > 50, 10, what="traffic")
            proxies[1].proc.stop(signal.SIGKILL)
            killed = time.monotonic()
            wait_for(lambda: results and results[-1][0] > killed
                     + scaled(4), 30, what="traffic after the kill")
        finally:
            stop.set()
            worker.join(scaled(30))
        assert not worker.is_alive()
        failed = [(started - killed, got) for started, _, got in results
                  if isinstance(got, Exception)]
        print("calls %d, failed %d (started at %s s after the kill: %s)"
              % (len(results), len(failed),
                 ", ".join("%.2f" % t for t, _ in failed),
                 {type(got).__name__ for _, got in failed}))
        # every call that returned has its own answer
        answered = [(i, got) for _, i, got in results
                    if not isinstance(got, Exception)]
        assert all(i == got for i, got in answered)
        # within a second of the kill, every call works again
        late = [(i, got) for started, i, got in results
                if started > killed + scaled(1)]
        assert late and all(i == got for i, got in late), \
            [x for x in late if x[0] != x[1]][:5]
        # casts sent after that all arrive, none twice
        sent_late = {i for i, _ in late}
        wait_for(lambda: sent_late <= set(a.casts) | set(b.casts), 10,
                 what="every cast sent after the kill")
        casts = a.casts + b.casts
        assert len(casts) == len(set(casts))
        survivors = [proxies[0].forwarded(), proxies[2].forwarded()]
        assert all(now > before for now, before
                   in zip(survivors, (counts[0], counts[2])))


def test_a_malformed_message_is_counted_dropped_and_the_proxy_goes_on(
        proxy_factory: Any, transport_factory: Any, redis_url: str) -> None:
    proxy = proxy_factory()
    ctx = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect("tcp://127.0.0.1:%d" % proxy.frontend)
    try:
        raw.send_multipart([b"only one frame"])
        raw.send_multipart([b"x" * 300, b"body"])
        raw.send_multipart([b"nobody-is-here", b"body"])
        raw.send_multipart([b"", b"body"])
        wait_for(lambda: proxy.dropped("too_few_frames") == 1
                 and proxy.dropped("bad_routing_id") == 2
                 and proxy.dropped("unroutable") == 1, 10,
                 what="the drops counted")
    finally:
        raw.close()
        ctx.term()
    server = rpc_transport(transport_factory, redis_url)
    caller = rpc_transport(transport_factory, redis_url)
    with serving(server, "after", "s"):
        assert client(caller, "after").call({}, "echo", value=7) == 7
    assert "dropped a message from frontend peer" in proxy.proc.output()


def test_a_server_gone_without_unregistering_costs_a_message(
        proxy_factory: Any, transport_factory: Any, redis_url: str,
        redis_server: Any) -> None:
    from nova_rpc_zmq.oslo_driver.redis_registry import RedisRegistry
    proxy = proxy_factory()
    server = rpc_transport(transport_factory, redis_url)
    caller = rpc_transport(transport_factory, redis_url)
    import redis
    stale_member = "127.0.0.1~0123456789abcdef"
    registry_ = RedisRegistry(redis.Redis(port=redis_server.port,
                                          decode_responses=True), "test")
    registry_.register("rpc/openstack/stale", stale_member, 60)
    try:
        with serving(server, "stale", "alive") as alive:
            rpc = client(caller, "stale")
            # round robin: the first or the second cast goes to the stale
            # member, is dropped, and the caller is told
            rpc.cast({}, "record", value=0)
            rpc.cast({}, "record", value=1)
            wait_for(lambda: proxy.dropped("unroutable") == 1, 10,
                     what="the cast to the stale member dropped")
            assert proxy.metrics()[PROXY + "notices_sent_total"] == 1
            for n in range(2, 40):
                rpc.cast({}, "record", value=n)
            wait_for(lambda: len(alive.casts) == 39, 10, what="the others")
            lost = proxy.dropped("unroutable")
            # once told, the caller tries the stale member last: calls all
            # go to the live server at once
            assert [rpc.call({}, "echo", value=n) for n in range(20)] == \
                list(range(20))
            assert proxy.dropped("unroutable") == lost
    finally:
        registry_.close()


def test_a_proxy_started_later_joins_the_rotation(
        proxy_factory: Any, transport_factory: Any, redis_url: str) -> None:
    first = proxy_factory()
    server = rpc_transport(transport_factory, redis_url)
    caller = rpc_transport(transport_factory, redis_url)
    with serving(server, "late", "s"):
        rpc = client(caller, "late", timeout=5)
        assert rpc.call({}, "echo", value=-1) == -1
        second = proxy_factory()
        started = time.monotonic()
        n = 0
        while second.forwarded() == 0:
            assert time.monotonic() - started < scaled(10), \
                "the new proxy got no traffic"
            assert rpc.call({}, "echo", value=n) == n  # none lost meanwhile
            n += 1
        print("new proxy used after %.2f s, %d calls"
              % (time.monotonic() - started, n))
        assert first.dropped("unroutable") == second.dropped("unroutable") \
            == 0


@pytest.mark.parametrize("mode", ["threading", "eventlet"])
def test_servers_in_their_own_processes_green_or_native(
        proxy_factory: Any, transport_factory: Any, redis_url: str,
        tmp_path: Path, mode: str) -> None:
    proxy_factory()
    proxy_factory()
    procs = []
    try:
        for name in ("p1", "p2"):
            argv = [sys.executable, "-m", "tests.oslo.om_server", redis_url,
                    "procs", name, str(tmp_path), "--expire", "30",
                    "--update", "10", "--zmq", "use_router_proxy=true"] + \
                (["--eventlet"] if mode == "eventlet" else [])
            proc = Proc(name, argv, str(tmp_path / (name + ".log")),
                        env=child_env())
            procs.append(proc)
            proc.wait_for_line("READY", scaled(30))
            assert "READY %d %s" % (proc.pid, mode) in proc.output()
        caller = rpc_transport(transport_factory, redis_url)
        rpc = client(caller, "procs")
        assert sorted(rpc.call({}, "whoami") for _ in range(4)) == \
            ["p1", "p1", "p2", "p2"]
        assert client(caller, "procs", server="p2").call({}, "whoami") == "p2"
        with pytest.raises(ValueError, match="in a child"):
            rpc.call({}, "boom", text="in a child")
    finally:
        for proc in procs:
            proc.stop()
    assert all("STOPPED" in proc.output() for proc in procs)


def test_sigterm_unregisters_the_proxy(
        proxy_factory: Any, redis_server: Any, tmp_path: Path) -> None:
    import redis
    # the seed's command line, fixed ports and a log file
    log = tmp_path / "router-proxy.log"
    front, back = free_port(), free_port()
    proxy = proxy_factory("--log-file", str(log), "--host", "127.0.0.1",
                          "--frontend-port", str(front), "--backend-port",
                          str(back), health=False)
    assert (proxy.frontend, proxy.backend) == (front, back)
    client_ = redis.Redis(port=redis_server.port, decode_responses=True)
    key = "nova_rpc_zmq:oslo:proxy/router"
    member = "127.0.0.1:%d:%d" % (front, back)
    assert client_.smembers(key) == {member}
    assert proxy.proc.stop() == 0
    assert not client_.exists("%s|%s" % (key, member))
    lines = log.read_text().splitlines()
    assert any("registered %s under proxy/router" % member in line
               for line in lines)
    assert "unregistered %s from proxy/router" % member in lines[-1]


REFUSED = [flags for flags in itertools.product((False, True), repeat=3)
           if flags not in options.TOPOLOGIES]


@pytest.mark.parametrize("pub_sub,router,dynamic", REFUSED)
def test_combinations_not_available_are_refused_in_one_line(
        transport_factory: Any, pub_sub: bool, router: bool,
        dynamic: bool) -> None:
    with pytest.raises(Exception) as info:
        transport_factory("zmq://", use_pub_sub=pub_sub,
                          use_router_proxy=router,
                          use_dynamic_connections=dynamic)
    text = str(info.value)
    assert "\n" not in text
    assert "use_pub_sub = %s, use_router_proxy = %s, " \
        "use_dynamic_connections = %s" % (str(pub_sub).lower(),
                                          str(router).lower(),
                                          str(dynamic).lower()) in text
    assert "use_router_proxy = true with use_pub_sub and " \
        "use_dynamic_connections false (router proxy)" in text


def test_router_proxy_needs_a_shared_matchmaker(
        transport_factory: Any, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="zmq\\+dummy:// is one process's.*"
                                        "use zmq\\+redis://"):
        transport_factory("zmq+dummy://", use_router_proxy=True)
    # CURVE through the proxies is on offer (test_proxy_curve.py): the
    # combination is taken, and a missing key file is what fails
    with pytest.raises(Exception, match="rpc_zmq_curve_key_file"):
        transport_factory("zmq://", use_router_proxy=True,
                          rpc_zmq_curve=True,
                          rpc_zmq_curve_key_file=str(tmp_path / "none.key"))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(proxy_script() + list(args), capture_output=True,
                          text=True, timeout=scaled(60), env=child_env())


@pytest.mark.parametrize("body,expected", [
    ("[DEFAULT]\ntransport_url = zmq+redis://127.0.0.1:1\n"
     "[zmq_proxy_opts]\nfrontend_port = many\n",
     "[zmq_proxy_opts] frontend_port in {conf}"),
    ("[DEFAULT]\ntransport_url = zmq+redis://127.0.0.1:1\n"
     "[oslo_messaging_zmq]\nuse_pub_sub = false\n"
     "[zmq_proxy_opts]\npublisher_port = 50003\n",
     "publisher_port = 50003 with [oslo_messaging_zmq] use_pub_sub = false"),
    ("[DEFAULT]\ntransport_url = zmq+dummy://\n",
     "zmq+dummy:// is one process's"),
    ("[DEFAULT]\n", "[DEFAULT] transport_url is not set in {conf}"),
    ("[DEFAULT\ntransport_url = zmq://\n", "configuration file {conf}"),
])
def test_proxy_cli_names_the_file_or_option_and_the_fix(
        tmp_path: Path, body: str, expected: str) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text(body)
    done = run_cli("--config-file", str(conf))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("nova-rpc-zmq-proxy: error: ")
    assert expected.format(conf=conf) in lines[-1]


def test_proxy_cli_refusals_of_its_own_options(tmp_path: Path,
                                               redis_url: str) -> None:
    missing = tmp_path / "missing.conf"
    done = run_cli("--config-file", str(missing))
    assert done.returncode == 2
    assert "%s cannot be read" % missing in done.stderr
    conf = write_conf(tmp_path / "ok.conf", redis_url)
    for args, expected in (
            (["--local-publisher"], "--local-publisher"),
            (["--publisher-port", "50003"], "--publisher-port"),
            (["--frontend-port", "x"], "--frontend-port: invalid int")):
        done = run_cli("--config-file", conf, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert expected in done.stderr.strip().splitlines()[-1]
    # a port in use: named, with the fix
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        done = run_cli("--config-file", conf, "--frontend-port",
                       str(busy.getsockname()[1]))
    assert done.returncode == 2
    assert "choose free ports" in done.stderr


def test_oslo_messaging_zmq_proxy_is_installed_too() -> None:
    assert shutil.which("oslo-messaging-zmq-proxy",
                        path=os.path.dirname(sys.executable))


def test_a_dead_proxy_still_listed_does_not_hold_up_new_sockets(
        proxy_factory: Any, transport_factory: Any, redis_url: str) -> None:
    alive = proxy_factory(health=False)
    dead = proxy_factory(health=False)
    dead.proc.stop(signal.SIGKILL)  # its registration stays until its TTL
    server = rpc_transport(transport_factory, redis_url)
    caller = rpc_transport(transport_factory, redis_url)
    started = time.monotonic()
    with serving(server, "listed", "s"):
        assert client(caller, "listed").call({}, "echo", value=1) == 1
    # a server's and a reply socket's start: no wait for the dead one
    assert time.monotonic() - started < scaled(1.5)
    assert alive.proc.popen.poll() is None


def test_traffic_goes_on_while_redis_is_away(
        proxy_factory: Any, transport_factory: Any, redis_url: str,
        redis_server: Any) -> None:
    proxy = proxy_factory()
    server = rpc_transport(transport_factory, redis_url)
    caller = rpc_transport(transport_factory, redis_url)
    with serving(server, "noredis", "s"):
        rpc = client(caller, "noredis")
        assert rpc.call({}, "echo", value=0) == 0
        redis_server.kill()
        started = time.monotonic()
        assert [rpc.call({}, "echo", value=n) for n in range(1, 30)] == \
            list(range(1, 30))
        assert time.monotonic() - started < scaled(10)
        assert proxy.proc.popen.poll() is None
        assert proxy.metrics()[PROXY + "dropped_total{reason=\"unroutable\"}"] \
            == 0


def test_a_hung_proxy_is_left_within_a_second(
        proxy_factory: Any, transport_factory: Any, redis_url: str) -> None:
    proxies = [proxy_factory(health=False) for _ in range(3)]
    server = rpc_transport(transport_factory, redis_url)
    caller = rpc_transport(transport_factory, redis_url)
    hung = proxies[0].proc
    with serving(server, "hung", "s"):
        rpc = client(caller, "hung", timeout=3)
        assert [rpc.call({}, "echo", value=n) for n in range(30)] == \
            list(range(30))
        # SIGSTOP: its TCP connections stay open, only heartbeats tell
        os.kill(hung.pid, signal.SIGSTOP)
        try:
            stopped = time.monotonic()
            results: list[tuple[float, Any]] = []
            for n in range(100000):
                if time.monotonic() - stopped > scaled(4):
                    break
                started = time.monotonic()
                try:
                    got: Any = rpc.call({}, "echo", value=n)
                except oslo_messaging.MessagingTimeout as exc:
                    got = exc
                results.append((started - stopped, got))
        finally:
            os.kill(hung.pid, signal.SIGCONT)
    late = [got for after, got in results if after > scaled(1)]
    lost = [after for after, got in results if isinstance(got, Exception)]
    print("hung proxy: %d calls, %d timed out (started %s s after SIGSTOP)"
          % (len(results), len(lost), ", ".join("%.2f" % a for a in lost)))
    assert late and not any(isinstance(got, Exception) for got in late)
    assert len(lost) <= 2
