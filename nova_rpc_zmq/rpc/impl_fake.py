"""In-process RPC backend for unit tests of services (``rpc_backend = impl_fake``).

It implements the backend contract of the ZeroMQ driver with no sockets,
so a service's tests see the behaviour they would see on the wire:

* the context and the message make a JSON round trip through
  ``wire.dumps`` (a value JSON cannot carry raises ``LocalError`` at the
  caller), and so does every reply value;
* a consumer of the bare topic ``X`` also receives ``X.<rpc_zmq_host>``
  (the host of the ``conf`` given to ``create_connection``);
* ``call``/``cast`` go round robin to the non-fanout consumers of a topic;
  ``fanout_cast`` reaches every fanout consumer (``fanout=True``), as the
  real driver's ``fanout~`` subscription does;
* a generator result and ``context.reply(...)`` values stream to
  ``multicall`` as they are produced; ``call`` returns the last value;
* server errors come back through ``common.serialize_remote_exception`` /
  ``deserialize_remote_exception`` with ``conf.allowed_rpc_exception_modules``;
* ``Timeout`` when no consumer serves the topic, or when the next value
  does not arrive within ``timeout`` (default ``conf.rpc_response_timeout``).

``conf`` is a Settings, a ConfigOpts or None; an option it lacks (or None)
has its default (``options.default``), as with no configuration at all.

Methods run in native threads (green ones if the process is
monkey-patched), one per message, so casts are asynchronous: use
``wait_idle()`` in a test to wait until every delivered message was
handled.  Messages to a connection wait until its ``consume_in_thread()``
is called, like messages queued at a real socket.  ``cleanup()`` closes
every connection and forgets all consumers (call it in test teardown).
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import queue
import socket
import sys
import threading
import time
from typing import Any, Callable, Iterator

from nova_rpc_zmq import errors, options, wire
from nova_rpc_zmq.codec import RpcContext
from nova_rpc_zmq.metrics import Counters
from nova_rpc_zmq.rpc import common as rpc_common
from nova_rpc_zmq.runner import END as _END
from nova_rpc_zmq.runner import FAILURE as _FAILURE
from nova_rpc_zmq.runner import VALUE as _VALUE
from nova_rpc_zmq.runner import run_request

LOG = logging.getLogger(__name__)

#: How many notifications ``get_notifications`` remembers.
MAX_NOTIFICATIONS = 1000

#: What this backend dropped or refused: ``call_no_consumer``,
#: ``call_timeout``, ``cast_no_consumer``, ``cast_failed``,
#: ``fanout_no_consumer``, ``late_reply``, ``dropped_on_close``.
counters = Counters("impl_fake")


# -- helpers ------------------------------------------------------------------

def _setting(conf: Any, field: str) -> Any:
    """``conf.<field>``; the option's default when ``conf`` is None or
    lacks it (a ConfigOpts that did not register it) or it is unset."""
    value = getattr(conf, field, None) if conf is not None else None
    return options.default(field) if value is None else value


def _host(conf: Any) -> str:
    return str(_setting(conf, "rpc_zmq_host") or socket.gethostname())


def _timeout(conf: Any, timeout: float | None) -> float:
    # As the ZeroMQ driver: None or 0 means the configured response timeout.
    if timeout:
        return float(timeout)
    return float(_setting(conf, "rpc_response_timeout"))


def _allowed_modules(conf: Any) -> list[str]:
    return list(_setting(conf, "allowed_rpc_exception_modules"))


def _checked_topic(topic: Any) -> str:
    try:
        return wire.check_topic(topic)
    except errors.RemoteProtocolError as exc:
        raise errors.LocalError("cannot send to topic %r: %s"
                                % (topic, exc.detail)) from None


def _wire_text(value: Any) -> bytes:
    """JSON of ``value`` as the driver would send it (LocalError if not JSON)."""
    return wire.dumps(value)


def _context_dict(context: Any) -> dict[str, Any]:
    if context is None:
        return {}
    if isinstance(context, dict):
        return context
    to_dict: Any = getattr(context, "to_dict", None)
    if not callable(to_dict):
        raise errors.LocalError("an RPC context must be a dict or have "
                                "to_dict(); got %s" % type(context).__name__)
    values: dict[str, Any] = to_dict()
    return values


def _checked_msg(msg: Any) -> str:
    """The method name of ``msg``, or LocalError saying what is wrong."""
    if not isinstance(msg, dict) or \
            not isinstance(msg.get(wire.METHOD_KEY), str) or \
            not msg[wire.METHOD_KEY]:
        raise errors.LocalError("an RPC message is a dict with a non-empty "
                                "'method' (build it with RpcProxy.make_msg); "
                                "got %r" % (msg,))
    method: str = msg[wire.METHOD_KEY]
    args = msg.get(wire.ARGS_KEY)
    if args is not None and not isinstance(args, dict):
        raise errors.LocalError("the 'args' of RPC message %r must be a dict"
                                % method)
    return method


# -- the consumer side --------------------------------------------------------

class _Consumer:
    """One ``create_consumer`` registration."""

    def __init__(self, connection: "Connection", topic: str, proxy: Any,
                 fanout: bool) -> None:
        self.connection = connection
        self.topic = topic
        self.directed = topic + "." + connection.host
        self.proxy = proxy
        self.fanout = fanout

    def serves(self, topic: str) -> bool:
        return topic == self.topic or topic == self.directed


class _ReplyChannel:
    """The caller's end of one call: a queue of (kind, payload) items."""

    def __init__(self, topic: str, method: str) -> None:
        self.topic = topic
        self.method = method
        self.queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        self.finished = False    # END or a failure was sent
        self.cancelled = False   # the caller stopped listening

    @property
    def done(self) -> bool:
        return self.finished or self.cancelled

    def cancel(self) -> None:
        self.cancelled = True

    def _put(self, kind: str, payload: Any) -> None:
        with self._lock:
            if self.finished:
                LOG.debug("reply for %s on %s after the end, dropped",
                          self.method, self.topic)
                return
            if kind != _VALUE:
                self.finished = True
            if self.cancelled:
                counters.incr("late_reply")
                return
            self.queue.put((kind, payload))

    def emit(self, kind: str, payload: Any) -> None:
        """``runner.Emit``: carry one item back, a value through JSON."""
        if kind != _VALUE:
            self._put(kind, payload)
            return
        try:
            text = _wire_text(payload)
        except errors.LocalError:
            self._put(_FAILURE,
                      rpc_common.serialize_remote_exception(sys.exc_info()))
            return
        self._put(_VALUE, json.loads(text))


