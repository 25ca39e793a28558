"""Unit tests of RpcDispatcher: versions, namespaces, serializer hooks."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from nova_rpc_zmq import errors
from nova_rpc_zmq.rpc import common
from nova_rpc_zmq.rpc.dispatcher import RpcDispatcher
from nova_rpc_zmq.rpc.serializer import NoOpSerializer, Serializer


class V1Manager:
    """No RPC_API_VERSION: the default '1.0' applies."""

    def __init__(self) -> None:
        self.calls: list = []

    def ping(self, ctxt: Any, **kwargs: Any) -> str:
        self.calls.append(("ping", ctxt, kwargs))
        return "v1"


class V15Manager:
    RPC_API_VERSION = "1.5"

    def ping(self, ctxt: Any, arg: Any = None) -> tuple:
        return ("v1.5", arg)

    def only_here(self, ctxt: Any) -> str:
        return "only"


class V2Manager:
    RPC_API_VERSION = "2.1"

    def ping(self, ctxt: Any, arg: Any = None) -> tuple:
        return ("v2", arg)

    def stream(self, ctxt: Any, n: int) -> Iterator[int]:
        for i in range(n):
            yield i

    def _private(self, ctxt: Any) -> str:
        return "private"

    not_callable = "a value"


class BaseAPI:
    RPC_API_NAMESPACE = "baseapi"
    RPC_API_VERSION = "1.1"

    def ping(self, ctxt: Any, arg: Any = None) -> tuple:
        return ("base", arg)


class RevisionManager:
    RPC_API_VERSION = "3.2.4"

    def ping(self, ctxt: Any) -> str:
        return "rev"


def test_no_version_means_1_0() -> None:
    manager = V1Manager()
    d = RpcDispatcher([manager])
    assert d.dispatch("ctx", None, "ping", None, a=1) == "v1"
    assert d.dispatch("ctx", "", "ping", None) == "v1"
    assert manager.calls == [("ping", "ctx", {"a": 1}), ("ping", "ctx", {})]


def test_kwargs_are_passed_as_keywords() -> None:
    d = RpcDispatcher([V15Manager()])
    assert d.dispatch(None, "1.2", "ping", None, arg=[1, 2]) == ("v1.5", [1, 2])


@pytest.mark.parametrize("version, expected", [
    ("1.0", ("v1.5", None)), ("1.5", ("v1.5", None)),
    ("2.0", ("v2", None)), ("2.1", ("v2", None)),
])
def test_first_compatible_callback_wins(version: str, expected: tuple) -> None:
    d = RpcDispatcher([V15Manager(), V2Manager(), V1Manager()])
    assert d.dispatch(None, version, "ping", None) == expected


@pytest.mark.parametrize("version", ["1.6", "2.2", "3.0", "0.9", "junk"])
def test_no_compatible_callback_raises_unsupported_version(version: str) -> None:
    d = RpcDispatcher([V15Manager(), V2Manager()])
    with pytest.raises(errors.UnsupportedRpcVersion) as info:
        d.dispatch(None, version, "ping", None)
    assert version in str(info.value)
    assert common.UnsupportedRpcVersion is errors.UnsupportedRpcVersion


def test_compatible_callback_without_the_method_raises_attribute_error() -> None:
    d = RpcDispatcher([V15Manager(), V2Manager()])
    with pytest.raises(AttributeError) as info:
        d.dispatch(None, "2.0", "only_here", None)
    assert str(info.value) == "No such RPC function 'only_here'"


def test_method_found_on_a_later_compatible_callback() -> None:
    class Other:
        RPC_API_VERSION = "1.5"

    d = RpcDispatcher([Other(), V15Manager()])
    assert d.dispatch(None, "1.1", "only_here", None) == "only"


def test_incompatible_callback_with_the_method_is_skipped() -> None:
    # V2Manager has 'ping' but 1.x must not reach it.
    d = RpcDispatcher([V2Manager()])
    with pytest.raises(errors.UnsupportedRpcVersion):
        d.dispatch(None, "1.0", "ping", None)


def test_namespaces_are_matched_exactly() -> None:
    d = RpcDispatcher([V15Manager(), BaseAPI()])
    assert d.dispatch(None, "1.0", "ping", "baseapi", arg=1) == ("base", 1)
    assert d.dispatch(None, "1.0", "ping", None, arg=1) == ("v1.5", 1)
    # baseapi is 1.1: 1.5 in that namespace is not served, even though the
    # default-namespace callback implements 1.5
    with pytest.raises(errors.UnsupportedRpcVersion):
        d.dispatch(None, "1.5", "ping", "baseapi")
    with pytest.raises(errors.UnsupportedRpcVersion):
        d.dispatch(None, "1.0", "ping", "unknown")


def test_namespace_only_callbacks_do_not_serve_the_default_namespace() -> None:
    d = RpcDispatcher([BaseAPI()])
    with pytest.raises(errors.UnsupportedRpcVersion):
        d.dispatch(None, "1.0", "ping", None)


@pytest.mark.parametrize("version, ok", [("3.2.4", True), ("3.2.5", False),
                                         ("3.1.9", True), ("3.2", True)])
def test_three_part_versions(version: str, ok: bool) -> None:
    d = RpcDispatcher([RevisionManager()])
    if ok:
        assert d.dispatch(None, version, "ping", None) == "rev"
    else:
        with pytest.raises(errors.UnsupportedRpcVersion):
            d.dispatch(None, version, "ping", None)


@pytest.mark.parametrize("method", ["_private", "__init__", "__class__",
                                    "__reduce__", "not_callable", "missing"])
def test_private_special_and_non_callable_names_are_not_dispatched(
        method: str) -> None:
    d = RpcDispatcher([V2Manager()])
    with pytest.raises(AttributeError) as info:
        d.dispatch(None, "2.0", method, None)
    assert "No such RPC function" in str(info.value)


@pytest.mark.parametrize("method", [None, 5, ["ping"]])
def test_non_string_method_names_are_not_dispatched(method: Any) -> None:
    d = RpcDispatcher([V2Manager()])
    with pytest.raises(AttributeError):
        d.dispatch(None, "2.0", method, None)


class TaggingSerializer(Serializer):
    """Wraps on the way out, unwraps on the way in, and records contexts."""

    def __init__(self) -> None:
        self.contexts: list = []

    def serialize_entity(self, context: Any, entity: Any) -> Any:
        self.contexts.append(context)
        return {"wrapped": entity}

    def deserialize_entity(self, context: Any, entity: Any) -> Any:
        self.contexts.append(context)
        return entity["wrapped"] if isinstance(entity, dict) else entity


def test_serializer_hooks_wrap_arguments_and_result() -> None:
    serializer = TaggingSerializer()
    d = RpcDispatcher([V15Manager()], serializer=serializer)
    result = d.dispatch("ctx", "1.0", "ping", None, arg={"wrapped": 41})
    assert result == {"wrapped": ("v1.5", 41)}
    assert serializer.contexts == ["ctx", "ctx"]


def test_serializer_applies_to_each_streamed_item() -> None:
    d = RpcDispatcher([V2Manager()], serializer=TaggingSerializer())
    result = d.dispatch(None, "2.0", "stream", None, n=3)
    assert not isinstance(result, dict)          # still a stream
    assert list(result) == [{"wrapped": 0}, {"wrapped": 1}, {"wrapped": 2}]


def test_default_serializer_is_noop() -> None:
    d = RpcDispatcher([V2Manager()])
    assert isinstance(d.serializer, NoOpSerializer)
    assert list(d.dispatch(None, "2.0", "stream", None, n=2)) == [0, 1]
    obj = object()
    assert NoOpSerializer().serialize_entity(None, obj) is obj
    assert NoOpSerializer().deserialize_entity(None, obj) is obj


def test_serializer_base_is_abstract() -> None:
    with pytest.raises(TypeError):
        Serializer()  # type: ignore[abstract]


def test_method_errors_propagate() -> None:
    class Failing:
        def boom(self, ctxt: Any) -> None:
            raise KeyError("boom")

    with pytest.raises(KeyError):
        RpcDispatcher([Failing()]).dispatch(None, None, "boom", None)
