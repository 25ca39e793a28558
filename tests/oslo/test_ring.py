"""``transport_url = zmq+ring://`` across two hosts (127.0.0.1 and
127.0.0.2, each with its own receiver, IPC directory and nova.conf, one
ring file): oslo.messaging clients and servers on the Nova-era topology,
and the rolling upgrade both ways, a Nova-era caller (its own process and
``cfg.CONF``) reaching an oslo.messaging ``RPCServer`` and an ``RPCClient``
reaching a Nova-era consumer, with replies, remote errors and timeouts.

Also run as ``python -m tests.oslo.test_ring ROLE ...`` for the processes
of a host:

* ``server CONF NAME RECORD_DIR TOPIC [--eventlet]``: an oslo.messaging
  RPC server on ``zmq+ring://`` (target ``TOPIC``, server = the host's
  rpc_zmq_host) exposing ``omsupport.Endpoint(NAME)``, in native or green
  threads; prints READY and its concurrency, stops on SIGTERM;
* ``listener CONF NAME RECORD_DIR``: an oslo.messaging notification
  listener on ``zmq+ring://`` (``ringnotes``, ``info``; records as
  ``om_host.NotificationRecorder`` with pool ``ring``);
* ``legacy-caller CONF``: a Nova-era caller, ``impl_zmq.call(cfg.CONF, ...)``
  on ``compute``; prints one JSON line of what it got.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and "--eventlet" in sys.argv:
    import eventlet
    eventlet.monkey_patch()

import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Iterator  # noqa: E402

import oslo_messaging  # noqa: E402
import pytest  # noqa: E402

from nova_rpc_zmq import impl_zmq  # noqa: E402
from nova_rpc_zmq.testing import LocalHost, Proc, free_port  # noqa: E402
from nova_rpc_zmq.testing.hosts import loopback_address  # noqa: E402
from tests.support import scaled, wait_for  # noqa: E402

#: The oslo.messaging servers' topic, as Nova's compute service names it.
TOPIC = "compute"
#: A topic whose server is stopped during a test.
GONE = "gone"
#: The Nova-era consumer's topic (tests/functional/novaera/service.py).
NOVAERA = "novaera"
#: The topic of a server in green threads.
GREEN = "green"
#: A topic no host of the ring serves.
NOWHERE = "nowhere"
#: The notification topic (not ``notifications``: the Nova-era service of
#: host 2 consumes ``notifications-info`` and would share them).
NOTIFICATIONS = "ringnotes"
#: The pool name in the listener's record files (zmq+ring:// has no pools).
POOL = "ring"
URL = "zmq+ring://"


def ring_conf(conf_path: str) -> Any:
    """A ConfigOpts as an oslo.messaging service has it, parsed from a
    host's nova.conf (the legacy options in [DEFAULT], the ring file)."""
    from tests.oslo.omsupport import service_conf
    return service_conf(["--config-file", conf_path], project="nova")


def serve(conf_path: str, name: str, record_dir: str, topic: str,
          green: bool = False) -> None:
    """The ``server`` role (see the module docstring)."""
    from tests.oslo.omsupport import Endpoint
    conf = ring_conf(conf_path)
    transport = oslo_messaging.get_rpc_transport(conf, URL)
    host = transport._driver._ring.settings.rpc_zmq_host
    server = oslo_messaging.get_rpc_server(
        transport, oslo_messaging.Target(topic=topic, server=host),
        [Endpoint(name, record_dir)],
        executor="eventlet" if green else "threading")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    server.start()
    handler = transport._driver._ring.legacy().handler.name
    print("READY %d %s" % (os.getpid(), handler), flush=True)
    while not done.wait(0.1):
        pass
    server.stop()
    server.wait()
    transport.cleanup()
    impl_zmq.cleanup()
    print("STOPPED", flush=True)


def listen(conf_path: str, name: str, record_dir: str) -> None:
    """The ``listener`` role (see the module docstring)."""
    from tests.oslo.om_host import NotificationRecorder
    conf = ring_conf(conf_path)
    transport = oslo_messaging.get_notification_transport(conf, URL)
    listener = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=NOTIFICATIONS)],
        [NotificationRecorder(name, POOL, record_dir)], executor="threading")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    listener.start()
    print("READY %d" % os.getpid(), flush=True)
    while not done.wait(0.1):
        pass
    listener.stop()
    listener.wait()
    transport.cleanup()
    impl_zmq.cleanup()
    print("STOPPED", flush=True)


