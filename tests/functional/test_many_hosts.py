"""Hundreds of hosts: a fanout to a ring of 2,000, a receiver with 10,000
topics, a low open-files limit, replies only to known hosts, idle sockets
closed, and casts to a host that refuses our CURVE key.

The ring lists one real host (a receiver and a demo service on 127.0.0.1)
among 1,999 loopback addresses 127.0.x.y where nothing listens: a PUSH
socket queues for them and retries its connection in the background, which
is loopback traffic only. Senders run in their own processes
(``fanout_script.py``), so their descriptors are counted alone and their
limits can be set.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from typing import Any, Iterator

import pytest
import zmq

from nova_rpc_zmq import config, wire
from nova_rpc_zmq.errors import AuthenticationError
from nova_rpc_zmq.impl_zmq.driver import Driver
from nova_rpc_zmq.impl_zmq.sockets import Outbound
from nova_rpc_zmq.concurrency import get_handler
from nova_rpc_zmq.testing import LocalHost, child_env
from tests.support import scaled, wait_for

HOSTS = 2000
REAL = "127.0.0.1"
REAL_INDEX = 20          # early enough to be reached under a low limit
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "fanout_script.py")


def ring_hosts() -> list[str]:
    fake = ["127.0.%d.%d" % (1 + i // 250, 1 + i % 250)
            for i in range(HOSTS - 1)]
    return fake[:REAL_INDEX] + [REAL] + fake[REAL_INDEX:]


def m(method: str, **args: Any) -> dict:
    return {"method": method, "args": args}


@pytest.fixture(scope="module")
def ring_host() -> Iterator[LocalHost]:
    """A real host (receiver + service ``svc``) in a ring of 2,000 hosts."""
    base = tempfile.mkdtemp(prefix="nrz-many-")
    ringfile = os.path.join(base, "ring.json")
    with open(ringfile, "w") as f:
        json.dump({"demo": ring_hosts(), "demo_svc": [REAL]}, f)
    h = LocalHost(host=REAL, address=REAL, matchmaker="ring",
                  ringfile=ringfile, base_dir=base,
                  extra={"rpc_response_timeout": 20})
    try:
        h.start_receiver(scaled(20))
        h.start_service("svc", timeout=scaled(30))
        yield h
    finally:
        h.stop()
        shutil.rmtree(base, ignore_errors=True)


def client(h: LocalHost) -> Driver:
    return Driver(h.settings(rpc_response_timeout=scaled(10)))


def fanout_values(h: LocalHost) -> list:
    drv = client(h)
    try:
        return drv.call({}, "demo_svc", m("stats"))["values"]
    finally:
        drv.cleanup()


def run_sender(h: LocalHost, mode: str, value: str, unreached: str = "",
               nofile: int | None = None) -> dict:
    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    argv = [sys.executable, SCRIPT, h.conf_path, mode, value]
    if unreached:
        argv.append(unreached)
    proc = subprocess.run(argv, capture_output=True, text=True, env=child_env(),
                          timeout=scaled(60), preexec_fn=limit)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, "no result line:\n" + proc.stdout[-2000:] + proc.stderr[-3000:]
    out = json.loads(lines[-1])
    out["stderr"] = proc.stderr
    return out


def test_fake_ring_hosts_do_not_listen(ring_host):
    """The 1,999 other hosts are addresses where nothing listens."""
    for addr in ("127.0.1.1", "127.0.8.249"):
        with socket.socket() as s:
            s.settimeout(scaled(2))
            assert s.connect_ex((addr, ring_host.port)) == errno.ECONNREFUSED


@pytest.mark.parametrize("mode", ["threads", "eventlet"])
def test_fanout_to_2000_hosts(ring_host, mode):
    value = "fanout-%s-%s" % (mode, uuid.uuid4().hex[:8])
    out = run_sender(ring_host, mode, value)
    assert out["eventlet"] is (mode == "eventlet")
    assert out["error"] is None, out["stderr"][-3000:]
    assert out["outbound"] == HOSTS
    assert out["counters"].get("send_failed", 0) == 0
    # one socket (one descriptor) per peer, not three
    assert out["fds"] < HOSTS * 1.5, out   # three per peer was 6,000+
    assert out["seconds"] < scaled(20)
    wait_for(lambda: value in fanout_values(ring_host), timeout=15,
             what="the real host of the ring to get the fanout")
    print("fanout to %d hosts (%s): %.2fs, %d fds"
          % (HOSTS, mode, out["seconds"], out["fds"]))


def test_low_fd_limit_names_the_limit_and_reaches_what_it_can(ring_host):
    value = "lowfd-" + uuid.uuid4().hex[:8]
    out = run_sender(ring_host, "threads", value,
                     unreached="demo.127.0.8.249", nofile=256)
    assert out["nofile"] == [256, 256]
    assert out["error"] is None, out["stderr"][-3000:]  # the fanout went on
    assert 50 < out["outbound"] < 256
    # every host without a socket failed, plus the unreached cast
    assert out["counters"]["send_failed"] == HOSTS - out["outbound"] + 1
    err = out["unreached_error"]
    assert err is not None and err.startswith("SocketBudgetError: ")
    assert "RLIMIT_NOFILE 256" in err and "ulimit -n" in err \
        and "LimitNOFILE" in err
    assert "ZMQError" not in out["stderr"]
    # logged once for the run, not once per host
    assert out["stderr"].count("refused so far") == 1
    wait_for(lambda: value in fanout_values(ring_host), timeout=15,
             what="a host reached before the limit to get the fanout")


def test_reply_to_unknown_host_opens_no_socket(ring_host):
    """A request naming 127.0.9.7 (not in the ring) as its caller: the
    service must not connect there, and normal calls still work."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.9.7", ring_host.port))
    listener.listen(16)
    listener.setblocking(False)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    log = os.path.join(ring_host.dir, "service-svc.log")
    before = os.path.getsize(log)
    try:
        push.connect("tcp://%s:%d" % (REAL, ring_host.port))
        for i in range(5):
            msg_id = "evil%d" % i
            body = wire.call_request(msg_id, "zmq_replies.127.0.9.7", {},
                                     m("echo", value=i))
            push.send_multipart(wire.encode(msg_id, "demo_svc." + REAL, {},
                                            body), copy=True)

        def logged() -> bool:
            with open(log, "rb") as f:
                f.seek(before)
                return b"names a host this service does not know" in f.read()
        wait_for(logged, timeout=15, what="the service to log the drop")
        drv = client(ring_host)
        try:
            assert drv.call({}, "demo_svc", m("echo", value="ok")) == "ok"
        finally:
            drv.cleanup()
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        push.close(0)
        ctx.term()
        listener.close()


