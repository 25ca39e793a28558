"""Request contexts and the remote-exception codec, shared by every backend.

* ``CommonRpcContext`` (a dict of values reachable as attributes) and the
  server side ``RpcContext``, whose ``reply()`` streams values to a
  ``multicall`` through the sink a driver plugs in;
* ``serialize_remote_exception`` on the server and
  ``deserialize_remote_exception`` on the caller.  The latter never imports
  a module named by the network and never unpickles: a class is rebuilt
  only when its module is allow-listed *and* already imported;
* ``safe_for_logging``, which hides passwords and tokens.

The Nova-era names stay importable from ``nova_rpc_zmq.rpc.common``.
Nothing here touches a socket or reads configuration.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import sys
import threading
import traceback
from typing import Any, Callable, Iterable, Mapping

from nova_rpc_zmq.errors import RemoteError, RPCException

LOG = logging.getLogger(__name__)

#: Suffix of the classes rebuilt by ``deserialize_remote_exception``.
_REMOTE_POSTFIX = "_Remote"

#: Python 2 nodes (the Grizzly/Havana peers) name the builtins module
#: ``exceptions``.  We read that name as ``builtins`` and we also write
#: builtins as ``exceptions``, so an old node with the stock allow-list
#: still rebuilds a ValueError we send.
_PY2_BUILTINS, _PY3_BUILTINS = "exceptions", "builtins"

_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


#: Where ``CommonRpcContext.update_store`` puts the current context
#: (thread-local; green-thread-local in a monkey-patched process).
store = threading.local()


def current_context() -> Any:
    """The context last stored by ``update_store`` in this thread, or None."""
    return getattr(store, "context", None)


class CommonRpcContext:
    """A request context as it travels in a message: a dict of values.

    Values are reachable as attributes (``ctxt.request_id``,
    ``ctxt.user_id`` ...); ``to_dict`` gives a deep copy of them.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.values: dict[str, Any] = kwargs

    def __getattr__(self, key: str) -> Any:
        # Dunder and 'values' look-ups must not recurse through here while
        # the object is half built (copy, pickle, repr of a broken object).
        if key.startswith("__") or key == "values":
            raise AttributeError(key)
        try:
            return self.values[key]
        except KeyError:
            raise AttributeError(key) from None

    def __repr__(self) -> str:
        return "<%s %r>" % (type(self).__name__, safe_for_logging(self.values))

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the values (what goes on the wire)."""
        return copy.deepcopy(self.values)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "CommonRpcContext":
        """A context holding ``values``."""
        return cls(**values)

    def deepcopy(self) -> "CommonRpcContext":
        """An independent copy of this context."""
        return self.from_dict(self.to_dict())

    def update_store(self) -> None:
        """Make this the current context of this thread (for logging)."""
        store.context = self

    def elevated(self, read_deleted: str | None = None,
                 overwrite: bool = False) -> "CommonRpcContext":
        """A copy with ``is_admin`` set and the ``admin`` role added.

        ``overwrite`` is accepted for Nova compatibility and ignored, as it
        was by the original.
        """
        context = self.deepcopy()
        context.values["is_admin"] = True
        roles = context.values.setdefault("roles", [])
        if "admin" not in roles:
            roles.append("admin")
        if read_deleted is not None:
            context.values["read_deleted"] = read_deleted
        return context


#: ``reply_sink(value, failure, ending)``: how a driver receives what a
#: server method hands to ``RpcContext.reply``.  ``failure`` is a
#: ``sys.exc_info()`` tuple or None; ``ending`` marks the end of the stream.
ReplySink = Callable[[Any, Any, bool], None]


class _ReplyState:
    """Reply bookkeeping shared by a context and its deep copies."""

    __slots__ = ("sink", "replies", "count", "ended", "failure", "lock")

    def __init__(self, sink: ReplySink | None) -> None:
        self.sink = sink
        self.replies: list[Any] = []
        self.count = 0
        self.ended = False
        self.failure: Any = None
        self.lock = threading.Lock()


class RpcContext(CommonRpcContext):
    """The context a server method receives; ``reply()`` streams to multicall.

    A driver plugs its own sink in by setting ``ctxt.reply_sink`` after
    ``RpcContext.from_dict(values)``; keyword arguments are only ever
    context values, so a context key from the network cannot become the
    callback.  Without a sink, replies collect in ``replies`` as in the old
    ZeroMQ driver.  Copies made by ``deepcopy``/``elevated`` share the reply
    stream, so a method may reply through an elevated copy.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._reply_state = _ReplyState(None)
        super().__init__(**kwargs)

    @property
    def reply_sink(self) -> ReplySink | None:
        """The driver's callback, or None (collect in ``replies``)."""
        return self._reply_state.sink

    @reply_sink.setter
    def reply_sink(self, sink: ReplySink | None) -> None:
        self._reply_state.sink = sink

    @property
    def replies(self) -> list[Any]:
        """Values replied while no sink was plugged in."""
        return self._reply_state.replies

    @property
    def reply_count(self) -> int:
        """How many values were replied (through the sink or collected)."""
        return self._reply_state.count

    @property
    def reply_ended(self) -> bool:
        """True once ``reply(ending=True)`` was called or a failure replied."""
        return self._reply_state.ended

    @property
    def reply_failure(self) -> Any:
        """The failure replied while no sink was plugged in, or None."""
        return self._reply_state.failure

    def deepcopy(self) -> "RpcContext":
        """A copy of the values that still replies to the same caller."""
        new = self.__class__(**self.to_dict())
        new._reply_state = self._reply_state
        return new

    def reply(self, reply: Any = None, failure: Any = None,
              ending: bool = False) -> None:
        """Send ``reply`` (or ``failure``, an exc_info tuple) to the caller.

        ``ending=True`` closes the stream: later replies, and the method's
        return value, are not sent.  A failure closes the stream too.
        """
        state = self._reply_state
        with state.lock:
            if state.ended:
                LOG.debug("reply after the end of the stream dropped")
                return
            if ending or failure is not None:
                state.ended = True
            if not ending:
                state.count += 1
            sink = state.sink
            if sink is None and not ending:
                if failure is not None:
                    state.failure = failure
                else:
                    state.replies.append(reply)
        if sink is not None:
            sink(None if ending else reply, failure, ending)

    def reply_and_end(self, reply: Any = None) -> None:
        """``reply(reply)`` and then ``reply(ending=True)``, in one step.

        A sink with a ``last(value)`` method gets both as that one call, so
        a driver can send a call's only value and its end as one message
        (a plain method's return value); any other sink gets the two calls.
        """
        state = self._reply_state
        with state.lock:
            if state.ended:
                LOG.debug("reply after the end of the stream dropped")
                return
            state.ended = True
            state.count += 1
            sink = state.sink
            if sink is None:
                state.replies.append(reply)
                return
        last = getattr(sink, "last", None)
        if last is not None:
            last(reply)
        else:
            sink(reply, None, False)
            sink(None, None, True)