def legacy_caller(conf_path: str) -> None:
    """The ``legacy-caller`` role (see the module docstring)."""
    from oslo_config import cfg
    cfg.CONF(["--config-file", conf_path], project="nova")
    ctx = {"user_id": "u1", "project_id": "p1"}
    timeout = scaled(20)
    out: dict[str, Any] = {}
    out["echo"] = impl_zmq.call(cfg.CONF, ctx, TOPIC, {
        "method": "echo", "args": {"value": ["legacy", 1]}}, timeout)
    out["context"] = impl_zmq.call(cfg.CONF, ctx, TOPIC, {
        "method": "context_value", "args": {"key": "user_id"}}, timeout)
    for method, text in (("fail", "not allowed here"), ("boom", "builtin")):
        try:
            impl_zmq.call(cfg.CONF, ctx, TOPIC, {
                "method": method, "args": {"text": text}}, timeout)
            out[method] = None
        except Exception as exc:  # noqa: BLE001 - what the caller sees is the point
            out[method] = {"type": type(exc).__name__,
                           "module": type(exc).__module__,
                           "exc_type": getattr(exc, "exc_type", None),
                           "value": getattr(exc, "value", None),
                           "is_value_error": isinstance(exc, ValueError),
                           "text": str(exc)}
    impl_zmq.cleanup()
    print("RESULT " + json.dumps(out), flush=True)


H1, H2 = loopback_address(1), loopback_address(2)
NAMES = {H1: "srv1", H2: "srv2"}


class Cluster:
    """Two hosts with their receivers and servers, and an oslo.messaging
    transport of host 1 in this process."""

    def __init__(self, hosts: list[LocalHost], record_dir: Path) -> None:
        self.hosts = hosts
        self.record_dir = record_dir
        self.conf: Any = None
        self.transport: Any = None

    def client(self, topic: str = TOPIC, timeout: float = 20,
               **kw: Any) -> Any:
        return oslo_messaging.get_rpc_client(
            self.transport, oslo_messaging.Target(topic=topic, **kw),
            timeout=scaled(timeout))

    def records(self, name: str) -> list[str]:
        """The values server ``name`` recorded (casts and fanouts)."""
        out = []
        for entry in sorted(os.listdir(self.record_dir)):
            if entry.rsplit(".", 1)[0] == name:
                out.append((self.record_dir / entry).read_text())
        return out


def start_server(h: LocalHost, name: str, record_dir: Path,
                 topic: str = TOPIC, green: bool = False) -> Proc:
    return h.spawn("oslo server %s" % name,
                   [sys.executable, "-m", "tests.oslo.test_ring", "server",
                    h.conf_path, name, str(record_dir), topic]
                   + (["--eventlet"] if green else []),
                   "oslo-%s.log" % name)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("ring")
    ring = base / "ring.json"
    ring.write_text(json.dumps({TOPIC: [H1, H2], NOVAERA: [H2], GONE: [H2],
                                GREEN: [H2],
                                "%s-info" % NOTIFICATIONS: [H2]}))
    record_dir = base / "records"
    record_dir.mkdir()
    port = free_port()
    hosts = [LocalHost(host=ip, address=ip, port=port, matchmaker="ring",
                       ringfile=str(ring), base_dir=str(base),
                       extra={"rpc_backend": "nova_rpc_zmq.impl_zmq"})
             for ip in (H1, H2)]
    c = Cluster(hosts, record_dir)
    try:
        for h in hosts:
            h.start_receiver()
        procs = [start_server(h, NAMES[h.host], record_dir) for h in hosts]
        novaera = hosts[1].spawn(
            "novaera service", [sys.executable, "-m",
                                "tests.functional.novaera.service", "threads",
                                hosts[1].conf_path, "legacy2"],
            "novaera.log")
        for proc in procs + [novaera]:
            proc.wait_for_line("READY", scaled(30))
        c.conf = ring_conf(hosts[0].conf_path)
        c.transport = oslo_messaging.get_rpc_transport(
            c.conf, URL,
            allowed_remote_exmods=["tests.oslo.omsupport"])
        yield c
    finally:
        if c.transport is not None:
            c.transport.cleanup()
        impl_zmq.cleanup()
        for h in hosts:
            h.stop()


