"""Route an incoming RPC message to the right method by API version.

A service hands ``RpcDispatcher([manager, ...])`` to
``Connection.create_consumer``; the driver calls
``dispatch(ctxt, version, method, namespace, **kwargs)`` for each message.

How a callback object is chosen, as in Grizzly/Havana:

* its ``RPC_API_NAMESPACE`` (default None) must equal the message's
  ``namespace``; this lets one service expose several independent APIs
  (a ``BaseRPCAPI`` next to the manager) on one topic;
* its ``RPC_API_VERSION`` (default ``'1.0'``) must be compatible with the
  requested version (a message without a version asks for ``'1.0'``):
  same major, requested minor no higher (see ``version_is_compatible``).
  A server adding a method bumps the minor; a client asks for the lowest
  version that has what it needs, so old servers keep serving old calls;
* the first compatible callback that has the method runs it.

Names starting with ``_`` are never dispatched: a message cannot reach a
private helper or a special method such as ``__init__``.

Errors: a compatible callback without the method gives
``AttributeError("No such RPC function '<method>'")``; no compatible
callback gives ``UnsupportedRpcVersion``.  Both travel back to the caller
as remote exceptions.
"""

from __future__ import annotations

import inspect
from typing import Any, Iterator, Sequence

from nova_rpc_zmq.rpc import common as rpc_common
from nova_rpc_zmq.rpc import serializer as rpc_serializer

_DEFAULT_VERSION = "1.0"


class RpcDispatcher:
    """Dispatch messages to callback objects by namespace and version.

    ``serializer`` turns arguments into rich objects before the call and
    the result (each item, for a generator) back into primitives after it.
    Thread-safe as long as the callbacks are.
    """

    def __init__(self, callbacks: Sequence[Any],
                 serializer: rpc_serializer.Serializer | None = None) -> None:
        self.callbacks = callbacks
        self.serializer: rpc_serializer.Serializer = (
            serializer if serializer is not None
            else rpc_serializer.NoOpSerializer())

    def _deserialize_args(self, ctxt: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if type(self.serializer) is rpc_serializer.NoOpSerializer:
            return kwargs  # the default: a call per argument for nothing
        return {name: self.serializer.deserialize_entity(ctxt, arg)
                for name, arg in kwargs.items()}

    def _serialize_stream(self, ctxt: Any, results: Iterator[Any]) -> Iterator[Any]:
        for item in results:
            yield self.serializer.serialize_entity(ctxt, item)

    def dispatch(self, ctxt: Any, version: str | None, method: str,
                 namespace: str | None, **kwargs: Any) -> Any:
        """Call ``method(ctxt, **kwargs)`` on the first matching callback.

        Returns what the method returns (serialized); a generator stays a
        generator whose items are serialized as they are produced.  Raises
        ``AttributeError`` or ``UnsupportedRpcVersion`` as the module
        docstring says, and whatever the method raises.
        """
        if not version:
            version = _DEFAULT_VERSION

        had_compatible = False
        for callback in self.callbacks:
            cb_namespace = getattr(callback, "RPC_API_NAMESPACE", None)
            if namespace != cb_namespace:
                continue
            cb_version = getattr(callback, "RPC_API_VERSION", _DEFAULT_VERSION)
            is_compatible = rpc_common.version_is_compatible(cb_version, version)
            had_compatible = had_compatible or is_compatible
            if not is_compatible or not _has_method(callback, method):
                continue
            args = self._deserialize_args(ctxt, kwargs)
            result = getattr(callback, method)(ctxt, **args)
            if inspect.isgenerator(result):
                return self._serialize_stream(ctxt, result)
            return self.serializer.serialize_entity(ctxt, result)

        if had_compatible:
            raise AttributeError("No such RPC function '%s'" % method)
        raise rpc_common.UnsupportedRpcVersion(version=version)


def _has_method(callback: Any, method: Any) -> bool:
    # The method name comes from the network: only a plain str may be
    # looked up, and never a private or special one (``__init__``,
    # ``__class__``, ``_helper``): they are not part of any RPC API.
    return (isinstance(method, str) and not method.startswith("_")
            and callable(getattr(callback, method, None)))