# -- logging without secrets --------------------------------------------------

_SANITIZE_KEYS = frozenset(("_context_auth_token", "auth_token", "new_pass",
                            "admin_pass"))
_SANITIZED = "<SANITIZED>"
_MAX_SANITIZE_DEPTH = 32


def _sanitized(value: Any, depth: int) -> Any:
    if depth > _MAX_SANITIZE_DEPTH:
        return "<TOO DEEP>"
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            lowered = key.lower() if isinstance(key, str) else ""
            if "password" in lowered or lowered in _SANITIZE_KEYS:
                out[key] = _SANITIZED
            else:
                out[key] = _sanitized(item, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        items = [_sanitized(item, depth + 1) for item in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def safe_for_logging(msg_data: Any) -> Any:
    """A copy of ``msg_data`` with passwords and auth tokens replaced.

    Any key containing ``password`` (any case) and the token keys
    (``auth_token``, ``_context_auth_token``, ``new_pass``, ``admin_pass``)
    are replaced by ``'<SANITIZED>'`` at every depth.  The input is not
    changed.
    """
    return _sanitized(msg_data, 0)


def _safe_log(log_func: Callable[..., Any], msg: str, msg_data: Any) -> Any:
    """``log_func(msg, msg_data)`` with secrets hidden from ``msg_data``."""
    return log_func(msg, safe_for_logging(msg_data))


# -- remote exceptions --------------------------------------------------------

def _primitive(value: Any, depth: int = 0) -> Any:
    """``value`` reduced to JSON types; what JSON cannot carry becomes text."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if depth > 16:
        return _text(value)
    if isinstance(value, (list, tuple)):
        return [_primitive(v, depth + 1) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _primitive(v, depth + 1) for k, v in value.items()}
    return _text(value)


def _text(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the error
        return "<unprintable %s object>" % type(value).__name__


def serialize_remote_exception(failure_info: Any, log_failure: bool = True) -> str:
    """JSON text describing an exception, for the caller to rebuild.

    ``failure_info`` is a ``sys.exc_info()`` tuple.  The JSON object has
    ``class``, ``module``, ``message``, ``tb`` (list of traceback lines),
    ``args`` and ``kwargs``.  A ``_Remote`` class made by
    ``deserialize_remote_exception`` is written under its original name, so
    an error passed on (cells) is rebuilt as the original class again.
    Arguments JSON cannot carry are sent as their text.  Never raises.
    """
    exc_type, failure, tb_obj = failure_info
    if failure is None:
        failure = RPCException("no exception information")
        exc_type, tb_obj = type(failure), None
    try:
        tb = traceback.format_exception(exc_type, failure, tb_obj)
    except Exception:  # noqa: BLE001 - keep going with what we know
        tb = []
    message = _text(failure)
    if log_failure:
        LOG.error("Returning exception %s to caller", message)
        LOG.error("".join(tb))

    cls_name = type(failure).__name__
    mod_name = type(failure).__module__ or ""
    if cls_name.endswith(_REMOTE_POSTFIX) and mod_name.endswith(_REMOTE_POSTFIX):
        cls_name = cls_name[:-len(_REMOTE_POSTFIX)]
        mod_name = mod_name[:-len(_REMOTE_POSTFIX)]
    if mod_name == _PY3_BUILTINS:
        mod_name = _PY2_BUILTINS

    kwargs = getattr(failure, "kwargs", None)
    data = {
        "class": cls_name,
        "module": mod_name,
        "message": message,
        "tb": tb,
        "args": _primitive(getattr(failure, "args", ())),
        "kwargs": _primitive(kwargs) if isinstance(kwargs, Mapping) else {},
    }
    return json.dumps(data)


def _local_module_name(module: str) -> str:
    return _PY3_BUILTINS if module == _PY2_BUILTINS else module


_remote_classes: dict[type[Exception], type[Exception]] = {}
_remote_classes_lock = threading.Lock()


def _remote_class(klass: type[Exception], module_name: str) -> type[Exception]:
    """The ``<Name>_Remote`` subclass of ``klass`` (made once, then reused)."""
    with _remote_classes_lock:
        cls = _remote_classes.get(klass)
        if cls is not None:
            return cls
        base_str = klass.__str__

        def __str__(self: Exception) -> str:  # noqa: N807
            text = self.__dict__.get("_remote_message")
            if isinstance(text, str):
                return text
            return base_str(self)

        name = klass.__name__ + _REMOTE_POSTFIX
        cls = type(name, (klass,), {
            "__str__": __str__,
            "__module__": module_name + _REMOTE_POSTFIX,
            "__qualname__": name,
        })
        _remote_classes[klass] = cls
        return cls


def _malformed(detail: str, data: Any) -> RemoteError:
    snippet = data[:120] if isinstance(data, (str, bytes, bytearray)) else data
    LOG.warning("malformed remote exception payload (%s): %r", detail, snippet)
    return RemoteError(exc_type="RemoteProtocolError",
                       value="malformed remote exception payload: %s" % detail,
                       traceback="")


def _parse_failure(data: Any) -> dict[str, Any] | RemoteError:
    """The failure dict with checked field types, or a RemoteError saying why."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            return _malformed("not UTF-8", data)
    if isinstance(data, str):
        try:
            failure = json.loads(data)
        except (ValueError, RecursionError) as exc:
            return _malformed("not JSON (%s)" % exc, data)
    else:
        failure = data
    if not isinstance(failure, dict):
        return _malformed("a JSON %s, not an object" % type(failure).__name__,
                          data)
    name = failure.get("class")
    module = failure.get("module")
    message = failure.get("message", "")
    tb = failure.get("tb", [])
    if not isinstance(message, str):
        message = _text(message)
    if isinstance(tb, str):
        tb = [tb]
    elif isinstance(tb, list):
        tb = [line if isinstance(line, str) else _text(line) for line in tb]
    else:
        tb = []
    return {"class": name if isinstance(name, str) else None,
            "module": module if isinstance(module, str) else None,
            "message": message, "tb": tb,
            "args": failure.get("args", []),
            "kwargs": failure.get("kwargs", {})}


def deserialize_remote_exception(data: Any, allowed_modules: Iterable[str]
                                 ) -> BaseException:
    """The exception a server described with ``serialize_remote_exception``.

    The original class is used only when its module is in
    ``allowed_modules`` (``exceptions`` means ``builtins``), that module is
    already imported in this process (``sys.modules``: nothing is ever
    imported on the network's say-so), and the name is an ``Exception``
    subclass there.  The result is then an instance of ``<Name>_Remote``, a
    subclass of the original whose ``str()`` is the remote message plus the
    remote traceback, built with the remote ``args``/``kwargs``.  In every
    other case, including construction failing, a ``RemoteError`` carrying
    type, message and traceback.  A malformed payload gives a
    ``RemoteError`` that says so.  Returns the exception; never raises.
    """
    parsed = _parse_failure(data)
    if isinstance(parsed, RemoteError):
        return parsed
    name: str | None = parsed["class"]
    module: str | None = parsed["module"]
    message: str = parsed["message"]
    tb_text = "\n".join(parsed["tb"])

    def remote_error() -> RemoteError:
        return RemoteError(exc_type=name, value=message, traceback=tb_text)
    if name is None or module is None:
        return remote_error()
    # Grizzly nodes did not strip the suffix when re-raising through cells.
    lookup_name = name
    if lookup_name.endswith(_REMOTE_POSTFIX):
        lookup_name = lookup_name[:-len(_REMOTE_POSTFIX)]
    if module.endswith(_REMOTE_POSTFIX):
        module = module[:-len(_REMOTE_POSTFIX)]
    if not _IDENTIFIER_RE.fullmatch(lookup_name):
        return remote_error()

    module_name = _local_module_name(module)
    allowed = {_local_module_name(m) for m in allowed_modules
               if isinstance(m, str)}
    if module_name not in allowed:
        return remote_error()
    mod = sys.modules.get(module_name)
    if mod is None:
        LOG.debug("remote exception %s.%s: module not imported here, "
                  "giving RemoteError", module_name, lookup_name)
        return remote_error()
    klass = getattr(mod, lookup_name, None)
    if not (isinstance(klass, type) and issubclass(klass, Exception)):
        return remote_error()

    args = parsed["args"]
    kwargs = parsed["kwargs"]
    if not isinstance(args, list) or not isinstance(kwargs, dict) \
            or not all(isinstance(k, str) for k in kwargs):
        return remote_error()
    try:
        remote_cls = _remote_class(klass, module_name)
        exc = remote_cls(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - any constructor failure
        LOG.debug("could not rebuild remote %s.%s (%s), giving RemoteError",
                  module_name, lookup_name, err)
        return remote_error()
    try:
        exc.__dict__["_remote_message"] = message + "\n" + tb_text
    except Exception:  # noqa: BLE001 - keep the class's own str()
        LOG.debug("remote %s.%s keeps its own message", module_name, lookup_name)
    return exc
