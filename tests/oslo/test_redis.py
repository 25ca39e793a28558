"""``zmq+redis://`` with a real Redis: registrations with a TTL, refreshed,
removed at stop; traffic on made connections survives Redis going away."""

from __future__ import annotations

import time
from typing import Any

import oslo_messaging
import redis

from nova_rpc_zmq.oslo_driver import redis_registry
from nova_rpc_zmq.testing import scaled, wait_for


def client(transport: Any, topic: str, timeout: float = 10, **kw: Any) -> Any:
    return oslo_messaging.get_rpc_client(
        transport, oslo_messaging.Target(topic=topic, **kw),
        timeout=scaled(timeout))


def test_registration_with_ttl_refreshed_and_removed_at_stop(
        redis_server: Any, server_factory: Any,
        transport_factory: Any) -> None:
    url = "zmq+redis://127.0.0.1:%d" % redis_server.port
    db = redis.Redis(port=redis_server.port, decode_responses=True)
    server = server_factory(url, "inventory", "r1", "--expire", "3",
                            "--update", "1")
    bare = redis_registry.set_key("rpc/openstack/inventory")
    directed = redis_registry.set_key("rpc/openstack/inventory/r1")
    members = db.smembers(bare)
    assert len(members) == 1
    member = str(members.pop())
    assert member.startswith("127.0.0.1:")
    one = redis_registry.member_key("rpc/openstack/inventory", member)
    assert 0 < db.ttl(one) <= 3 and 0 < db.ttl(bare) <= 3
    assert db.smembers(directed) == {member}
    rpc = client(transport_factory(url), "inventory")
    assert rpc.call({}, "whoami") == "r1"
    # refreshed every second: alive well past its 3 s TTL
    deadline = time.monotonic() + 4.5
    while time.monotonic() < deadline:
        assert db.exists(one), "registration expired while refreshed"
        time.sleep(0.25)
    server.stop()
    assert "STOPPED" in server.output()
    assert not db.exists(one)
    assert db.smembers(bare) == set() and db.smembers(directed) == set()


def test_traffic_goes_on_when_redis_goes_away(
        redis_server: Any, server_factory: Any,
        transport_factory: Any) -> None:
    url = "zmq+redis://127.0.0.1:%d" % redis_server.port
    server_factory(url, "steady", "a")
    server_factory(url, "steady", "b")
    rpc = client(transport_factory(url), "steady")
    assert sorted(rpc.call({}, "whoami") for _ in range(2)) == ["a", "b"]
    redis_server.stop()
    started = time.monotonic()
    answers = []
    # calls for a second, well past the look-up cache: the servers known
    # last are still used, and each call is answered
    while time.monotonic() - started < 1.0:
        answers.append(rpc.call({}, "whoami"))
    assert sorted(set(answers)) == ["a", "b"]
    assert time.monotonic() - started < scaled(5)


def test_a_call_finds_servers_through_redis_in_another_process(
        redis_server: Any, server_factory: Any,
        transport_factory: Any) -> None:
    url = "zmq+redis://127.0.0.1:%d" % redis_server.port
    rpc = client(transport_factory(url), "later", timeout=0.5)
    try:
        rpc.call({}, "whoami")
        raise AssertionError("a call with no server answered")
    except oslo_messaging.MessagingTimeout:
        pass
    server_factory(url, "later", "z1")
    wait_for(lambda: client(transport_factory(url), "later").call(
        {}, "whoami") == "z1", 10, what="the new server")
