"""Notifications as Nova-era services send them (no ``method``): from our
node and from an old-frame node, legacy and enveloped, to a consumer on
another host (loopback addresses, ring matchmaker), in both concurrency
modes; a method-less body on another topic is still dropped and counted."""

from __future__ import annotations

import json
import os
import sys
import urllib.request

import pytest
import zmq

from nova_rpc_zmq import rpc
from nova_rpc_zmq.errors import LocalError
from nova_rpc_zmq.testing import LocalHost, Proc, free_port
from tests.support import scaled, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
SENDER, CONSUMER = "127.0.0.1", "127.0.0.2"


def notification(i: int, event: str = "compute.instance.create.end") -> dict:
    return {"message_id": "m-%d" % i, "publisher_id": "compute.host1",
            "event_type": event, "priority": "INFO",
            "payload": {"instance_id": "i-%d" % i},
            "timestamp": "2013-01-01 00:00:00.000001"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("notify")
    ring = base / "ring.json"
    ring.write_text(json.dumps({"notifications-info": [CONSUMER],
                                "notestats": [CONSUMER], "compute": [CONSUMER],
                                "sender": [SENDER]}))
    port = free_port()
    hosts = [LocalHost(host=ip, address=ip, port=port, matchmaker="ring",
                       ringfile=str(ring), base_dir=str(base),
                       extra={"rpc_zmq_health_port": free_port(ip)})
             for ip in (SENDER, CONSUMER)]
    try:
        for h in hosts:
            h.start_receiver()
        rpc.init(hosts[0].settings())
        yield hosts
    finally:
        rpc.cleanup()
        for h in hosts:
            h.stop()


def start_consumer(h: LocalHost, mode: str, style: str) -> Proc:
    proc = Proc("notification consumer", [sys.executable,
                                          os.path.join(HERE, "notification_consumer.py"),
                                          mode, h.conf_path, style],
                os.path.join(h.dir, "notify-%s-%s.log" % (mode, style)), env=h._env())
    h.procs.append(proc)
    proc.wait_for_line("READY", scaled(30))
    return proc


def seen() -> list:
    return rpc.call({}, "notestats", {"method": "stats", "args": {}},
                    timeout=scaled(10))["seen"]


def old_node_frames(topic: str, body: dict, enveloped: bool) -> list[bytes]:
    """What an old impl_zmq node sends for notify(): byte for byte."""
    ctx = json.dumps({"user_id": "old"})
    if enveloped:
        body = {"oslo.version": "2.0", "oslo.message": json.dumps(body)}
    return [b"0", topic.encode(), b"cast", json.dumps([ctx, body]).encode()]


def metrics(h: LocalHost) -> dict:
    # the health page listens on the receiver's bind address by default
    url = "http://%s:%d/metrics" % (h.address, h.options["rpc_zmq_health_port"])
    with urllib.request.urlopen(url, timeout=scaled(5)) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#"):
            out[parts[0]] = float(parts[1])
    return out


@pytest.mark.parametrize("mode", ["eventlet", "threads"])
@pytest.mark.parametrize("style", ["callable", "notify", "info"])
def test_notifications_reach_a_consumer_on_another_host(cluster, mode, style):
    consumer = start_consumer(cluster[1], mode, style)
    try:
        rpc.notify({}, "notifications.info", notification(1), False)
        rpc.notify({}, "notifications.info", notification(2), True)
        ctx = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 2000)
        push.connect("tcp://%s:%d" % (CONSUMER, cluster[1].port))
        push.send_multipart(old_node_frames("notifications-info", notification(3), False))
        push.send_multipart(old_node_frames("notifications-info", notification(4), True))
        push.close()
        ctx.term()
        got = wait_for(lambda: len(seen()) >= 4 and seen(), timeout=15,
                       what="four notifications")
        assert sorted(p["instance_id"] for _e, p in got) == ["i-1", "i-2", "i-3", "i-4"]
        assert {e for e, _p in got} == {"compute.instance.create.end"}
    finally:
        consumer.stop()


@pytest.mark.parametrize("mode", ["eventlet", "threads"])
def test_a_thousand_notifications_none_lost(cluster, mode):
    consumer = start_consumer(cluster[1], mode, "info")
    try:
        for i in range(1000):
            rpc.notify({}, "notifications.info", notification(i), i % 2 == 0)
        got = wait_for(lambda: len(seen()) >= 1000 and seen(), timeout=30,
                       what="1,000 notifications")
        assert sorted(int(p["instance_id"][2:]) for _e, p in got) == list(range(1000))
    finally:
        consumer.stop()


def test_method_less_body_elsewhere_is_still_dropped_and_counted(cluster):
    before = metrics(cluster[1]).get('nova_rpc_zmq_receiver_dropped_total{reason="bad_body"}', 0)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.connect("tcp://%s:%d" % (CONSUMER, cluster[1].port))
    push.send_multipart(old_node_frames("compute", notification(9), False))
    push.close()
    ctx.term()
    wait_for(lambda: metrics(cluster[1]).get('nova_rpc_zmq_receiver_dropped_total{reason="bad_body"}', 0) == before + 1,
             timeout=10, what="the drop to be counted")


def test_notify_to_a_topic_that_is_not_one_raises_at_once(cluster):
    with pytest.raises(LocalError, match="notification topics end in"):
        rpc.notify({}, "compute", notification(5), False)


def test_a_proxy_that_takes_no_notifications_is_told_at_create_consumer(cluster):
    conn = rpc.create_connection()
    try:
        with pytest.raises(TypeError, match="notifications-info"):
            conn.create_consumer("notifications-info", object())
    finally:
        conn.close()