def _run(consumer: _Consumer, ctx_text: bytes, msg_text: bytes,
         channel: _ReplyChannel | None) -> None:
    """Handle one message in a worker thread, as a driver's pool would."""
    ctxt = RpcContext(**json.loads(ctx_text))
    msg = json.loads(msg_text)
    if channel is None:
        if not run_request(consumer.proxy, ctxt, msg, None,
                           where=consumer.topic):
            counters.incr("cast_failed")
        return
    run_request(consumer.proxy, ctxt, msg, channel.emit,
                where=consumer.topic, stopped=lambda: channel.done)


class Connection(rpc_common.Connection):
    """A set of consumers; handles messages once ``consume_in_thread`` ran."""

    def __init__(self, conf: Any) -> None:
        self.conf = conf
        self.host = _host(conf)
        self._lock = threading.Lock()
        self._consumers: list[_Consumer] = []
        self._pending: list[Callable[[], None]] = []
        self._consuming = False
        self._closed = threading.Event()
        with _registry.lock:
            _registry.connections.add(self)

    def create_consumer(self, topic: str, proxy: Any, fanout: bool = False) -> None:
        """Deliver ``topic`` (and ``topic.<host>``) to ``proxy.dispatch``.

        Raises ``LocalError`` for a bad topic or a proxy without
        ``dispatch``, ``InvalidRPCConnectionReuse`` after ``close()``.
        """
        topic = _checked_topic(topic)
        if not callable(getattr(proxy, "dispatch", None)):
            raise errors.LocalError(
                "the proxy of consumer %r must have a dispatch() method (an "
                "RpcDispatcher); got %s" % (topic, type(proxy).__name__))
        if self._closed.is_set():
            raise errors.InvalidRPCConnectionReuse()
        consumer = _Consumer(self, topic, proxy, bool(fanout))
        with _registry.lock:
            self._consumers.append(consumer)
            _registry.consumers.append(consumer)

    def consume_in_thread(self) -> None:
        """Start handling messages (the ones already queued first)."""
        with self._lock:
            if self._consuming or self._closed.is_set():
                return
            self._consuming = True
            pending, self._pending = self._pending, []
        for job in pending:
            _spawn(job)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until ``close()``; True if closed, False on ``timeout``."""
        return self._closed.wait(timeout)

    def close(self) -> None:
        """Forget this connection's consumers; unhandled messages are dropped."""
        with _registry.lock:
            for consumer in self._consumers:
                if consumer in _registry.consumers:
                    _registry.consumers.remove(consumer)
            self._consumers = []
            _registry.connections.discard(self)
        with self._lock:
            dropped = len(self._pending)
            self._pending = []
            self._closed.set()
        if dropped:
            counters.incr("dropped_on_close", dropped)
            LOG.warning("connection closed with %d unhandled messages", dropped)

    def _deliver(self, job: Callable[[], None]) -> bool:
        with self._lock:
            if self._closed.is_set():
                return False
            if not self._consuming:
                self._pending.append(job)
                return True
        _spawn(job)
        return True


