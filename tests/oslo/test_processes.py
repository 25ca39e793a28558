"""RPC servers in their own processes (threading and eventlet executors),
found through ``zmq://`` (this host's registry directory) by callers in
the test process."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import oslo_messaging
import pytest

from nova_rpc_zmq.oslo_driver import registry
from nova_rpc_zmq.testing import scaled, wait_for
from tests.oslo.conftest import recorded


def client(transport: Any, topic: str, timeout: float = 10, **kw: Any) -> Any:
    return oslo_messaging.get_rpc_client(
        transport, oslo_messaging.Target(topic=topic, **kw),
        timeout=scaled(timeout))


def registered(registry_dir: str, key: str) -> list[str]:
    return registry.DirectoryRegistry(registry_dir).members(key)


def test_servers_in_other_processes_round_robin_directed_fanout(
        server_factory: Any, transport_factory: Any) -> None:
    transport = transport_factory("zmq://")
    first = server_factory("zmq://", "proc", "p1")
    assert "READY %d threading" % first.pid in first.output()
    server_factory("zmq://", "proc", "p2")
    rpc = client(transport, "proc")
    assert sorted(rpc.call({}, "whoami") for _ in range(2)) == ["p1", "p2"]
    # a third server is found within 0.5 s of its start
    server_factory("zmq://", "proc", "p3")
    ready = time.monotonic()
    seen: set[str] = set()
    while "p3" not in seen:
        assert time.monotonic() - ready < scaled(0.5), seen
        seen.add(rpc.call({}, "whoami"))
    # strict round robin: 3 casts reach 3 servers
    for n in range(3):
        rpc.cast({}, "record", value=n)
    record_dir = server_factory.record_dir
    wait_for(lambda: len(os.listdir(record_dir)) == 3, 10, what="3 casts")
    assert recorded(record_dir) == ["p1", "p2", "p3"]
    assert client(transport, "proc", server="p2").call({}, "whoami") == "p2"
    client(transport, "proc", fanout=True).cast({}, "record", value="all")
    wait_for(lambda: len(os.listdir(record_dir)) == 6, 10, what="fanout")
    assert recorded(record_dir) == ["p1", "p1", "p2", "p2", "p3", "p3"]


def test_a_stopped_server_unregisters_and_a_killed_one_is_skipped(
        server_factory: Any, transport_factory: Any,
        registry_dir: str) -> None:
    transport = transport_factory("zmq://")
    stopped = server_factory("zmq://", "gone", "g1")
    killed = server_factory("zmq://", "gone", "g2")
    server_factory("zmq://", "gone", "g3")
    key = "rpc/openstack/gone"
    assert len(registered(registry_dir, key)) == 3
    stopped.stop()
    assert "STOPPED" in stopped.output()
    assert len(registered(registry_dir, key)) == 2
    assert registered(registry_dir, key + "/g1") == []
    killed.stop(signal.SIGKILL)
    assert len(registered(registry_dir, key)) == 1  # its process is gone
    rpc = client(transport, "gone", timeout=5)
    assert {rpc.call({}, "whoami") for _ in range(4)} == {"g3"}


def test_eventlet_executor_in_a_monkey_patched_server(
        server_factory: Any, transport_factory: Any) -> None:
    transport = transport_factory("zmq://")
    green = server_factory("zmq://", "green", "e1", "--eventlet")
    assert "READY %d eventlet" % green.pid in green.output()
    rpc = client(transport, "green")
    assert rpc.call({}, "whoami") == "e1"
    assert rpc.call({"k": "v"}, "context_value", key="k") == "v"
    with pytest.raises(ValueError, match="green failure"):
        rpc.call({}, "boom", text="green failure")
    # two slow calls at once run side by side in green threads
    import concurrent.futures
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: rpc.call({}, "sleep", seconds=1),
                                range(2)))
    assert answers == ["e1", "e1"]
    assert time.monotonic() - started < scaled(1.9)
    rpc.cast({}, "record", value="x")
    record_dir: Path = server_factory.record_dir
    wait_for(lambda: os.listdir(record_dir), 10, what="the cast")


def test_green_callers_reach_their_own_and_other_servers(
        server_factory: Any, transport_factory: Any) -> None:
    server_factory("zmq://", "plain", "t1")
    green = server_factory("zmq://", "greenself", "e2", "--eventlet",
                           "--call", "greenself", "--call", "plain")
    green.wait_for_line("CALLED plain t1", scaled(20))
    assert "CALLED greenself e2" in green.output()


def test_call_monitor_keeps_a_long_call_alive_and_ends_a_dead_one(
        server_factory: Any, transport_factory: Any) -> None:
    transport = transport_factory("zmq://")
    server = server_factory("zmq://", "long", "l1")
    rpc = oslo_messaging.get_rpc_client(
        transport, oslo_messaging.Target(topic="long"), timeout=3600,
        call_monitor_timeout=2)
    # heartbeats every second keep a 4 s call alive past the 2 s monitor
    assert rpc.call({}, "sleep", seconds=4) == "l1"
    # the server dies mid-call: no heartbeat, the call ends within 2x
    import threading
    killer = threading.Timer(0.5, lambda: os.kill(server.pid, signal.SIGKILL))
    started = time.monotonic()
    killer.start()
    try:
        with pytest.raises(oslo_messaging.MessagingTimeout,
                           match="heartbeat"):
            rpc.call({}, "sleep", seconds=60)
    finally:
        killer.cancel()
    assert time.monotonic() - started < scaled(0.5 + 2 * 2)
