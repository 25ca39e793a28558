"""RPC through oslo.messaging's public API on the zmq driver, servers in
this process: call, cast, fanout, directed calls, round robin, exchanges,
timeouts, remote failures, retry and the port range."""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

import oslo_messaging
import pytest

from nova_rpc_zmq.testing import scaled, wait_for
from tests.oslo.omsupport import Endpoint, Failure

URLS = ["zmq+dummy://", "zmq://"]


@contextlib.contextmanager
def serving(transport: Any, topic: str, server: str,
            exchange: str | None = None) -> Iterator[Endpoint]:
    """An RPCServer on ``topic``/``server`` while the block runs."""
    endpoint = Endpoint(server)
    rpc_server = oslo_messaging.get_rpc_server(
        transport, oslo_messaging.Target(topic=topic, server=server,
                                         exchange=exchange),
        [endpoint], executor="threading")
    rpc_server.start()
    try:
        yield endpoint
    finally:
        rpc_server.stop()
        rpc_server.wait()


def client(transport: Any, topic: str, timeout: float = 10, **kw: Any) -> Any:
    return oslo_messaging.get_rpc_client(
        transport, oslo_messaging.Target(topic=topic, **kw),
        timeout=scaled(timeout))


@pytest.mark.parametrize("url", URLS)
def test_call_returns_the_value_and_carries_the_context(
        url: str, transport_factory: Any) -> None:
    transport = transport_factory(url)
    with serving(transport, "calc", "s1"):
        rpc = client(transport, "calc")
        assert rpc.call({}, "echo", value={"a": [1, 2.5, "x", None]}) == \
            {"a": [1, 2.5, "x", None]}
        assert rpc.call({"user": "alice"}, "context_value",
                        key="user") == "alice"
        assert rpc.call({}, "whoami") == "s1"


@pytest.mark.parametrize("url", URLS)
def test_cast_reaches_the_server(url: str, transport_factory: Any) -> None:
    transport = transport_factory(url)
    with serving(transport, "casts", "s1") as endpoint:
        client(transport, "casts").cast({}, "record", value=7)
        wait_for(lambda: endpoint.casts == [7], 10, what="the cast")


@pytest.mark.parametrize("url", URLS)
def test_directed_round_robin_and_fanout(url: str,
                                         transport_factory: Any) -> None:
    transport = transport_factory(url)
    with serving(transport, "work", "a") as a, \
            serving(transport, "work", "b") as b, \
            serving(transport, "work", "c") as c:
        rpc = client(transport, "work")
        # strict round robin: three calls in a row, three servers
        assert sorted(rpc.call({}, "whoami") for _ in range(3)) == \
            ["a", "b", "c"]
        for _ in range(3):
            rpc.cast({}, "record", value="rr")
        wait_for(lambda: (a.casts, b.casts, c.casts) ==
                 (["rr"], ["rr"], ["rr"]), 10, what="one cast per server")
        # directed
        for name in ("b", "b", "c"):
            assert client(transport, "work", server=name).call(
                {}, "whoami") == name
        # fanout: every server once
        client(transport, "work", fanout=True).cast({}, "record", value="f")
        wait_for(lambda: all(e.casts[-1:] == ["f"] for e in (a, b, c)), 10,
                 what="the fanout on every server")
        assert [len(e.casts) for e in (a, b, c)] == [2, 2, 2]


@pytest.mark.parametrize("url", URLS)
def test_exchanges_are_kept_apart(url: str, transport_factory: Any) -> None:
    transport = transport_factory(url)
    with serving(transport, "shared", "x1", exchange="one"):
        assert client(transport, "shared", exchange="one").call(
            {}, "whoami") == "x1"
        with pytest.raises(oslo_messaging.MessagingTimeout):
            client(transport, "shared", timeout=0.5,
                   exchange="two").call({}, "whoami")


@pytest.mark.parametrize("url", URLS)
def test_timeouts(url: str, transport_factory: Any) -> None:
    transport = transport_factory(url)
    started = time.monotonic()
    with pytest.raises(oslo_messaging.MessagingTimeout):
        client(transport, "nobody", timeout=0.5).call({}, "whoami")
    assert time.monotonic() - started < scaled(5)
    with serving(transport, "slow", "s1"):
        with pytest.raises(oslo_messaging.MessagingTimeout):
            client(transport, "slow", timeout=0.3).call({}, "sleep",
                                                        seconds=1.5)
        # the late reply is dropped; the next call gets its own answer
        assert client(transport, "slow").call({}, "echo", value=3) == 3