class _Registry:
    """Every consumer and connection of the process, and the in-flight count."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.consumers: list[_Consumer] = []
        self.connections: set[Connection] = set()
        self.next_index: dict[str, int] = {}
        self.notifications: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=MAX_NOTIFICATIONS)
        self.idle = threading.Condition(threading.Lock())
        self.running = 0

    def pick(self, topic: str) -> _Consumer | None:
        """The next non-fanout consumer of ``topic``, round robin."""
        with self.lock:
            candidates = [c for c in self.consumers
                          if not c.fanout and c.serves(topic)]
            if not candidates:
                return None
            index = self.next_index.get(topic, 0)
            self.next_index[topic] = index + 1
            return candidates[index % len(candidates)]

    def fanout_consumers(self, topic: str) -> list[_Consumer]:
        with self.lock:
            return [c for c in self.consumers if c.fanout and c.serves(topic)]


_registry = _Registry()


def _spawn(job: Callable[[], None]) -> None:
    with _registry.idle:
        _registry.running += 1

    def work() -> None:
        try:
            job()
        except Exception:  # noqa: BLE001 - _run handles errors; this is a bug
            LOG.exception("fake backend worker failed")
        finally:
            with _registry.idle:
                _registry.running -= 1
                _registry.idle.notify_all()

    threading.Thread(target=work, name="impl_fake-worker", daemon=True).start()


def wait_idle(timeout: float = 10.0) -> bool:
    """Wait until no delivered message is being handled; False on timeout.

    Messages queued at a connection that is not consuming do not count.
    """
    deadline = time.monotonic() + timeout
    with _registry.idle:
        while _registry.running:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _registry.idle.wait(left)
    return True


# -- the backend contract -----------------------------------------------------

def create_connection(conf: Any, new: bool = True) -> Connection:
    """A new connection (``new`` is accepted and ignored)."""
    return Connection(conf)


def _replies(channel: _ReplyChannel, timeout: float,
             allowed: list[str]) -> Iterator[Any]:
    try:
        while True:
            try:
                kind, payload = channel.queue.get(timeout=timeout)
            except queue.Empty:
                counters.incr("call_timeout")
                raise errors.Timeout(info="no reply within %.3g s" % timeout,
                                     topic=channel.topic,
                                     method=channel.method) from None
            if kind == _END:
                return
            if kind == _FAILURE:
                raise rpc_common.deserialize_remote_exception(payload, allowed)
            yield payload
    finally:
        channel.cancel()


def multicall(conf: Any, context: Any, topic: str, msg: dict[str, Any],
              timeout: float | None = None) -> Iterator[Any]:
    """Send now; the iterator yields each value the method produces.

    Raises ``LocalError`` (bad topic, message or non-JSON value) and
    ``Timeout`` (no consumer) at once; the iterator raises the remote
    error, or ``Timeout`` when a value is more than ``timeout`` late.
    Closing the iterator early stops a streaming method.
    """
    topic = _checked_topic(topic)
    method = _checked_msg(msg)
    ctx_text = _wire_text(_context_dict(context))
    msg_text = _wire_text(msg)
    wait = _timeout(conf, timeout)
    consumer = _registry.pick(topic)
    channel = _ReplyChannel(topic, method)
    if consumer is None or not consumer.connection._deliver(
            functools.partial(_run, consumer, ctx_text, msg_text, channel)):
        counters.incr("call_no_consumer")
        raise errors.Timeout(info="no consumer of topic %r" % topic,
                             topic=topic, method=method)
    return _replies(channel, wait, _allowed_modules(conf))


def call(conf: Any, context: Any, topic: str, msg: dict[str, Any],
         timeout: float | None = None) -> Any:
    """Send and wait for the method's result (the last value it streamed)."""
    last = None
    for last in multicall(conf, context, topic, msg, timeout):
        pass
    return last