def test_calls_reach_servers_on_both_hosts(cluster: Cluster) -> None:
    rpc = cluster.client()
    seen = set()
    for _ in range(20):
        seen.add(rpc.call({}, "whoami"))
        if seen == {"srv1", "srv2"}:
            break
    assert seen == {"srv1", "srv2"}
    assert rpc.call({"user_id": "u9"}, "context_value", key="user_id") == "u9"
    assert rpc.call({}, "echo", value={"a": [1, 2.5, None]}) == \
        {"a": [1, 2.5, None]}


def test_directed_calls_reach_one_server(cluster: Cluster) -> None:
    for host, name in NAMES.items():
        rpc = cluster.client(server=host)
        assert [rpc.call({}, "whoami") for _ in range(4)] == [name] * 4


def test_cast_and_fanout(cluster: Cluster) -> None:
    cluster.client().cast({}, "record", value="cast-1")
    wait_for(lambda: "cast-1" in cluster.records("srv1")
             + cluster.records("srv2"), timeout=20, what="the cast")
    cluster.client(fanout=True).cast({}, "record", value="fanout-1")
    wait_for(lambda: "fanout-1" in cluster.records("srv1")
             and "fanout-1" in cluster.records("srv2"), timeout=20,
             what="the fanout on both hosts")
    both = cluster.records("srv1") + cluster.records("srv2")
    assert both.count("cast-1") == 1 and both.count("fanout-1") == 2


def test_a_server_in_green_threads(cluster: Cluster) -> None:
    """The legacy consumer waits for the oslo server on a green Event."""
    proc = start_server(cluster.hosts[1], "green2", cluster.record_dir, GREEN,
                        green=True)
    proc.wait_for_line("READY", scaled(30))
    assert " eventlet" in proc.output()
    rpc = cluster.client(GREEN)
    assert [rpc.call({}, "echo", value=i) for i in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="green boom"):
        rpc.call({}, "boom", text="green boom")
    rpc.cast({}, "record", value="green-cast")
    wait_for(lambda: cluster.records("green2") == ["green-cast"], timeout=20,
             what="the cast at the green server")


def test_remote_errors_from_an_oslo_server(cluster: Cluster) -> None:
    rpc = cluster.client(server=H2)
    with pytest.raises(oslo_messaging.RemoteError) as info:
        # the legacy side does not allow tests.oslo.omsupport: RemoteError
        rpc.call({}, "fail", text="no such thing")
    assert info.value.exc_type == "Failure"
    assert info.value.value == "no such thing"
    with pytest.raises(ValueError, match="builtin one"):
        rpc.call({}, "boom", text="builtin one")


def test_a_legacy_caller_reaches_an_oslo_server(cluster: Cluster) -> None:
    h = cluster.hosts[0]
    proc = h.spawn("legacy caller", [sys.executable, "-m",
                                     "tests.oslo.test_ring", "legacy-caller",
                                     h.conf_path], "legacy-caller.log")
    proc.wait_for_line("RESULT", scaled(60))
    line = [x for x in proc.output().splitlines() if x.startswith("RESULT ")]
    out = json.loads(line[0][len("RESULT "):])
    assert out["echo"] == ["legacy", 1]
    assert out["context"] == "u1"
    # an exception of a module the caller does not allow: the legacy
    # RemoteError with the remote type and message
    assert out["fail"]["type"] == "RemoteError"
    assert out["fail"]["module"] == "nova_rpc_zmq.errors"
    assert out["fail"]["exc_type"] == "Failure"
    assert out["fail"]["value"] == "not allowed here"
    # a builtin one: rebuilt as its class, as from a legacy consumer
    assert out["boom"]["type"] == "ValueError_Remote"
    assert out["boom"]["is_value_error"]
    assert out["boom"]["text"].startswith("builtin\n")