@pytest.mark.parametrize("url", URLS)
def test_remote_failures_are_rebuilt_as_oslo_messaging_does(
        url: str, transport_factory: Any) -> None:
    plain = transport_factory(url)
    allowing = transport_factory(url, allowed_remote_exmods=[Failure.__module__])
    with serving(plain, "failing", "s1"):
        with pytest.raises(ValueError) as info:
            client(plain, "failing").call({}, "boom", text="bad value")
        assert "bad value" in str(info.value)
        assert "Traceback" in str(info.value)  # the remote one
        # a module not allowed: a RemoteError naming the class
        with pytest.raises(oslo_messaging.RemoteError) as remote:
            client(plain, "failing").call({}, "fail", text="nope")
        assert remote.value.exc_type == "Failure"
        assert "nope" in remote.value.value
        # allowed: the class itself, with the remote traceback in its text
        with pytest.raises(Failure) as rebuilt:
            client(allowing, "failing").call({}, "fail", text="yes")
        assert "yes" in str(rebuilt.value)
        assert "Traceback" in str(rebuilt.value)


def test_cast_with_retry_zero_to_a_dead_server_fails(
        transport_factory: Any) -> None:
    from nova_rpc_zmq.oslo_driver import registry
    registry.DummyRegistry().register("rpc/openstack/ghost", "127.0.0.1:1",
                                      60)
    try:
        transport = transport_factory("zmq+dummy://")
        with pytest.raises(oslo_messaging.MessageDeliveryFailure):
            oslo_messaging.get_rpc_client(
                transport, oslo_messaging.Target(topic="ghost"),
                retry=0).cast({}, "record", value=1)
    finally:
        registry.DummyRegistry().unregister("rpc/openstack/ghost",
                                            "127.0.0.1:1")


def test_ports_range_exceeded(transport_factory: Any) -> None:
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        transport = transport_factory(
            "zmq+dummy://", rpc_zmq_bind_address="127.0.0.1",
            rpc_zmq_min_port=port, rpc_zmq_max_port=port + 1,
            rpc_zmq_bind_port_retries=3)
        server = oslo_messaging.get_rpc_server(
            transport, oslo_messaging.Target(topic="t", server="s"),
            [Endpoint("s")], executor="threading")
        with pytest.raises(Exception) as info:
            server.start()
    chain: list[str] = []
    exc: BaseException | None = info.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    assert any("ports range exceeded" in text and "rpc_zmq_bind_port_retries"
               in text for text in chain), chain


def test_matchmakers_to_come_say_what_works(transport_factory: Any) -> None:
    with pytest.raises(oslo_messaging.InvalidTransportURL) as info:
        transport_factory("zmq+etcd://")
    assert "'etcd'" in str(info.value)
    assert "zmq+redis://" in str(info.value)
    assert "zmq+sentinel://" in str(info.value)
    with pytest.raises(oslo_messaging.InvalidTransportURL,
                       match="needs the Sentinels"):
        transport_factory("zmq+sentinel://")


def test_topologies_to_come_are_refused(transport_factory: Any) -> None:
    with pytest.raises(Exception, match="use_router_proxy and "
                                        "use_dynamic_connections exclude "
                                        "each other"):
        transport_factory("zmq://", use_dynamic_connections=True,
                          use_router_proxy=True)


def test_a_forked_child_gets_its_own_sockets(transport_factory: Any) -> None:
    import os
    transport = transport_factory("zmq://")
    with serving(transport, "forked", "parent"):
        rpc = client(transport, "forked")
        assert rpc.call({}, "whoami") == "parent"  # sockets made here
        pid = os.fork()
        if pid == 0:  # the child: the same transport object, new sockets
            code = 1
            try:
                code = 0 if rpc.call({}, "echo", value="child") == "child" \
                    else 2
            finally:
                os._exit(code)
        deadline = time.monotonic() + scaled(20)
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.02)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the child's call did not end")
        assert os.waitstatus_to_exitcode(status) == 0
        assert rpc.call({}, "whoami") == "parent"  # the parent's still work


def test_bad_messages_from_a_peer_are_logged_and_dropped(
        transport_factory: Any, registry_dir: str,
        caplog: pytest.LogCaptureFixture) -> None:
    import zmq

    from nova_rpc_zmq import wire
    from nova_rpc_zmq.oslo_driver import registry
    transport = transport_factory("zmq://")
    with serving(transport, "hostile", "h1") as endpoint:
        [member] = registry.DirectoryRegistry(registry_dir).members(
            "rpc/openstack/hostile")
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.connect("tcp://" + member)
        try:
            sock.send_multipart([b"junk"])
            sock.send_multipart([b"0", b"hostile", b"cast", b"[not json"])
            sock.send_multipart(wire.encode(None, "elsewhere", {},
                                            {"method": "record",
                                             "args": {"value": 1}}))
            sock.send_multipart(wire.encode(None, "hostile", {},
                                            {"method": "record",
                                             "args": {"value": 2}}))
        finally:
            sock.close()
            ctx.term()
        wait_for(lambda: endpoint.casts == [2], 10, what="the good cast")
        assert client(transport, "hostile").call({}, "whoami") == "h1"
    assert "(too_few_frames)" in caplog.text
    assert "(bad_json)" in caplog.text
    assert "dropped a message for topic elsewhere" in caplog.text
