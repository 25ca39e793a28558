"""Rolling upgrade: our nodes talk with a node of the old Havana impl_zmq.

The old node is played by plain pyzmq sockets that build and read the
frames byte for byte as the old driver did (nothing from our ``wire`` module
is used to make them), against our real receiver and services.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import zmq

from nova_rpc_zmq import rpc
from nova_rpc_zmq.testing import LocalHost
from tests.support import scaled


@pytest.fixture(scope="module")
def host():
    h = LocalHost(host="localhost")
    try:
        h.start_receiver()
        h.start_service("threads")
        rpc.init(h.settings())
        yield h
    finally:
        rpc.cleanup()
        h.stop()


@pytest.fixture
def zctx():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


#: the probe id of each old caller's SUB socket (pyzmq sockets take no
#: attributes of ours), keyed by id(socket)
PROBES: dict = {}


def old_reply_listener(ctx, host, msg_id):
    """The old caller's SUB socket on the host's reply topic, filtered on
    msg_id, and on a probe id (see ``wait_subscribed``): both filters go to
    the receiver together when the SUB connects."""
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, msg_id.encode())
    probe = PROBES[id(sub)] = "probe-" + uuid.uuid4().hex
    sub.setsockopt(zmq.SUBSCRIBE, probe.encode())
    sub.setsockopt(zmq.RCVTIMEO, int(scaled(10) * 1000))
    sub.connect("ipc://%s/zmq_topic_zmq_replies.localhost" % host.ipc_dir)
    return sub


def old_push(ctx, host):
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.connect("tcp://127.0.0.1:%d" % host.port)
    return push


def old_call_frames(style, msg_id, topic, method, args):
    ctx = json.dumps({"user_id": "old", "project_id": "p"})
    inner = {"method": method, "args": args}
    body = {"method": "-reply",
            "args": {"msg_id": msg_id, "topic": "zmq_replies.localhost",
                     "msg": [ctx, inner]}}
    if style == "cast":
        return [b"0", topic.encode(), b"cast", json.dumps([ctx, body]).encode()]
    return [b"0", topic.encode(), b"impl_zmq_v2", ctx.encode(),
            b"oslo.message", json.dumps(body).encode(), b"oslo.version", b"2.0"]


def wait_subscribed(sub, push):
    """Return once the receiver holds ``sub``'s subscriptions.

    The old driver subscribed, then sent, and lost a reply that beat the
    subscription (the slow joiner).  Here a probe reply addressed to the
    SUB's probe id is sent through the receiver until one comes back: the
    msg_id filter went with the probe's, so from then on the real reply
    cannot be lost to the race.  Probes are not the request: it is sent
    exactly once afterwards, so a lost request fails the test."""
    probe = PROBES.pop(id(sub))
    frames = [probe.encode(), b"zmq_replies.localhost", b"cast",
              json.dumps(["{}", {"method": "-process_reply",
                                 "args": {"msg_id": probe, "response": []}}]
                         ).encode()]
    deadline = time.monotonic() + scaled(10)
    while time.monotonic() < deadline:
        push.send_multipart(frames)
        if sub.poll(100):
            got = sub.recv_multipart()
            assert got[0] == probe.encode(), got
            # late probes are filtered out by the SUB from now on
            sub.setsockopt(zmq.UNSUBSCRIBE, probe.encode())
            return
    raise AssertionError("the old caller's SUB never got a probe back")


def receive_reply(sub, push, frames):
    """Send the old call once the SUB is known to be subscribed, exactly
    once, and wait for its reply."""
    wait_subscribed(sub, push)
    push.send_multipart(frames)
    try:
        return sub.recv_multipart()
    except zmq.Again:
        raise AssertionError("no reply for the old caller's only request"
                             ) from None


@pytest.mark.parametrize("style", ["cast", "impl_zmq_v2"])
def test_old_caller_gets_one_process_reply_with_the_whole_list(host, zctx, style):
    msg_id = uuid.uuid4().hex
    sub = old_reply_listener(zctx, host, msg_id)
    push = old_push(zctx, host)
    reply = receive_reply(sub, push, old_call_frames(
        style, msg_id, "demo_threads.localhost", "count", {"n": 4}))
    assert reply[0] == msg_id.encode()
    assert reply[1] == b"zmq_replies.localhost"
    assert reply[2] == b"cast"  # the old caller reads msg[-1] of legacy frames
    ctx, body = json.loads(reply[3])
    assert body["method"] == "-process_reply"
    assert body["args"]["msg_id"] == msg_id
    assert body["args"]["response"] == [0, 1, 2, 3]
    assert "more" not in body["args"]
    # exactly one reply message: nothing else follows for this msg_id
    sub.setsockopt(zmq.RCVTIMEO, 300)
    with pytest.raises(zmq.Again):
        sub.recv_multipart()


def test_old_caller_gets_a_remote_exception_it_can_read(host, zctx):
    msg_id = uuid.uuid4().hex
    sub = old_reply_listener(zctx, host, msg_id)
    push = old_push(zctx, host)
    reply = receive_reply(sub, push, old_call_frames(
        "cast", msg_id, "demo_threads.localhost", "fail", {"message": "bad"}))
    _ctx, body = json.loads(reply[3])
    (item,) = body["args"]["response"]
    failure = json.loads(item["exc"])
    assert failure["class"] == "ValueError"
    # named as Python 2 nodes know it, so their allow lists match
    assert failure["module"] == "exceptions"
    assert failure["message"] == "bad"
    assert any("Traceback" in line for line in failure["tb"])


def test_old_cast_is_delivered(host, zctx):
    push = old_push(zctx, host)
    before = rpc.call({}, "demo_threads", {"method": "stats", "args": {}})["record"]
    ctx = json.dumps({"user_id": "old"})
    push.send_multipart([b"0", b"demo_threads.localhost", b"cast",
                         json.dumps([ctx, {"method": "record",
                                           "args": {"value": "old"}}]).encode()])
    from tests.support import wait_for
    wait_for(lambda: rpc.call({}, "demo_threads", {"method": "stats", "args": {}})
             ["record"] == before + 1, timeout=5, what="the old node's cast")


@pytest.mark.parametrize("kind", ["values", "exception"])
def test_our_caller_against_an_old_server(host, zctx, kind):
    """An old service consumes ``oldsvc`` on this host and answers the old way."""
    pull = zctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVTIMEO, int(scaled(10) * 1000))
    # a topic of its own per case: a PUSH may still hold the pipe of the
    # previous case's (closed) socket for a moment
    topic = "oldsvc_" + kind
    pull.connect("ipc://%s/zmq_topic_%s.localhost" % (host.ipc_dir, topic))
    push = old_push(zctx, host)
    import threading
    seen = {}

    def old_server():
        frames = pull.recv_multipart()
        seen["frames"] = frames
        ctx, body = json.loads(frames[3])
        args = body["args"]
        if kind == "values":
            response = [10, 20, 30]
        else:
            response = [{"exc": json.dumps({
                "class": "KeyError", "module": "exceptions", "message": "'gone'",
                "tb": ["Traceback (most recent call last):\n", "KeyError: 'gone'\n"],
                "args": ["gone"], "kwargs": {}})}]
        reply = {"method": "-process_reply",
                 "args": {"msg_id": args["msg_id"], "response": response}}
        push.send_multipart([args["msg_id"].encode(), args["topic"].encode(),
                             b"cast", json.dumps([ctx, reply]).encode()])

    t = threading.Thread(target=old_server)
    t.start()
    try:
        if kind == "values":
            assert list(rpc.multicall({"user_id": "new"}, topic,
                                      {"method": "m", "args": {"a": 1}})) == [10, 20, 30]
        else:
            # Python 2 nodes name builtins "exceptions"
            with pytest.raises(KeyError):
                rpc.call({}, topic, {"method": "m", "args": {}})
    finally:
        t.join(scaled(15))
    frames = seen["frames"]
    assert frames[1] == ("%s.localhost" % topic).encode()
    assert frames[2] == b"cast"
    ctx, body = json.loads(frames[3])
    assert isinstance(ctx, str)  # double-encoded context, as old nodes expect
    assert body["method"] == "-reply"
    assert body["args"]["topic"] == "zmq_replies.localhost"
    assert body["args"]["msg"][1]["method"] == "m"