def test_receiver_serves_10000_topics():
    """10,000 distinct topics: the receiver opens a socket for each (seen as
    its ipc files, which do not depend on the receiver answering /metrics
    while busy) and still routes a call to a live service."""
    h = LocalHost(extra={"rpc_response_timeout": 20})
    drv = None
    try:
        h.start_receiver(scaled(20))
        h.start_service("svc", timeout=scaled(30))
        drv = client(h)
        assert drv.call({}, "demo_svc", m("echo", value=1)) == 1
        for i in range(10000):
            drv.cast({}, "t%05d" % i, m("record", value=i))
        # two descriptors per topic (socket + ipc listener): where the hard
        # limit is below ~20,200 the last few are dropped, and counted
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        want = min(10000, (hard - 200) // 2)

        def topics() -> int:
            return sum(1 for name in os.listdir(h.ipc_dir)
                       if name.startswith("zmq_topic_t"))
        wait_for(lambda: topics() >= want, timeout=20, interval=0.2,
                 what="the receiver to open %d topic sockets" % want)
        assert drv.call({}, "demo_svc", m("echo", value=2),
                        timeout=scaled(15)) == 2
        print("receiver topics: %d" % topics())
    finally:
        if drv is not None:
            drv.cleanup()
        h.stop()


def test_idle_outbound_sockets_are_closed_and_reopened():
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    pull.setsockopt(zmq.RCVTIMEO, int(scaled(5) * 1000))
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    settings = config.default_settings(
        rpc_zmq_port=port, rpc_zmq_host="me", rpc_zmq_bind_address="127.0.0.1",
        rpc_cast_timeout=5.0, rpc_zmq_outbound_idle_timeout=0.2)
    out = Outbound(get_handler("threading"), ctx, settings)
    try:
        out.send("127.0.0.1", [b"first"])
        assert pull.recv_multipart() == [b"first"]

        def evicted() -> bool:
            out.send("localhost", [b"keepalive"])   # another peer stays busy
            return "127.0.0.1" not in out.hosts()
        wait_for(evicted, timeout=5, interval=0.05,
                 what="the idle socket to be closed")
        assert out.evicted >= 1
        assert "localhost" in out.hosts()
        out.send("127.0.0.1", [b"again"])        # a later send reopens
        assert "127.0.0.1" in out.hosts()
        for _ in range(1000):      # the keepalives came first
            if pull.recv_multipart() == [b"again"]:
                break
        else:
            raise AssertionError("the reopened socket delivered nothing")
    finally:
        out.close(0)
        pull.close()
        ctx.term()


@pytest.fixture(scope="module")
def curve_host() -> Iterator[LocalHost]:
    h = LocalHost(host="localhost")
    h.enable_curve()
    try:
        h.start_receiver(scaled(20))
        h.start_service("svc", timeout=scaled(30))
        yield h
    finally:
        h.stop()


def test_cast_to_host_refusing_our_key_raises(curve_host):
    from nova_rpc_zmq.security import generate, write_keypair
    stranger = os.path.join(curve_host.dir, "stranger.key")
    write_keypair(stranger, generate(), force=True)
    drv = Driver(curve_host.settings(rpc_zmq_curve_key_file=stranger))
    try:
        drv.cast({}, "demo_svc", m("record", value="first"))
        wait_for(lambda: drv.security.failure("localhost"), timeout=10,
                 what="the refusal to be known")
        for i in range(100):
            with pytest.raises(AuthenticationError) as info:
                drv.cast({}, "demo_svc", m("record", value=i))
            assert "no matching key" in str(info.value)
    finally:
        drv.cleanup()
    good = Driver(curve_host.settings(rpc_response_timeout=scaled(10)))
    try:
        assert good.call({}, "demo_svc", m("stats"))["record"] == 0
    finally:
        good.cleanup()
