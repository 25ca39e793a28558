"""Fixtures of the oslo.messaging driver tests: a private registry
directory per test, a real ``redis-server``, transports that are cleaned
up, and RPC servers in their own processes."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import oslo_messaging
import pytest

from nova_rpc_zmq.testing import Proc, child_env, scaled
from tests.fixtures.servers import RedisServer
from tests.oslo.omsupport import make_conf

warnings.filterwarnings("ignore", category=DeprecationWarning,
                        module="oslo_messaging")


@pytest.fixture(autouse=True)
def registry_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The ``zmq://`` registry of this test only (children inherit it)."""
    path = tmp_path / "registry"
    path.mkdir(mode=0o700)
    monkeypatch.setenv("NOVA_RPC_ZMQ_OSLO_REGISTRY_DIR", str(path))
    return str(path)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real ``redis-server`` on 127.0.0.1 and a free port; a missing
    binary fails the test (``apt-get install redis-server``)."""
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed: the Redis matchmaker "
                    "tests need it (apt-get install -y redis-server)")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def transport_factory() -> Iterator[Callable[..., Any]]:
    """``make(url, **zmq_options)`` -> an RPC transport, cleaned up after
    the test."""
    made: list[Any] = []

    def make(url: str, notification: bool = False,
             allowed_remote_exmods: list[str] | None = None,
             **zmq_options: Any) -> Any:
        conf = make_conf(**zmq_options)
        get = (oslo_messaging.get_notification_transport if notification
               else oslo_messaging.get_rpc_transport)
        transport = get(conf, url,
                        allowed_remote_exmods=allowed_remote_exmods or [])
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.cleanup()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``start(url, topic, server, *extra)`` -> a ``Proc`` running
    ``tests/oslo/om_server.py`` once it printed READY; stopped after the
    test. Casts it receives are recorded in ``tmp_path / 'casts'``."""
    procs: list[Proc] = []
    record_dir = tmp_path / "casts"
    record_dir.mkdir()

    def start(url: str, topic: str, server: str, *extra: str,
              wait: bool = True) -> Proc:
        argv = [sys.executable, "-m", "tests.oslo.om_server", url, topic,
                server, str(record_dir), *extra]
        proc = Proc(server, argv, str(tmp_path / ("%s.log" % server)),
                    env=child_env())
        procs.append(proc)
        if wait:
            proc.wait_for_line("READY", scaled(30))
        return proc

    start.record_dir = record_dir  # type: ignore[attr-defined]
    yield start
    for proc in procs:
        proc.stop()


def recorded(record_dir: Path) -> list[str]:
    """The names of the servers that recorded casts, one per cast."""
    return sorted(name.rsplit(".", 1)[0] for name in os.listdir(record_dir))


class ReplicaServer(RedisServer):
    """A Redis replica of ``master``; the Sentinel promotes the replica of
    lowest ``priority`` first."""

    def __init__(self, base_dir: Path, master: RedisServer,
                 priority: int = 100) -> None:
        super().__init__(base_dir)
        self.master = master
        self.priority = priority

    def command(self) -> list[str]:
        return super().command() + ["--replicaof", "127.0.0.1",
                                    str(self.master.port),
                                    "--replica-priority", str(self.priority)]


class SentinelServer(RedisServer):
    """A Redis Sentinel watching ``master`` as ``name`` (quorum 1, down
    after 2 s: shorter, a master just promoted that is slow to answer on
    a loaded machine is failed over again)."""

    kind = "sentinel"

    def __init__(self, base_dir: Path, master: RedisServer, name: str) -> None:
        super().__init__(base_dir)
        self.master, self.name = master, name

    def command(self) -> list[str]:
        conf = self.base_dir / "sentinel.conf"
        conf.write_text(
            "port %d\nbind 127.0.0.1\ndaemonize no\n"
            "sentinel monitor %s 127.0.0.1 %d 1\n"
            "sentinel down-after-milliseconds %s 2000\n"
            "sentinel failover-timeout %s 2000\n"
            % (self.port, self.name, self.master.port, self.name, self.name))
        return [str(self.binary), str(conf), "--sentinel"]


@pytest.fixture
def sentinel_cluster(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Three real Redis servers, a master and two replicas, and a real
    Sentinel (master name ``oslo-messaging-zeromq``); a failover promotes
    ``replica`` (``replica2`` has a higher priority number). A missing
    binary fails."""
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed: the Sentinel tests "
                    "need it (apt-get install -y redis-server)")
    started: list[RedisServer] = []
    try:
        master = RedisServer(tmp_path / "master")
        started.append(master)
        master.start()
        replica = ReplicaServer(tmp_path / "replica", master, priority=10)
        started.append(replica)
        replica.start()
        replica2 = ReplicaServer(tmp_path / "replica2", master, priority=90)
        started.append(replica2)
        replica2.start()
        sentinel = SentinelServer(tmp_path / "sentinel", master,
                                  "oslo-messaging-zeromq")
        started.append(sentinel)
        sentinel.start()
        yield {"master": master, "replica": replica, "replica2": replica2,
               "sentinel": sentinel}
    finally:
        for server in reversed(started):
            server.stop()


@pytest.fixture
def host_factory(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """``start(role, url, address, name, *extra, wait=True)`` -> a ``Proc``
    running ``tests/oslo/om_host.py`` (``role`` ``rpc`` or ``notify``) on
    loopback address ``address``, once it printed READY (``wait``).
    RPC casts are recorded in ``start.rpc_dir``, notifications in
    ``start.notify_dir``. Every process is stopped after the test (one
    left stopped with SIGSTOP is continued first)."""
    procs: list[Proc] = []
    rpc_dir, notify_dir = tmp_path / "rpc-records", tmp_path / "notified"
    rpc_dir.mkdir()
    notify_dir.mkdir()

    def start(role: str, url: str, address: str, name: str, *extra: str,
              wait: bool = True) -> Proc:
        record_dir = rpc_dir if role == "rpc" else notify_dir
        argv = [sys.executable, "-m", "tests.oslo.om_host", role, url,
                address, name, str(record_dir), *extra]
        proc = Proc("%s-%s" % (role, name), argv,
                    str(tmp_path / ("%s-%s.log" % (role, name))),
                    env=child_env())
        procs.append(proc)
        if wait:
            proc.wait_for_line("READY", scaled(30))
        return proc

    start.rpc_dir = rpc_dir  # type: ignore[attr-defined]
    start.notify_dir = notify_dir  # type: ignore[attr-defined]
    yield start
    for proc in procs:
        if proc.popen.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
    for proc in procs:
        proc.stop()
