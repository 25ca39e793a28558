"""``RpcProxy``: the client side of a versioned RPC API.

A service's client class subclasses ``RpcProxy``, names its topic and
default API version once, and builds messages with ``make_msg``::

    class ComputeAPI(RpcProxy):
        def __init__(self):
            super().__init__(topic="compute", default_version="2.0")

        def ping(self, ctxt, arg):
            return self.call(ctxt, self.make_msg("ping", arg=arg),
                             version="2.1")

``version_cap`` (usually from an upgrade-levels option) stops a new client
from asking old servers for a version they lack: sending above the cap
raises ``RpcVersionCapError``; ``can_send_version`` lets the caller choose
an older form of the message instead.

Messages go out through ``nova_rpc_zmq.rpc`` (the configured backend),
imported when a message is sent so that this module can be imported first.
"""

from __future__ import annotations

from typing import Any, Iterator

from nova_rpc_zmq import errors
from nova_rpc_zmq.wire import ARGS_KEY, METHOD_KEY, NAMESPACE_KEY, VERSION_KEY
from nova_rpc_zmq.rpc import common as rpc_common
from nova_rpc_zmq.rpc import serializer as rpc_serializer


def _rpc() -> Any:
    from nova_rpc_zmq import rpc
    return rpc


class RpcProxy:
    """Helper base class for the client side of an RPC API.

    ``call``/``multicall`` block (up to ``timeout``, default
    ``rpc_response_timeout``) and raise the remote error or ``Timeout``;
    the casts return once the message is queued.  Every sending method
    sets ``msg['version']`` and serializes ``msg['args']`` in place.
    """

    #: The namespace ``make_msg`` puts in messages; subclasses may set it.
    RPC_API_NAMESPACE: str | None = None

    def __init__(self, topic: str, default_version: str,
                 version_cap: str | None = None,
                 serializer: rpc_serializer.Serializer | None = None) -> None:
        if version_cap and rpc_common._parse_version(version_cap) is None:
            raise errors.LocalError(
                "RPC version cap %r for topic %r is not a version like '1.4'"
                % (version_cap, topic))
        self.topic = topic
        self.default_version = default_version
        self.version_cap = version_cap
        self.serializer: rpc_serializer.Serializer = (
            serializer if serializer is not None
            else rpc_serializer.NoOpSerializer())

    # -- messages -------------------------------------------------------------

    @staticmethod
    def make_namespaced_msg(method: str, namespace: str | None,
                            **kwargs: Any) -> dict[str, Any]:
        """``{'method': method, 'namespace': namespace, 'args': kwargs}``."""
        return {METHOD_KEY: method, NAMESPACE_KEY: namespace, ARGS_KEY: kwargs}

    def make_msg(self, method: str, **kwargs: Any) -> dict[str, Any]:
        """A message for ``method`` in this proxy's ``RPC_API_NAMESPACE``."""
        return self.make_namespaced_msg(method, self.RPC_API_NAMESPACE, **kwargs)

    def can_send_version(self, version: str) -> bool:
        """True when ``version`` is within the version cap (or no cap is set)."""
        return (not self.version_cap
                or rpc_common.version_is_compatible(self.version_cap, version))

    def _set_version(self, msg: dict[str, Any], version: str | None) -> None:
        v = version if version else self.default_version
        if self.version_cap and not rpc_common.version_is_compatible(
                self.version_cap, v):
            raise errors.RpcVersionCapError(version_cap=self.version_cap)
        msg[VERSION_KEY] = v

    def _get_topic(self, topic: str | None) -> str:
        return topic if topic else self.topic

    def _prepare(self, context: Any, msg: dict[str, Any],
                 version: str | None) -> None:
        self._set_version(msg, version)
        args = msg.get(ARGS_KEY) or {}
        msg[ARGS_KEY] = {name: self.serializer.serialize_entity(context, arg)
                       for name, arg in args.items()}

    @staticmethod
    def _named_timeout(exc: errors.Timeout, topic: str,
                       method: Any) -> errors.Timeout:
        # A bare Timeout from the backend gets the topic and method filled
        # in; subclasses (NoHostsError ...) already say what went wrong.
        if type(exc) is errors.Timeout:
            return errors.Timeout(exc.info, exc.topic or topic,
                                  exc.method or method)
        return exc

    # -- sending --------------------------------------------------------------

    def call(self, context: Any, msg: dict[str, Any], topic: str | None = None,
             version: str | None = None, timeout: float | None = None) -> Any:
        """``rpc.call`` the method in ``msg``; returns its (deserialized) result."""
        self._prepare(context, msg, version)
        real_topic = self._get_topic(topic)
        try:
            result = _rpc().call(context, real_topic, msg, timeout)
        except errors.Timeout as exc:
            named = self._named_timeout(exc, real_topic, msg.get(METHOD_KEY))
            if named is exc:
                raise
            raise named from exc
        return self.serializer.deserialize_entity(context, result)

    def multicall(self, context: Any, msg: dict[str, Any],
                  topic: str | None = None, version: str | None = None,
                  timeout: float | None = None) -> Iterator[Any]:
        """``rpc.multicall``: the message is sent now; the returned iterator
        yields each (deserialized) value as it arrives."""
        self._prepare(context, msg, version)
        real_topic = self._get_topic(topic)
        method = msg.get(METHOD_KEY)
        try:
            results = _rpc().multicall(context, real_topic, msg, timeout)
        except errors.Timeout as exc:
            named = self._named_timeout(exc, real_topic, method)
            if named is exc:
                raise
            raise named from exc
        return self._stream(context, results, real_topic, method)

    def _stream(self, context: Any, results: Any, topic: str,
                method: Any) -> Iterator[Any]:
        iterator = iter(results)
        try:
            while True:
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                except errors.Timeout as exc:
                    named = self._named_timeout(exc, topic, method)
                    if named is exc:
                        raise
                    raise named from exc
                yield self.serializer.deserialize_entity(context, item)
        finally:
            # Stop the backend's stream when the caller stops early.
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def cast(self, context: Any, msg: dict[str, Any], topic: str | None = None,
             version: str | None = None) -> None:
        """``rpc.cast``: one consumer of the topic runs the method; no result."""
        self._prepare(context, msg, version)
        _rpc().cast(context, self._get_topic(topic), msg)

    def fanout_cast(self, context: Any, msg: dict[str, Any],
                    topic: str | None = None, version: str | None = None) -> None:
        """``rpc.fanout_cast``: every fanout consumer of the topic runs it."""
        self._prepare(context, msg, version)
        _rpc().fanout_cast(context, self._get_topic(topic), msg)

    def cast_to_server(self, context: Any, server_params: Any,
                       msg: dict[str, Any], topic: str | None = None,
                       version: str | None = None) -> None:
        """``rpc.cast_to_server`` (``server_params`` as the backend takes them)."""
        self._prepare(context, msg, version)
        _rpc().cast_to_server(context, server_params, self._get_topic(topic), msg)

    def fanout_cast_to_server(self, context: Any, server_params: Any,
                              msg: dict[str, Any], topic: str | None = None,
                              version: str | None = None) -> None:
        """``rpc.fanout_cast_to_server``."""
        self._prepare(context, msg, version)
        _rpc().fanout_cast_to_server(context, server_params,
                                     self._get_topic(topic), msg)