def cast(conf: Any, context: Any, topic: str, msg: dict[str, Any]) -> None:
    """Queue the message for one consumer of ``topic``; returns at once.

    With no consumer the message is dropped with an error log and the
    ``cast_no_consumer`` counter.
    """
    topic = _checked_topic(topic)
    method = _checked_msg(msg)
    ctx_text = _wire_text(_context_dict(context))
    msg_text = _wire_text(msg)
    consumer = _registry.pick(topic)
    if consumer is None or not consumer.connection._deliver(
            functools.partial(_run, consumer, ctx_text, msg_text, None)):
        counters.incr("cast_no_consumer")
        LOG.error("cast of %s to topic %r dropped: no consumer", method, topic)


def fanout_cast(conf: Any, context: Any, topic: str, msg: dict[str, Any]) -> None:
    """Queue a copy of the message for every fanout consumer of ``topic``."""
    topic = _checked_topic(topic)
    method = _checked_msg(msg)
    ctx_text = _wire_text(_context_dict(context))
    msg_text = _wire_text(msg)
    delivered = 0
    for consumer in _registry.fanout_consumers(topic):
        if consumer.connection._deliver(
                functools.partial(_run, consumer, ctx_text, msg_text, None)):
            delivered += 1
    if not delivered:
        counters.incr("fanout_no_consumer")
        LOG.debug("fanout of %s to topic %r reached no consumer", method, topic)


def cast_to_server(conf: Any, context: Any, server_params: Any, topic: str,
                   msg: dict[str, Any]) -> None:
    """``cast``; ``server_params`` is ignored, as by the ZeroMQ driver."""
    cast(conf, context, topic, msg)


def fanout_cast_to_server(conf: Any, context: Any, server_params: Any,
                          topic: str, msg: dict[str, Any]) -> None:
    """``fanout_cast``; ``server_params`` is ignored."""
    fanout_cast(conf, context, topic, msg)


def notify(conf: Any, context: Any, topic: str, msg: Any,
           envelope: bool = False) -> None:
    """Record a notification (after its JSON round trip) for the test to see."""
    topic = _checked_topic(topic)
    ctx = json.loads(_wire_text(_context_dict(context)))
    body = json.loads(_wire_text(msg))
    with _registry.lock:
        _registry.notifications.append(
            {"topic": topic, "context": ctx, "msg": body, "envelope": envelope})


def get_notifications() -> list[dict[str, Any]]:
    """The recorded notifications, oldest first: dicts with ``topic``,
    ``context``, ``msg`` and ``envelope``."""
    with _registry.lock:
        return list(_registry.notifications)


def cleanup() -> None:
    """Close every connection, forget consumers, round robin state and
    notifications.  Methods still running finish; their replies are dropped.
    """
    with _registry.lock:
        connections = list(_registry.connections)
    for connection in connections:
        connection.close()
    with _registry.lock:
        _registry.consumers.clear()
        _registry.next_index.clear()
        _registry.notifications.clear()
