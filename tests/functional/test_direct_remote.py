"""Calls between two of our hosts skip both receivers once the service
named its port (``impl_zmq/remote.py``); an old-driver service keeps the
receivers' path and byte-exact frames; a forged port is dropped.

Host A (127.0.0.1) runs a receiver and the caller (a ``Driver`` in this
process); host B (127.0.0.2) a receiver and the services. The receivers'
``received`` counters (``/metrics``) tell whether a call went through them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from typing import Any, Callable, Iterator

import pytest
import zmq

from nova_rpc_zmq import metrics, wire
from nova_rpc_zmq.errors import Timeout
from nova_rpc_zmq.impl_zmq import remote
from nova_rpc_zmq.impl_zmq.driver import Driver
from nova_rpc_zmq.testing import LocalHost, free_port
from tests.support import scaled, wait_for

A, B = "127.0.0.1", "127.0.0.2"
TOPICS = ("demo", "victim", "oldsvc", "rogue", "pair")
#: Messages one round of where asks (and their answers, and a stray
#: message of a path still connecting) may take through a receiver.
ASK_ROUND = 2 * remote.ASKS + 2


def m(method: str, **args: Any) -> dict:
    return {"method": method, "args": args}


class Hosts:
    """Hosts A and B with a receiver each (health page on), one ring."""

    def __init__(self, base: str) -> None:
        ring = os.path.join(base, "ring.json")
        with open(ring, "w") as f:
            json.dump(dict({t: [B] for t in TOPICS}, callers=[A]), f)
        first = free_port(A)
        # a range of our own: other tests may hold ports of the default one
        ports = "%d:%d" % (first, first + 40)
        # the receiver's port is the same on every host
        port = free_port(A)
        self.health: dict[str, int] = {}
        self.hosts: dict[str, LocalHost] = {}
        for address in (A, B):
            self.health[address] = free_port(address)
            self.hosts[address] = LocalHost(
                host=address, address=address, port=port, matchmaker="ring",
                ringfile=ring, base_dir=base,
                extra={"rpc_zmq_health_port": self.health[address],
                       "rpc_response_timeout": 20,
                       "rpc_zmq_direct_ports": ports})

    def start(self) -> "Hosts":
        for h in self.hosts.values():
            h.start_receiver(scaled(20))
        for address in (A, B):
            wait_for(lambda: self._up(address), 20, what="health page")
        return self

    def _up(self, address: str) -> bool:
        try:
            self.received(address)
            return True
        except OSError:
            return False

    def received(self, address: str) -> int:
        """Messages receiver ``address`` took in so far."""
        conn = http.client.HTTPConnection(address, self.health[address],
                                          timeout=scaled(5))
        try:
            conn.request("GET", "/metrics")
            body = conn.getresponse().read().decode()
        finally:
            conn.close()
        return metrics.parse(body)["nova_rpc_zmq_receiver_received_total"]

    def stop(self) -> None:
        for h in self.hosts.values():
            h.stop()


@contextlib.contextmanager
def two_hosts(prefix: str, prepare: Callable[[Hosts], None] = lambda h: None
              ) -> Iterator[Hosts]:
    """Hosts A and B running, service ``svc`` of ``demo`` on B;
    ``prepare(hosts)`` runs before they start."""
    base = tempfile.mkdtemp(prefix=prefix)  # short: ipc paths are limited
    h = Hosts(base)
    try:
        prepare(h)
        h.start()
        h.hosts[B].start_service("svc", topic="demo", timeout=scaled(30))
        yield h
    finally:
        h.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    with two_hosts("nrzd-") as h:
        yield h


def a_caller(hosts: Hosts) -> Iterator[Driver]:
    """A ``Driver`` of host A, cleaned up after."""
    drv = Driver(hosts.hosts[A].settings())
    try:
        yield drv
    finally:
        drv.cleanup()


@pytest.fixture
def caller(hosts: Hosts) -> Iterator[Driver]:
    yield from a_caller(hosts)


def warm_up(drv: Driver, topic: str) -> None:
    """Call ``topic`` until a call took the direct path (bounded)."""
    def direct() -> bool:
        before = drv.counters.get("direct.calls")
        value = uuid.uuid4().hex
        assert drv.call({}, topic, m("echo", value=value),
                        timeout=scaled(10)) == value
        return drv.counters.get("direct.calls") > before

    wait_for(direct, scaled(20), interval=0.05,
             what="a direct call to %s" % topic)


@contextlib.contextmanager
def crossing_no_receiver(hosts: Hosts) -> Iterator[None]:
    """The block's messages cross neither receiver. A round of where asks
    and answers may (a refresh, or a reply sent before the reply path's
    handshake on a loaded machine): at most ASK_ROUND each."""
    before = {a: hosts.received(a) for a in (A, B)}
    yield
    after = {a: hosts.received(a) for a in (A, B)}
    assert all(after[a] - before[a] <= ASK_ROUND for a in (A, B)), \
        (before, after)


def test_calls_skip_both_receivers_once_the_port_is_known(
        hosts: Hosts, caller: Driver) -> None:
    warm_up(caller, "demo")
    # the base route would take 30 requests and 30 replies through them
    with crossing_no_receiver(hosts):
        for i in range(30):
            assert caller.call({}, "demo", m("echo", value=i),
                               timeout=scaled(10)) == i
    assert caller.counters.get("direct.where_answered") >= 1
    assert caller.counters.get("direct.where_bad_port") == 0


def test_a_streamed_multicall_comes_back_in_order(
        hosts: Hosts, caller: Driver) -> None:
    warm_up(caller, "demo")
    before = hosts.received(A)
    values = list(caller.multicall({}, "demo", m("count", n=200),
                                   timeout=scaled(10)))
    assert values == list(range(200))
    # the parts came straight (the base route would be 200 messages)
    assert hosts.received(A) - before <= ASK_ROUND


def test_a_service_killed_mid_call_times_out_and_a_restart_works(
        hosts: Hosts, caller: Driver) -> None:
    b = hosts.hosts[B]
    svc = b.start_service("victim", topic="victim", timeout=scaled(30))
    warm_up(caller, "victim")
    outcome: dict[str, Any] = {}

    def slow_call() -> None:
        try:
            outcome["value"] = caller.call({}, "victim", m("slow", seconds=30),
                                           timeout=scaled(4))
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            outcome["error"] = exc

    t = threading.Thread(target=slow_call)
    t.start()
    time.sleep(0.5)
    svc.popen.send_signal(signal.SIGKILL)
    t.join(scaled(30))
    assert not t.is_alive()
    assert isinstance(outcome.get("error"), Timeout), outcome
    b.procs.remove(svc)
    svc.stop()
    b.start_service("victim2", topic="victim", timeout=scaled(30))
    # the next call works, on whichever path
    assert caller.call({}, "victim", m("echo", value="again"),
                       timeout=scaled(10)) == "again"
    warm_up(caller, "victim")  # and the direct path comes back


class OldService:
    """A service that speaks only the old protocol, on host B behind its
    receiver: it drops probes (an unknown style to old nodes), keeps every
    call's frames and answers each the old way through receiver A.
    ``on_probe(frames)`` sees the probes."""

    def __init__(self, hosts: Hosts, topic: str,
                 on_probe: Callable[[list, Any], None] = lambda f, push: None
                 ) -> None:
        self.ctx = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVTIMEO, 100)
        self.pull.connect("ipc://%s/zmq_topic_%s.%s"
                          % (hosts.hosts[B].ipc_dir, topic, B))
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 1000)
        self.push.connect("tcp://%s:%d" % (A, hosts.hosts[A].port))
        self.on_probe = on_probe
        self.calls: list[list[bytes]] = []
        self.probes: list[list[bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + scaled(60)
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                frames = self.pull.recv_multipart()
            except zmq.Again:
                continue
            if frames[2] == wire.STYLE_PROBE:
                self.probes.append(frames)
                self.on_probe(frames, self.push)
                continue
            self.calls.append(frames)
            ctx, body = json.loads(frames[3])
            args = body["args"]
            reply = {"method": "-process_reply",
                     "args": {"msg_id": args["msg_id"],
                              "response": [args["msg"][1]["args"]["value"]]}}
            self.push.send_multipart([args["msg_id"].encode(),
                                      args["topic"].encode(), b"cast",
                                      json.dumps([ctx, reply]).encode()])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(scaled(5))
        self.ctx.destroy(0)


def test_an_old_driver_service_gets_byte_exact_frames_through_its_receiver(
        hosts: Hosts, caller: Driver) -> None:
    old = OldService(hosts, "oldsvc")
    try:
        time.sleep(0.3)  # the PULL's ipc connection
        before = hosts.received(B)
        for i in range(5):
            assert caller.call({}, "oldsvc", m("echo", value=i),
                               timeout=scaled(10)) == i
        assert hosts.received(B) - before >= 5  # every call: receiver B
    finally:
        old.close()
    assert len(old.calls) == 5
    replies = caller.replies
    dtopic = "oldsvc." + B
    for frames in old.calls:
        _ctx, body = json.loads(frames[3])
        msg_id = body["args"]["msg_id"]
        request = wire.call_request(msg_id, replies.reply_topic, {},
                                    body["args"]["msg"][1])
        assert frames == wire.encode(replies.caller_mark, dtopic, {},
                                     request, False)
    # one round of where asks, which old nodes drop as an unknown style
    assert 0 < len(old.probes) <= remote.ASKS
    assert caller.counters.get("direct.calls") == 0


def test_a_forged_where_answer_is_dropped_and_counted(
        hosts: Hosts, caller: Driver) -> None:
    ports = remote.port_range(caller.settings)
    assert ports is not None

    def forge(frames: list, push: Any) -> None:
        ask = remote.parse_ask(frames[0].decode())
        assert ask is not None
        token, n, _reply_port, host = ask
        push.send_multipart(remote.answer_frames(token, n, ports.stop + 7,
                                                 host))

    rogue = OldService(hosts, "rogue", on_probe=forge)
    try:
        time.sleep(0.3)
        for i in range(3):
            assert caller.call({}, "rogue", m("echo", value=i),
                               timeout=scaled(10)) == i
        wait_for(lambda: caller.counters.get("direct.where_bad_port")
                 == remote.ASKS,
                 scaled(10), what="the forged answer counted")
    finally:
        rogue.close()
    assert len(rogue.calls) == 3  # all through the receiver
    assert caller.counters.get("direct.calls") == 0


def test_calls_spread_over_the_worker_processes_of_a_topic(
        hosts: Hosts, caller: Driver) -> None:
    b = hosts.hosts[B]
    for name in ("w1", "w2"):
        b.start_service(name, topic="pair", timeout=scaled(30))
    warm_up(caller, "pair")
    seen: set[str] = set()

    def both() -> bool:
        before = caller.counters.get("direct.calls")
        who = caller.call({}, "pair", m("whoami"), timeout=scaled(10))
        if caller.counters.get("direct.calls") > before:
            seen.add(who["name"])
        return seen == {"w1", "w2"}

    wait_for(both, scaled(30), interval=0.05,
             what="direct calls reaching both workers")


def hand_made_call(drv: Driver, dtopic: str, value: str) -> tuple:
    """(msg_id, frames, reply queue) of an echo call to ``dtopic`` that a
    test sends itself; the caller of ``drv`` waits for its reply."""
    replies = drv.replies
    msg_id = replies.new_msg_id()
    request = wire.call_request(msg_id, replies.reply_topic, {},
                                m("echo", value=value))
    frames = wire.encode(replies.caller_mark, dtopic, {}, request, False)
    return msg_id, frames, replies.register(msg_id, B)


def hand_made_direct_call(drv: Driver, dtopic: str, value: str) -> tuple:
    """``hand_made_call`` in the direct style."""
    replies = drv.replies
    msg_id = replies.new_msg_id()
    frames = wire.encode_direct_call(replies.caller_mark, dtopic, msg_id,
                                     replies.reply_topic, {"u": 1},
                                     m("echo", value=value))
    return msg_id, frames, replies.register(msg_id, B)


@pytest.mark.parametrize("make", [hand_made_call, hand_made_direct_call],
                         ids=["wire", "direct-style"])
def test_a_call_that_reaches_the_wrong_consumer_is_forwarded(
        hosts: Hosts, caller: Driver, make: Callable[..., tuple]) -> None:
    """A port whose consumer died may be bound by a consumer of another
    topic before the caller asks again: that consumer hands the call to
    its receiver (in the wire's form, the only one receivers read), which
    routes it, and the call is answered."""
    warm_up(caller, "demo")
    warm_up(caller, "pair")
    pool = caller.remote._peers.pools[("pair." + B, B)]
    replies = caller.replies
    msg_id, frames, queue = make(caller, "demo." + B, "forwarded")
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    try:
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(pool.endpoints[0])  # a consumer of "pair", not "demo"
        push.send_multipart(frames)
        response, _more, _seq = queue.get(timeout=scaled(10))
        assert response == ["forwarded"]
    finally:
        replies.unregister(msg_id)
        push.close(0)
        ctx.term()


def test_a_packed_call_is_answered_and_a_forged_one_dropped(
        hosts: Hosts, caller: Driver) -> None:
    """The direct path carries a message as one part (``frames.pack``):
    a consumer answers one sent by hand, and drops one-part messages that
    do not add up (and the service keeps answering)."""
    from nova_rpc_zmq import frames as frames_io
    warm_up(caller, "demo")
    pool = caller.remote._peers.pools[("demo." + B, B)]
    replies = caller.replies
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    try:
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(pool.endpoints[0])
        forged = frames_io.PACKED_MARK + b"\x04" + b"\xff" * 16 + b"junk"
        for bad in ([forged], [frames_io.PACKED_MARK], [b"\x00" * 64]):
            push.send_multipart(bad)
        msg_id, frames, queue = hand_made_call(caller, "demo." + B, "packed")
        try:
            packed = frames_io.pack(frames)
            assert len(packed) == 1
            push.send_multipart(packed)
            response, _more, _seq = queue.get(timeout=scaled(10))
            assert response == ["packed"]
        finally:
            replies.unregister(msg_id)
    finally:
        push.close(0)
        ctx.term()
    assert caller.call({}, "demo", m("echo", value="after"),
                       timeout=scaled(10)) == "after"


def test_replies_between_our_hosts_come_in_the_direct_style(
        hosts: Hosts, caller: Driver) -> None:
    """A service of ours answers a caller of this version with the reply
    alone (``wire.encode_direct_reply``), streamed parts too."""
    warm_up(caller, "demo")
    before = caller.counters.get("replies.direct_style")
    with crossing_no_receiver(hosts):
        for i in range(20):
            assert caller.call({}, "demo", m("echo", value=[i, None, "\u00e9"]),
                               timeout=scaled(10)) == [i, None, "\u00e9"]
        assert list(caller.multicall({}, "demo", m("count", n=50),
                                     timeout=scaled(10))) == list(range(50))
    # 20 replies and 50 parts (and the end of the stream, if it came alone)
    assert caller.counters.get("replies.direct_style") - before >= 70
    assert caller.counters.get("replies.dropped.bad_body") == 0


def test_a_caller_of_an_earlier_version_gets_replies_of_parts(
        hosts: Hosts) -> None:
    """A caller that numbers its asks as the previous version did (from
    PACKED_ASKS) reads only replies of the wire: it is sent those."""
    import itertools
    for drv in a_caller(hosts):
        drv.remote._ids = itertools.count(remote.PACKED_ASKS)
        warm_up(drv, "demo")
        with crossing_no_receiver(hosts):
            for i in range(10):
                assert drv.call({}, "demo", m("echo", value=i),
                                timeout=scaled(10)) == i
        assert drv.counters.get("direct.calls") >= 10
        assert drv.counters.get("replies.direct_style") == 0
        # it read ``:p`` answers, so it sends the wire's form
        assert not drv.remote.takes_direct_calls("demo." + B, B)


def test_a_forged_direct_reply_is_dropped_and_counted(
        hosts: Hosts, caller: Driver) -> None:
    """Anyone who reaches a caller's reply port may send it anything: a
    malformed direct reply is dropped and counted, a late one for no
    waiting call too, and calls go on."""
    warm_up(caller, "demo")
    port = caller.replies.direct_port
    assert port
    mark = wire.DIRECT_REPLY_MARK
    msg_id, _frames, queue = hand_made_call(caller, "demo." + B, "unused")
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    try:
        push.setsockopt(zmq.LINGER, 1000)
        push.connect("tcp://%s:%d" % (A, port))
        for bad in (mark + b"not json", mark + b'{"a": 1}',
                    mark + b'["%s", [1], 1, -1]' % msg_id.encode()):
            push.send(bad)
        late = wire.encode_direct_reply("0" * 32, ["late"])
        push.send_multipart(late)
        push.send_multipart(wire.encode_direct_reply(msg_id, ["forged"]))
        response, more, seq = queue.get(timeout=scaled(10))
        # the one well-formed reply for the waiting msg_id is delivered (a
        # caller's port admits anyone unless CURVE is on: see test_curve)
        assert (response, more, seq) == (["forged"], False, None)
    finally:
        caller.replies.unregister(msg_id)
        push.close(0)
        ctx.term()
    wait_for(lambda: caller.counters.get("replies.late") >= 1, scaled(10),
             what="the late reply counted")
    assert caller.counters.get("replies.dropped.bad_json") == 1
    assert caller.counters.get("replies.dropped.bad_body") == 2
    assert caller.call({}, "demo", m("echo", value="after"),
                       timeout=scaled(10)) == "after"


def test_calls_between_our_hosts_go_in_the_direct_style(
        hosts: Hosts, caller: Driver) -> None:
    """The consumers of this version said ``:d``: the caller sends them
    the call alone (``wire.encode_direct_call``), and they answer it."""
    warm_up(caller, "demo")
    assert caller.remote.takes_direct_calls("demo." + B, B)
    ctx = {"user_id": "u-\u00e9", "roles": ["a", "b"], "n": None}
    with crossing_no_receiver(hosts):
        for i in range(20):
            assert caller.call(ctx, "demo", m("echo", value={"i": i}),
                               timeout=scaled(10)) == {"i": i}
    with pytest.raises(Exception) as info:
        caller.call(ctx, "demo", m("no_such_method"), timeout=scaled(10))
    assert "no_such_method" in str(info.value)


def test_a_malformed_direct_call_is_dropped_and_the_service_goes_on(
        hosts: Hosts, caller: Driver) -> None:
    warm_up(caller, "demo")
    pool = caller.remote._peers.pools[("demo." + B, B)]
    mark = wire.DIRECT_CALL_MARK
    msg_id, good, queue = hand_made_direct_call(caller, "demo." + B, "good")
    bad_ctx = json.loads(good[0][len(mark):])
    bad_ctx[4] = "not a dict"
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    try:
        push.setsockopt(zmq.LINGER, 1000)
        push.connect(pool.endpoints[0])
        for bad in (mark, mark + b"[1, 2]", mark + b"\xff",
                    mark + json.dumps(bad_ctx).encode(),
                    mark + b"[" * 5000 + b"]" * 5000):
            push.send(bad)
        push.send_multipart(good)
        response, _more, _seq = queue.get(timeout=scaled(10))
        assert response == ["good"]
    finally:
        caller.replies.unregister(msg_id)
        push.close(0)
        ctx.term()
    assert caller.call({}, "demo", m("echo", value="after"),
                       timeout=scaled(10)) == "after"
