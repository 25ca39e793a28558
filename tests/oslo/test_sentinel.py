"""``zmq+sentinel://`` with real Redis servers and a real Sentinel:
registrations go to the master the Sentinel names, and follow a
failover."""

from __future__ import annotations

import time
from typing import Any

import oslo_messaging
import redis

from nova_rpc_zmq.oslo_driver import redis_registry
from nova_rpc_zmq.testing import scaled, wait_for


def test_registrations_follow_a_failover(sentinel_cluster: Any,
                                         server_factory: Any,
                                         transport_factory: Any) -> None:
    master = sentinel_cluster["master"]
    replica = sentinel_cluster["replica"]
    url = "zmq+sentinel://127.0.0.1:%d" % sentinel_cluster["sentinel"].port
    server_factory(url, "ha", "s1", "--expire", "10", "--update", "1")
    key = redis_registry.set_key("rpc/openstack/ha")
    old = redis.Redis(port=master.port, decode_responses=True)
    assert len(old.smembers(key)) == 1
    rpc = oslo_messaging.get_rpc_client(
        transport_factory(url), oslo_messaging.Target(topic="ha"),
        timeout=scaled(10))
    assert rpc.call({}, "whoami") == "s1"
    new = redis.Redis(port=replica.port, decode_responses=True)
    wait_for(lambda: new.smembers(key), 10, what="replication")
    master.kill()
    wait_for(lambda: new.info("replication")["role"] == "master", 30,
             what="the Sentinel's failover to the replica")
    # the replica's copy goes; the server's refresh writes it again there
    new.delete(key)
    wait_for(lambda: new.smembers(key), 15,
             what="the registration on the new master")
    # a caller that never saw the old master finds the server through it
    started = time.monotonic()
    later = oslo_messaging.get_rpc_client(
        transport_factory(url), oslo_messaging.Target(topic="ha"),
        timeout=scaled(10))
    assert later.call({}, "whoami") == "s1"
    assert time.monotonic() - started < scaled(5)
    assert rpc.call({}, "whoami") == "s1"
