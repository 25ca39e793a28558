"""Running a server method for one request: the rules every backend shares.

``run_request(proxy, ctxt, body, emit)`` calls
``proxy.dispatch(ctxt, version, method, namespace, **args)`` for a checked
message body and hands what the method produces to ``emit(kind,
payload)``, the backend's way back to the caller (the ZeroMQ driver's
reply casts, the fake backend's queue):

* ``VALUE`` items, in the order they were produced: every value of a
  generator result, every ``ctxt.reply(value)``, or else the return value;
* then exactly one ``END`` (payload None) or ``FAILURE`` (payload: the JSON
  text of ``codec.serialize_remote_exception``), after which nothing more
  is emitted.

The rules:

* ``ctxt.reply(ending=True)`` ends the stream: later values, a generator's
  rest and the return value are not sent;
* a method that used ``ctxt.reply`` has its return value dropped (as the
  old drivers did);
* a generator stops (``close()``) once the stream ended or ``stopped()``
  says the caller went away;
* an exception ends the stream with ``FAILURE``; one listed with
  ``rpc.common.client_exceptions`` (a ``ClientException``) is expected and
  not logged as a server error; one raised after the stream ended is logged
  and not sent;
* a cast (``emit`` None) runs the same way, a generator to its end; its
  values are dropped and an unexpected exception is logged.
"""

from __future__ import annotations

import logging
import sys
import types
from typing import Any, Callable

from nova_rpc_zmq.codec import RpcContext, serialize_remote_exception
from nova_rpc_zmq.errors import ClientException
from nova_rpc_zmq.wire import ARGS_KEY, METHOD_KEY, NAMESPACE_KEY, VERSION_KEY

LOG = logging.getLogger(__name__)

#: The kinds of item ``emit`` receives. ``LAST`` is a value that also ends
#: the stream (a plain method's return value); only an ``emit`` that asked
#: for it (``run_request(..., last=True)``) gets it, others get ``VALUE``
#: then ``END``.
VALUE, FAILURE, END, LAST = "value", "failure", "end", "last"

#: ``emit(kind, payload)``: where a request's values and its end go.
Emit = Callable[[str, Any], None]


class _Sink:
    """``RpcContext.reply_sink`` that turns replies into emitted items."""

    __slots__ = ("emit", "log_failure", "last")

    def __init__(self, emit: Emit, last: bool = False) -> None:
        self.emit = emit
        # a failure the method replies itself is logged as a server error;
        # the runner turns this off for expected (client) exceptions
        self.log_failure = True
        #: ``RpcContext.reply_and_end`` hands a last value here, when set
        self.last: Callable[[Any], None] | None = \
            self._emit_last if last else None

    def _emit_last(self, value: Any) -> None:
        self.emit(LAST, value)

    def __call__(self, value: Any, failure: Any, ending: bool) -> None:
        if ending:
            self.emit(END, None)
        elif failure is not None:
            self.emit(FAILURE, serialize_remote_exception(
                failure, log_failure=self.log_failure))
        else:
            self.emit(VALUE, value)


def _discard(value: Any, failure: Any, ending: bool) -> None:
    """Reply sink of a cast: nobody waits for the values."""


def run_request(proxy: Any, ctxt: RpcContext, body: dict,
                emit: Emit | None = None, *, where: str = "",
                stopped: Callable[[], bool] | None = None,
                last: bool = False) -> bool:
    """Run ``body``'s method on ``proxy`` and emit what it produces.

    ``body`` is a checked message body (``wire.decode`` or the fake
    backend's checks): a non-empty str ``method``, ``args`` a dict.
    ``emit`` None means a cast. ``where`` (the topic) names the request in
    log lines. ``last``: ``emit`` takes ``LAST``, so a plain method's
    return value and the end come as one item (one reply message, where
    ``VALUE`` then ``END`` would make two). Blocks while the method runs. Returns False when the method
    raised an unexpected exception, else True. Raises only what ``emit``
    raises while sending a failure.
    """
    method = body[METHOD_KEY]
    sink = _Sink(emit, last) if emit is not None else None
    ctxt.reply_sink = sink if sink is not None else _discard
    try:
        result = proxy.dispatch(ctxt, body.get(VERSION_KEY), method,
                                body.get(NAMESPACE_KEY),
                                **(body.get(ARGS_KEY) or {}))
        if isinstance(result, types.GeneratorType):
            for item in result:
                ctxt.reply(item)
                if ctxt.reply_ended or (stopped is not None and stopped()):
                    result.close()
                    break
        elif not ctxt.reply_count and not ctxt.reply_ended:
            ctxt.reply_and_end(result)
            return True
        ctxt.reply(ending=True)
        return True
    except ClientException as exc:
        LOG.debug("expected exception in %s on %s: %s", method, where,
                  exc._exc_info[1])
        if sink is not None:
            sink.log_failure = False
        _fail(ctxt, exc._exc_info, method, where, emit is None, True)
        return True
    except Exception:  # noqa: BLE001 - goes back to the caller, or is logged
        _fail(ctxt, sys.exc_info(), method, where, emit is None, False)
        return False


def _fail(ctxt: RpcContext, exc_info: Any, method: str, where: str,
          cast: bool, expected: bool) -> None:
    """End the stream with ``exc_info``, or log why it cannot be sent."""
    if cast:
        if not expected:
            LOG.error("cast %s on %s raised %s", method, where,
                      type(exc_info[1]).__name__, exc_info=exc_info)
        return
    if ctxt.reply_ended:
        # the caller already has its answer (or the reply could not be
        # sent): this failure is lost, so it is logged
        LOG.error("%s on %s raised %s after its reply ended; not sent",
                  method, where, type(exc_info[1]).__name__,
                  exc_info=exc_info)
        return
    ctxt.reply(failure=exc_info)
