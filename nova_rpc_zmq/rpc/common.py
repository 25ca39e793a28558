"""Pieces of the Nova-era ``rpc.common`` that every backend shares.

What is here, with the names and meaning Grizzly/Havana service code uses:

* the error classes (re-exported from ``nova_rpc_zmq.errors``);
* request contexts: ``CommonRpcContext`` and the server side ``RpcContext``
  whose ``reply()`` streams values back to a ``multicall`` (from
  ``nova_rpc_zmq.codec``, where the drivers take them);
* the oslo message envelope (``serialize_msg`` / ``deserialize_msg``) and
  ``version_is_compatible``;
* remote exceptions: ``serialize_remote_exception`` on the server and
  ``deserialize_remote_exception`` on the caller.  The latter never imports
  a module named by the network and never unpickles: a class is rebuilt
  only when its module is allow-listed *and* already imported (from
  ``nova_rpc_zmq.codec``);
* ``catch_client_exception`` / ``client_exceptions`` for expected errors;
* ``safe_for_logging`` / ``_safe_log``, which hide passwords and tokens.

Nothing here touches a socket or reads configuration.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from typing import Any, Callable, Iterable, TypeVar

from nova_rpc_zmq import wire
from nova_rpc_zmq.codec import (  # noqa: F401 - re-exported: the legacy names
    CommonRpcContext, ReplySink, RpcContext, _safe_log, current_context,
    deserialize_remote_exception, safe_for_logging, serialize_remote_exception,
    store)
from nova_rpc_zmq.errors import (  # re-exported: the legacy names
    AuthenticationError, ClientException, DuplicateMessageError,
    InvalidRPCConnectionReuse, NoHostsError, NoLiveHostsError, RemoteError,
    RemoteProtocolError, RPCException, RpcVersionCapError, Timeout,
    UnsupportedRpcEnvelopeVersion, UnsupportedRpcVersion)

__all__ = [
    "AuthenticationError", "ClientException", "CommonRpcContext", "Connection",
    "DuplicateMessageError", "InvalidRPCConnectionReuse", "NoHostsError",
    "NoLiveHostsError", "RPCException", "RemoteError", "RemoteProtocolError",
    "RpcContext", "RpcVersionCapError", "Timeout",
    "UnsupportedRpcEnvelopeVersion", "UnsupportedRpcVersion",
    "catch_client_exception", "client_exceptions", "deserialize_msg",
    "deserialize_remote_exception", "safe_for_logging",
    "serialize_msg", "serialize_remote_exception", "version_is_compatible",
]

LOG = logging.getLogger(__name__)

# -- envelope -----------------------------------------------------------------

#: Version of the oslo envelope ``{'oslo.version': ..., 'oslo.message': ...}``.
#: It versions the outer structure only; API versions live in the message.
_RPC_ENVELOPE_VERSION = wire.ENVELOPE_VERSION
_VERSION_KEY = wire.ENVELOPE_VERSION_KEY
_MESSAGE_KEY = wire.ENVELOPE_MESSAGE_KEY

_VERSION_RE = re.compile(r"\d+(?:\.\d+){0,2}", re.ASCII)


def _parse_version(version: Any) -> tuple[int, int, int] | None:
    """``'1.2'`` -> (1, 2, 0); ``'1.2.3'`` -> (1, 2, 3); junk -> None."""
    if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
        return None
    parts = [int(p) for p in version.split(".")]
    parts += [0] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


#: (implemented, requested) -> compatible, for version strings seen; a
#: service sees a handful, so the parse runs once per pair, not per call
_COMPATIBLE: dict[tuple[str, str], bool] = {}
_COMPATIBLE_MAX = 1024


def version_is_compatible(imp_version: str, version: str) -> bool:
    """True when an endpoint implementing ``imp_version`` can serve ``version``.

    Majors must be equal and the requested minor no higher; with equal
    minors the requested revision (``X.Y.Z``) must be no higher either.
    A version that is not ``X``, ``X.Y`` or ``X.Y.Z`` digits is never
    compatible (it may come from the network: no exception is raised).
    """
    if type(imp_version) is str and type(version) is str:
        key = (imp_version, version)
        known = _COMPATIBLE.get(key)
        if known is None:
            known = _compatible(imp_version, version)
            if len(_COMPATIBLE) >= _COMPATIBLE_MAX:
                _COMPATIBLE.clear()  # junk versions from the network
            _COMPATIBLE[key] = known
        return known
    return _compatible(imp_version, version)


def _compatible(imp_version: Any, version: Any) -> bool:
    imp = _parse_version(imp_version)
    req = _parse_version(version)
    if imp is None or req is None:
        return False
    if req[0] != imp[0]:
        return False
    if req[1] > imp[1]:
        return False
    if req[1] == imp[1] and req[2] > imp[2]:
        return False
    return True


def serialize_msg(raw_msg: Any) -> dict[str, str]:
    """Wrap ``raw_msg`` in the 2.0 envelope; raises TypeError if not JSON-able."""
    return {_VERSION_KEY: _RPC_ENVELOPE_VERSION,
            _MESSAGE_KEY: json.dumps(raw_msg)}


def deserialize_msg(msg: Any) -> Any:
    """Unwrap an enveloped message; anything else is returned as it is.

    A dict without both envelope keys is a pre-envelope (1.0) message or a
    notification and passes through, as does a non-dict (an old reply).
    Raises ``UnsupportedRpcEnvelopeVersion`` for an incompatible envelope
    version and ``RemoteProtocolError`` when the inner payload is not JSON.
    """
    if not isinstance(msg, dict):
        return msg
    if _VERSION_KEY not in msg or _MESSAGE_KEY not in msg:
        return msg
    version = msg[_VERSION_KEY]
    if not version_is_compatible(_RPC_ENVELOPE_VERSION, version):
        raise UnsupportedRpcEnvelopeVersion(version=version)
    payload = msg[_MESSAGE_KEY]
    if not isinstance(payload, (str, bytes, bytearray)):
        raise RemoteProtocolError(
            "bad_envelope", "%s must be a JSON string, not %s"
            % (_MESSAGE_KEY, type(payload).__name__))
    try:
        return json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise RemoteProtocolError(
            "bad_json", "%s is not JSON: %s" % (_MESSAGE_KEY, exc)) from None


# -- connections -------------------------------------------------------------

class Connection:
    """What ``rpc.create_connection()`` returns; backends subclass it."""

    def close(self) -> None:
        """Release the connection and its consumers."""
        raise NotImplementedError()

    def create_consumer(self, topic: str, proxy: Any, fanout: bool = False) -> None:
        """Deliver messages for ``topic`` to ``proxy.dispatch``.

        Non-fanout consumers of one topic share its messages round robin;
        every fanout consumer gets a copy of each ``fanout_cast``.
        """
        raise NotImplementedError()

    def consume_in_thread(self) -> Any:
        """Start handling messages of this connection's consumers."""
        raise NotImplementedError()


# -- expected exceptions ------------------------------------------------------

def catch_client_exception(exceptions: Iterable[type], func: Callable[..., Any],
                           *args: Any, **kwargs: Any) -> Any:
    """Call ``func``; an exception whose exact type is listed becomes a
    ``ClientException`` (the server then skips the error log)."""
    try:
        return func(*args, **kwargs)
    except Exception as e:
        if type(e) in tuple(exceptions):
            raise ClientException() from e
        raise


_F = TypeVar("_F", bound=Callable[..., Any])


def client_exceptions(*exceptions: type) -> Callable[[_F], _F]:
    """Decorator for server methods that raise the listed errors on purpose.

    The listed exceptions reach the caller as usual but are not logged as
    server errors.
    """
    def outer(func: _F) -> _F:
        @functools.wraps(func)
        def inner(*args: Any, **kwargs: Any) -> Any:
            return catch_client_exception(exceptions, func, *args, **kwargs)
        return inner  # type: ignore[return-value]
    return outer