def test_an_oslo_client_reaches_a_legacy_consumer(cluster: Cluster) -> None:
    rpc = cluster.client(NOVAERA)
    assert rpc.call({"user_id": "u2"}, "echo", value=[3, "x"]) == [3, "x"]
    directed = cluster.client(NOVAERA, server=H2)
    assert directed.call({}, "echo", value="directed") == "directed"
    with pytest.raises(ValueError, match="failed on purpose") as info:
        rpc.call({}, "fail")
    # oslo.messaging's way with a builtin: the class itself (it cannot be
    # swapped for ValueError_Remote), the remote traceback in its text
    assert type(info.value) is ValueError
    assert "Traceback" in str(info.value)
    rpc.cast({}, "record", value="from-oslo")
    wait_for(lambda: "from-oslo" in rpc.call({}, "stats")["casts"],
             timeout=20, what="the cast at the legacy consumer")


def test_timeout_when_the_consumer_is_gone(cluster: Cluster) -> None:
    h = cluster.hosts[1]
    proc = start_server(h, "gone2", cluster.record_dir, GONE)
    proc.wait_for_line("READY", scaled(30))
    rpc = cluster.client(GONE, timeout=3)
    assert rpc.call({}, "whoami") == "gone2"
    proc.stop()
    assert "STOPPED" in proc.output()
    started = time.monotonic()
    with pytest.raises(oslo_messaging.MessagingTimeout):
        rpc.call({}, "whoami")
    took = time.monotonic() - started
    assert scaled(3) * 0.9 <= took < scaled(3) + 2, took
    # and a topic no host of the ring serves: at once
    started = time.monotonic()
    with pytest.raises(oslo_messaging.MessagingTimeout, match="nowhere"):
        cluster.client(NOWHERE, timeout=10).call({}, "whoami")
    assert time.monotonic() - started < 2


def test_notifications_reach_an_oslo_listener(cluster: Cluster) -> None:
    """From an oslo.messaging Notifier and from a Nova-era notify()."""
    h = cluster.hosts[1]
    proc = h.spawn("oslo listener", [sys.executable, "-m",
                                     "tests.oslo.test_ring", "listener",
                                     h.conf_path, "nl2", str(cluster.record_dir)],
                   "oslo-listener.log")
    proc.wait_for_line("READY", scaled(30))
    transport = oslo_messaging.get_notification_transport(cluster.conf, URL)
    try:
        notifier = oslo_messaging.Notifier(
            transport, publisher_id="compute." + H1, driver="messaging",
            topics=[NOTIFICATIONS])
        notifier.info({}, "compute.instance.create.end", {"id": "i-1"})
        impl_zmq.notify(transport._driver._ring.settings, {},
                        NOTIFICATIONS + ".info",
                        {"message_id": "m-2", "publisher_id": "compute." + H1,
                         "event_type": "compute.instance.delete.end",
                         "priority": "INFO", "payload": {"id": "i-2"},
                         "timestamp": "2013-01-01 00:00:00.000001"})
        name = "nl2." + POOL
        wait_for(lambda: len(cluster.records(name)) >= 2, timeout=20,
                 what="two notifications at the listener")
        assert sorted(cluster.records(name)) == [
            "compute.instance.create.end {'id': 'i-1'}",
            "compute.instance.delete.end {'id': 'i-2'}"]
    finally:
        transport.cleanup()


def test_the_legacy_matchmaker_must_be_the_ring() -> None:
    from tests.oslo.omsupport import make_conf
    with pytest.raises(Exception, match="rpc_zmq_matchmaker = ring"):
        oslo_messaging.get_rpc_transport(make_conf(), URL)


def test_another_exchange_is_refused(cluster: Cluster) -> None:
    rpc = cluster.client(exchange="elsewhere")
    with pytest.raises(oslo_messaging.InvalidTarget, match="no exchanges"):
        rpc.call({}, "whoami")


if __name__ == "__main__":
    import warnings
    warnings.simplefilter("ignore")
    role = sys.argv[1]
    if role == "server":
        serve(*sys.argv[2:6], green="--eventlet" in sys.argv)
    elif role == "listener":
        listen(*sys.argv[2:5])
    elif role == "legacy-caller":
        legacy_caller(sys.argv[2])
    else:
        sys.exit("unknown role %r" % role)
    sys.exit(0)
