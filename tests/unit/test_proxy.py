"""Unit tests of RpcProxy: messages, versions and caps, and sending through
``nova_rpc_zmq.rpc`` to the in-process fake backend."""

from __future__ import annotations

import threading
from typing import Any, Iterator

import pytest
from oslo_config import cfg

from nova_rpc_zmq import config, errors
from nova_rpc_zmq.rpc import impl_fake
from nova_rpc_zmq.rpc.dispatcher import RpcDispatcher
from nova_rpc_zmq.rpc.proxy import RpcProxy
from nova_rpc_zmq.rpc.serializer import NoOpSerializer, Serializer
from tests.support import scaled, wait_for

THIS_MODULE = __name__


def make_conf(host: str = "host-a") -> config.Settings:
    return config.load_settings(
        cfg.ConfigOpts(),
        rpc_response_timeout=scaled(5),
        allowed_rpc_exception_modules=[THIS_MODULE, "exceptions",
                                       "nova_rpc_zmq.errors"],
        rpc_zmq_host=host)


class Manager:
    RPC_API_VERSION = "1.5"

    def __init__(self) -> None:
        self.seen: list = []
        self.lock = threading.Lock()

    def echo(self, ctxt: Any, value: Any = None) -> Any:
        with self.lock:
            self.seen.append(("echo", value))
        return value

    def count(self, ctxt: Any, n: int) -> Iterator[int]:
        for i in range(n):
            yield i


class NamespacedManager:
    RPC_API_NAMESPACE = "baseapi"
    RPC_API_VERSION = "1.1"

    def echo(self, ctxt: Any, value: Any = None) -> Any:
        return ("baseapi", value)


class RecordingDispatcher(RpcDispatcher):
    """Records (version, method, namespace) of what arrives."""

    def __init__(self, callbacks: list, serializer: Any = None) -> None:
        super().__init__(callbacks, serializer=serializer)
        self.arrived: list = []
        self.wire_args: list = []
        self.lock = threading.Lock()

    def dispatch(self, ctxt: Any, version: Any, method: Any, namespace: Any,
                 **kwargs: Any) -> Any:
        with self.lock:
            self.arrived.append((version, method, namespace))
            self.wire_args.append(kwargs)
        return super().dispatch(ctxt, version, method, namespace, **kwargs)


class BoxSerializer(Serializer):
    """Objects travel as {'box': value}."""

    def serialize_entity(self, context: Any, entity: Any) -> Any:
        return {"box": entity}

    def deserialize_entity(self, context: Any, entity: Any) -> Any:
        if isinstance(entity, dict) and set(entity) == {"box"}:
            return entity["box"]
        return entity


class BaseAPIProxy(RpcProxy):
    RPC_API_NAMESPACE = "baseapi"


# -- messages and versions (no sending) ---------------------------------------

def test_make_msg() -> None:
    proxy = RpcProxy("svc", "1.0")
    assert proxy.make_msg("echo", value=1, other=[2]) == {
        "method": "echo", "namespace": None, "args": {"value": 1, "other": [2]}}
    assert RpcProxy.make_namespaced_msg("m", "ns", a=1) == {
        "method": "m", "namespace": "ns", "args": {"a": 1}}
    assert BaseAPIProxy("svc", "1.0").make_msg("echo")["namespace"] == "baseapi"


def test_defaults() -> None:
    proxy = RpcProxy("svc", "1.2")
    assert (proxy.topic, proxy.default_version, proxy.version_cap) == \
        ("svc", "1.2", None)
    assert isinstance(proxy.serializer, NoOpSerializer)
    assert RpcProxy.RPC_API_NAMESPACE is None


@pytest.mark.parametrize("cap, version, ok", [
    (None, "9.9", True), ("1.4", "1.4", True), ("1.4", "1.3", True),
    ("1.4", "1.5", False), ("1.4", "2.0", False), ("2.0", "1.0", False),
    ("1.4.2", "1.4.3", False), ("1.4.2", "1.4.1", True),
])
def test_can_send_version(cap: str | None, version: str, ok: bool) -> None:
    assert RpcProxy("svc", "1.0", version_cap=cap).can_send_version(version) is ok


