"""Three hosts on one machine (127.0.0.1, .2, .3), each with an RPC server
and notification listeners in their own processes, bound to the host's
address only, driven through oslo.messaging's API: with ``zmq+redis://``
(a real Redis) and ``zmq+sentinel://`` (a real Sentinel over three real
Redis servers). Round robin, directed calls, fanout, notification pools,
a server killed with SIGKILL, a Sentinel failover."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import oslo_messaging
import pytest
import redis

from nova_rpc_zmq.oslo_driver import redis_registry
from nova_rpc_zmq.oslo_driver.liveness import host_of
from nova_rpc_zmq.testing import port_open, scaled, wait_for
from nova_rpc_zmq.testing.hosts import loopback_address

pytestmark = pytest.mark.slow

HOSTS = [loopback_address(n) for n in (1, 2, 3)]
NAMES = ["host1", "host2", "host3"]
KEY = "rpc/openstack/multi"
MASTER = "oslo-messaging-zeromq"
#: A short life for registrations, so a killed server drops out quickly.
EXPIRE, UPDATE = 3, 1


def client(transport: Any, timeout: float = 10, **kw: Any) -> Any:
    return oslo_messaging.get_rpc_client(
        transport, oslo_messaging.Target(topic="multi", **kw),
        timeout=scaled(timeout))


def counts(record_dir: Path, names: list[str]) -> list[int]:
    """How many records each of ``names`` (a file name prefix) made."""
    found = os.listdir(record_dir)
    return [sum(1 for f in found if f.rsplit(".", 1)[0] == name)
            for name in names]


def master_port(sentinel_port: int) -> int:
    """The port of the master the Sentinel names now."""
    sentinel = redis.Redis(port=sentinel_port, decode_responses=True)
    try:
        _, port = sentinel.execute_command(
            "SENTINEL", "get-master-addr-by-name", MASTER)
    finally:
        sentinel.close()
    return int(port)


@pytest.fixture(params=["redis", "sentinel"])
def matchmaker(request: pytest.FixtureRequest) -> dict[str, Any]:
    """``url`` and ``master()``, a client of the Redis that holds the
    registrations now."""
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        return {"url": "zmq+redis://127.0.0.1:%d" % server.port,
                "master": lambda: redis.Redis(port=server.port,
                                              decode_responses=True)}
    cluster = request.getfixturevalue("sentinel_cluster")
    port = cluster["sentinel"].port
    return {"url": "zmq+sentinel://127.0.0.1:%d" % port,
            "master": lambda: redis.Redis(port=master_port(port),
                                          decode_responses=True)}


def start_rpc_servers(host_factory: Callable[..., Any], url: str) -> list:
    procs = [host_factory("rpc", url, address, name, "--expire", str(EXPIRE),
                          "--update", str(UPDATE), wait=False)
             for address, name in zip(HOSTS, NAMES)]
    for proc in procs:
        proc.wait_for_line("READY", scaled(30))
    return procs


def registered(db: redis.Redis, key: str = KEY) -> list[str]:
    """The members of ``key`` whose registration has not expired."""
    return sorted(m for m in db.smembers(redis_registry.set_key(key))
                  if db.exists(redis_registry.member_key(key, m)))


def test_three_hosts_rpc_fanout_pools_and_a_killed_server(
        matchmaker: dict[str, Any], host_factory: Any,
        transport_factory: Any) -> None:
    url = matchmaker["url"]
    servers = start_rpc_servers(host_factory, url)
    listeners = [host_factory("notify", url, address, name, "--pool", "audit",
                              *(("--pool", "billing") if name != "host3"
                                else ()), wait=False)
                 for address, name in zip(HOSTS, NAMES)]
    for proc in listeners:
        proc.wait_for_line("READY", scaled(30))
    db = matchmaker["master"]()
    members = registered(db)
    # each host registered its own address, and bound its port there only
    assert [host_of(m) for m in members] == HOSTS
    for member, other in zip(members, HOSTS[1:] + HOSTS[:1]):
        address, port = member.rsplit(":", 1)
        assert port_open(address, int(port))
        assert not port_open(other, int(port)), member

    transport = transport_factory(url, rpc_zmq_bind_address=HOSTS[0])
    rpc = client(transport)
    # strict round robin: three calls, three hosts; three casts likewise
    assert sorted(rpc.call({}, "whoami") for _ in range(3)) == NAMES
    rpc_dir: Path = host_factory.rpc_dir
    for n in range(3):
        rpc.cast({}, "record", value=n)
    wait_for(lambda: sum(counts(rpc_dir, NAMES)) == 3, 10, what="3 casts")
    assert counts(rpc_dir, NAMES) == [1, 1, 1]
    for name in NAMES:
        assert client(transport, server=name).call({}, "whoami") == name
    client(transport, fanout=True).cast({}, "record", value="all")
    wait_for(lambda: sum(counts(rpc_dir, NAMES)) == 6, 10, what="fanout")
    assert counts(rpc_dir, NAMES) == [2, 2, 2]

    # notification pools: each pool gets every notification once,
    # balanced over its listeners on the hosts
    notifier = oslo_messaging.Notifier(
        transport_factory(url, notification=True,
                          rpc_zmq_bind_address=HOSTS[0]),
        driver="messagingv2", topics=["multi"], publisher_id="test")
    for n in range(6):
        notifier.info({}, "multi.event", {"n": n})
    notify_dir: Path = host_factory.notify_dir
    audit = ["%s.audit" % name for name in NAMES]
    billing = ["host1.billing", "host2.billing"]
    wait_for(lambda: sum(counts(notify_dir, audit + billing)) == 12, 10,
             what="6 notifications in each pool")
    assert counts(notify_dir, audit) == [2, 2, 2]
    assert counts(notify_dir, billing) == [3, 3]

    # host2's server is killed: no call hangs meanwhile, and within
    # zmq_target_expire its registration is gone and calls skip it
    killed_member = members[1]
    servers[1].kill()
    killed_at = time.monotonic()
    with pytest.raises(oslo_messaging.MessagingTimeout):
        client(transport, timeout=2, server="host2").call({}, "whoami")
    assert time.monotonic() - killed_at < scaled(2 + 1)
    while killed_member in registered(db):
        assert time.monotonic() - killed_at < scaled(EXPIRE + 1), \
            "the killed server's registration outlived zmq_target_expire"
        started = time.monotonic()
        assert rpc.call({}, "whoami") in ("host1", "host3")
        assert time.monotonic() - started < scaled(2.5)
    fresh = client(transport_factory(url, rpc_zmq_bind_address=HOSTS[0]))
    for caller in (rpc, fresh):
        started = time.monotonic()
        answers = sorted(caller.call({}, "whoami") for _ in range(4))
        assert answers == ["host1", "host1", "host3", "host3"]
        assert time.monotonic() - started < scaled(1.0)
    started = time.monotonic()
    client(transport, fanout=True).cast({}, "record", value="rest")
    assert time.monotonic() - started < scaled(0.5)
    wait_for(lambda: counts(rpc_dir, NAMES) == [3, 2, 3], 10,
             what="fanout to the two hosts left")
    # no pool got a notification twice
    assert counts(notify_dir, audit) == [2, 2, 2]
    assert counts(notify_dir, billing) == [3, 3]


def test_three_hosts_follow_a_sentinel_failover(
        sentinel_cluster: dict[str, Any], host_factory: Any,
        transport_factory: Any) -> None:
    sentinel_port = sentinel_cluster["sentinel"].port
    url = "zmq+sentinel://127.0.0.1:%d" % sentinel_port
    start_rpc_servers(host_factory, url)
    old, new = sentinel_cluster["master"], sentinel_cluster["replica"]
    old_db = redis.Redis(port=old.port, decode_responses=True)
    new_db = redis.Redis(port=new.port, decode_responses=True)
    members = registered(old_db)
    assert [host_of(m) for m in members] == HOSTS
    rpc = client(transport_factory(url, rpc_zmq_bind_address=HOSTS[0]))
    assert sorted(rpc.call({}, "whoami") for _ in range(3)) == NAMES
    wait_for(lambda: registered(new_db) == members, 10, what="replication")

    sentinel = redis.Redis(port=sentinel_port, decode_responses=True)
    try:
        # the Sentinel learns the replicas from the master's INFO
        wait_for(lambda: len([r for r in sentinel.sentinel_slaves(MASTER)
                              if r["is_slave"] and not r["is_odown"]
                              and not r["is_sdown"]]) == 2, 30,
                 what="the Sentinel knowing both replicas")
        sentinel.execute_command("SENTINEL", "FAILOVER", MASTER)
    finally:
        sentinel.close()
    wait_for(lambda: new_db.info("replication")["role"] == "master", 30,
             what="the replica promoted")
    wait_for(lambda: master_port(sentinel_port) == new.port, 30,
             what="the Sentinel naming the new master")
    wait_for(lambda: old_db.info("replication")["role"] == "slave", 30,
             what="the old master turned replica")
    # the copies replicated there go: the servers' refreshes write their
    # registrations again, on the new master
    keys = [redis_registry.set_key(KEY)] + [
        redis_registry.member_key(KEY, m) for m in members]
    new_db.delete(*keys)
    wait_for(lambda: registered(new_db) == members, 10,
             what="the registrations on the new master")
    for member in members:
        assert 0 < new_db.ttl(redis_registry.member_key(KEY, member)) \
            <= EXPIRE
    # calls keep working, from a caller of before and one of after
    after = transport_factory(url, rpc_zmq_bind_address=HOSTS[0])
    later = client(after)
    for caller in (rpc, later):
        assert sorted(caller.call({}, "whoami") for _ in range(3)) == NAMES
    # a server started now registers on the new master and is reached
    host_factory("rpc", url, HOSTS[2], "host3b", "--expire", str(EXPIRE),
                 "--update", str(UPDATE))
    wait_for(lambda: len(registered(new_db)) == 4, 10, what="host3b")
    assert client(after, server="host3b").call({}, "whoami") == "host3b"