@pytest.mark.parametrize("cap", ["havana", "1.x", "1.2.3.4"])
def test_malformed_version_cap_is_refused(cap: str) -> None:
    with pytest.raises(errors.LocalError) as info:
        RpcProxy("svc", "1.0", version_cap=cap)
    assert cap in str(info.value)


def test_version_cap_stops_the_message_before_sending() -> None:
    # No backend is involved: the cap check comes first.
    proxy = RpcProxy("svc", "1.0", version_cap="1.2")
    msg = proxy.make_msg("echo", value=1)
    with pytest.raises(errors.RpcVersionCapError) as info:
        proxy.cast(None, msg, version="1.3")
    assert "1.2" in str(info.value)
    assert "version" not in msg
    with pytest.raises(errors.RpcVersionCapError):
        RpcProxy("svc", "1.3", version_cap="1.2").call(None, proxy.make_msg("x"))


# -- sending through nova_rpc_zmq.rpc to the fake backend ---------------------

@pytest.fixture()
def fake_rpc(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Route the legacy module-level API of ``nova_rpc_zmq.rpc`` to impl_fake.

    (The public module picks its backend from configuration; here the six
    sending functions are pointed at the fake backend with a test conf.)
    """
    from nova_rpc_zmq import rpc
    conf = make_conf()

    def call(context: Any, topic: str, msg: dict, timeout: Any = None) -> Any:
        return impl_fake.call(conf, context, topic, msg, timeout)

    def multicall(context: Any, topic: str, msg: dict, timeout: Any = None) -> Any:
        return impl_fake.multicall(conf, context, topic, msg, timeout)

    def cast(context: Any, topic: str, msg: dict) -> None:
        impl_fake.cast(conf, context, topic, msg)

    def fanout_cast(context: Any, topic: str, msg: dict) -> None:
        impl_fake.fanout_cast(conf, context, topic, msg)

    def cast_to_server(context: Any, server_params: Any, topic: str,
                       msg: dict) -> None:
        impl_fake.cast_to_server(conf, context, server_params, topic, msg)

    def fanout_cast_to_server(context: Any, server_params: Any, topic: str,
                              msg: dict) -> None:
        impl_fake.fanout_cast_to_server(conf, context, server_params, topic, msg)

    for name, fn in (("call", call), ("multicall", multicall), ("cast", cast),
                     ("fanout_cast", fanout_cast),
                     ("cast_to_server", cast_to_server),
                     ("fanout_cast_to_server", fanout_cast_to_server)):
        monkeypatch.setattr(rpc, name, fn, raising=False)
    yield conf
    impl_fake.cleanup()
    assert impl_fake.wait_idle(scaled(15))


def serve(conf: Any, topic: str, callbacks: list, fanout: bool = False,
          serializer: Any = None) -> RecordingDispatcher:
    dispatcher = RecordingDispatcher(callbacks, serializer)
    conn = impl_fake.create_connection(conf)
    conn.create_consumer(topic, dispatcher, fanout=fanout)
    conn.consume_in_thread()
    return dispatcher


def test_call_sends_the_default_version(fake_rpc: Any) -> None:
    dispatcher = serve(fake_rpc, "svc", [Manager()])
    proxy = RpcProxy("svc", "1.2")
    msg = proxy.make_msg("echo", value="hi")
    assert proxy.call({}, msg) == "hi"
    assert dispatcher.arrived == [("1.2", "echo", None)]
    assert msg["version"] == "1.2"      # set in place, as the original did


def test_call_version_override_and_topic_override(fake_rpc: Any) -> None:
    dispatcher = serve(fake_rpc, "other", [Manager()])
    proxy = RpcProxy("svc", "1.0", version_cap="1.5")
    assert proxy.call({}, proxy.make_msg("echo", value=2), topic="other",
                      version="1.5") == 2
    assert dispatcher.arrived == [("1.5", "echo", None)]


def test_capped_call_sends_nothing(fake_rpc: Any) -> None:
    dispatcher = serve(fake_rpc, "svc", [Manager()])
    proxy = RpcProxy("svc", "1.0", version_cap="1.2")
    with pytest.raises(errors.RpcVersionCapError):
        proxy.call({}, proxy.make_msg("echo"), version="1.3")
    with pytest.raises(errors.RpcVersionCapError):
        proxy.fanout_cast({}, proxy.make_msg("echo"), version="2.0")
    assert impl_fake.wait_idle(scaled(5))
    assert dispatcher.arrived == []


def test_server_refuses_a_version_it_lacks(fake_rpc: Any) -> None:
    serve(fake_rpc, "svc", [Manager()])
    proxy = RpcProxy("svc", "1.6")
    with pytest.raises(errors.UnsupportedRpcVersion):
        proxy.call({}, proxy.make_msg("echo", value=1))


def test_namespaced_proxy_reaches_the_namespaced_callback(fake_rpc: Any) -> None:
    serve(fake_rpc, "svc", [Manager(), NamespacedManager()])
    assert BaseAPIProxy("svc", "1.1").call(
        {}, BaseAPIProxy("svc", "1.1").make_msg("echo", value=3)) == ["baseapi", 3]
    proxy = RpcProxy("svc", "1.1")
    assert proxy.call({}, proxy.make_msg("echo", value=3)) == 3


def test_serializer_wraps_arguments_and_unwraps_results(fake_rpc: Any) -> None:
    manager = Manager()
    dispatcher = serve(fake_rpc, "svc", [manager], serializer=BoxSerializer())
    proxy = RpcProxy("svc", "1.0", serializer=BoxSerializer())
    assert proxy.call({}, proxy.make_msg("echo", value=7)) == 7
    assert dispatcher.wire_args == [{"value": {"box": 7}}]   # the wire form
    assert manager.seen == [("echo", 7)]                     # unboxed again
    # each streamed value is boxed by the server and unboxed by the proxy
    assert list(proxy.multicall({}, proxy.make_msg("count", n=3))) == [0, 1, 2]


def test_client_serializer_alone_shows_the_wire_form(fake_rpc: Any) -> None:
    manager = Manager()
    serve(fake_rpc, "svc", [manager])
    proxy = RpcProxy("svc", "1.0", serializer=BoxSerializer())
    assert proxy.call({}, proxy.make_msg("echo", value=7)) == 7
    assert manager.seen == [("echo", {"box": 7})]


def test_multicall_sends_at_once_and_streams(fake_rpc: Any) -> None:
    manager = Manager()
    dispatcher = serve(fake_rpc, "svc", [manager])
    proxy = RpcProxy("svc", "1.0")
    results = proxy.multicall({}, proxy.make_msg("echo", value="eager"))
    wait_for(lambda: manager.seen, what="the multicall to be sent")
    assert list(results) == ["eager"]
    stream = proxy.multicall({}, proxy.make_msg("count", n=4))
    assert list(stream) == [0, 1, 2, 3]
    assert dispatcher.arrived[-1] == ("1.0", "count", None)


def test_casts_reach_consumers(fake_rpc: Any) -> None:
    one = Manager()
    fan = Manager()
    serve(fake_rpc, "svc", [one])
    serve(make_conf(host="host-b"), "svc", [fan], fanout=True)
    proxy = RpcProxy("svc", "1.0")
    proxy.cast({}, proxy.make_msg("echo", value="cast"))
    proxy.fanout_cast({}, proxy.make_msg("echo", value="fanout"))
    proxy.cast_to_server({}, {"server": "x"}, proxy.make_msg("echo", value="cts"))
    proxy.fanout_cast_to_server({}, {"server": "x"},
                                proxy.make_msg("echo", value="fcts"))
    assert impl_fake.wait_idle(scaled(5))
    assert sorted(one.seen) == [("echo", "cast"), ("echo", "cts")]
    assert sorted(fan.seen) == [("echo", "fanout"), ("echo", "fcts")]


def test_call_with_no_consumer_times_out_naming_topic_and_method(
        fake_rpc: Any) -> None:
    proxy = RpcProxy("nobody", "1.0")
    with pytest.raises(errors.Timeout) as info:
        proxy.call({}, proxy.make_msg("echo"), timeout=scaled(1))
    assert (info.value.topic, info.value.method) == ("nobody", "echo")


# -- Timeout naming, with a backend that raises bare Timeouts -----------------

def test_bare_timeouts_get_topic_and_method(monkeypatch: pytest.MonkeyPatch) -> None:
    from nova_rpc_zmq import rpc

    def call(context: Any, topic: str, msg: dict, timeout: Any = None) -> Any:
        raise errors.Timeout("backend says no")

    def multicall(context: Any, topic: str, msg: dict, timeout: Any = None) -> Any:
        def gen() -> Iterator[int]:
            yield 1
            raise errors.Timeout("stream stalled")
        return gen()

    monkeypatch.setattr(rpc, "call", call, raising=False)
    monkeypatch.setattr(rpc, "multicall", multicall, raising=False)
    proxy = RpcProxy("svc", "1.0")
    with pytest.raises(errors.Timeout) as info:
        proxy.call({}, proxy.make_msg("ping"), topic="svc.h1")
    assert (info.value.info, info.value.topic, info.value.method) == \
        ("backend says no", "svc.h1", "ping")
    stream = proxy.multicall({}, proxy.make_msg("ping"))
    assert next(stream) == 1
    with pytest.raises(errors.Timeout) as info:
        next(stream)
    assert (info.value.info, info.value.topic, info.value.method) == \
        ("stream stalled", "svc", "ping")


def test_timeout_subclasses_pass_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    from nova_rpc_zmq import rpc
    original = errors.NoHostsError("svc")

    def call(context: Any, topic: str, msg: dict, timeout: Any = None) -> Any:
        raise original

    monkeypatch.setattr(rpc, "call", call, raising=False)
    proxy = RpcProxy("svc", "1.0")
    with pytest.raises(errors.NoHostsError) as info:
        proxy.call({}, proxy.make_msg("ping"))
    assert info.value is original


# -- through the public backend switch (once rpc.set_backend exists) ---------

def _rpc_with_backend_switch() -> Any:
    from nova_rpc_zmq import rpc
    if not hasattr(rpc, "set_backend"):
        pytest.skip("nova_rpc_zmq.rpc.set_backend is not there yet")
    return rpc


@pytest.fixture()
def fake_backend() -> Iterator[Any]:
    rpc = _rpc_with_backend_switch()
    previous = getattr(rpc, "_backend", None)
    rpc.set_backend(impl_fake)
    try:
        yield rpc
    finally:
        impl_fake.cleanup()
        assert impl_fake.wait_idle(scaled(15))
        # None makes the module choose from configuration again
        rpc.set_backend(previous)


def test_proxy_through_set_backend(fake_backend: Any) -> None:
    rpc = fake_backend
    manager = Manager()
    fan = Manager()
    conn = rpc.create_connection(new=True)
    conn.create_consumer("proxy_backend_test", RpcDispatcher([manager]))
    conn.create_consumer("proxy_backend_test", RpcDispatcher([fan]),
                         fanout=True)
    conn.consume_in_thread()
    proxy = RpcProxy("proxy_backend_test", "1.0")
    assert proxy.call({}, proxy.make_msg("echo", value="through")) == "through"
    assert list(proxy.multicall({}, proxy.make_msg("count", n=3))) == [0, 1, 2]
    proxy.cast({}, proxy.make_msg("echo", value="cast"))
    proxy.cast_to_server({}, {"p": 1}, proxy.make_msg("echo", value="cts"))
    proxy.fanout_cast({}, proxy.make_msg("echo", value="fan"))
    proxy.fanout_cast_to_server({}, {"p": 1},
                                proxy.make_msg("echo", value="fcts"))
    assert impl_fake.wait_idle(scaled(5))
    assert sorted(manager.seen) == [("echo", "cast"), ("echo", "cts"),
                                    ("echo", "through")]
    assert sorted(fan.seen) == [("echo", "fan"), ("echo", "fcts")]
    with pytest.raises(errors.Timeout):
        proxy.call({}, proxy.make_msg("echo"), topic="proxy_backend_nobody")
    conn.close()
