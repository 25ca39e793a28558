"""``transport_url = zmq+ring://``: oslo.messaging's API on the Nova-era
topology and wire, so a cloud moves service by service from the legacy
``rpc`` API to oslo.messaging without a flag day (docs/design.md, "The
oslo.messaging driver").

Nothing of the static direct connections is used: no port range, no
registry. The transport hands every message to this process's Nova-era
driver (``impl_zmq.get_driver``), made from the legacy options of the same
ConfigOpts the service hands oslo.messaging, read exactly as the legacy
driver reads them (``[DEFAULT] rpc_zmq_matchmaker = ring``,
``[matchmaker_ring] ringfile``, ``rpc_zmq_port``, ``rpc_zmq_ipc_dir``,
``rpc_zmq_host``, ...). A process that also uses the legacy API with that
ConfigOpts shares one driver, one reply socket and one set of consumers.

Sending (``RPCClient``, ``Notifier``):

* call -> legacy ``call`` on the target's topic: ``MessagingTimeout`` when
  no reply comes within the timeout (or no host of the ring serves the
  topic); a remote exception is rebuilt the oslo.messaging way, with the
  transport's ``allowed_remote_exmods`` (``RemoteError`` otherwise);
* cast -> legacy ``cast``, fanout -> legacy ``fanout_cast``;
* ``Target(server=S)`` -> the directed topic ``topic.S``: the ring sends it
  to host ``S``, so a server's name must be its host's ``rpc_zmq_host``
  (as Nova's ``CONF.host`` is);
* notifications -> legacy ``notify`` (``notifications.info`` goes to the
  ``notifications-info`` topic).

The body on the wire is the oslo.messaging message dict (``method``,
``args``, ``version``, ``namespace``) with the context as the legacy
context: what a Nova-era consumer dispatches.

Serving (``RPCServer``, notification listeners): the listener is a legacy
connection of this host consuming the target's topic (bare and directed to
this host) and its fanout from the host's receiver, like a Nova-era
service's ``create_consumer``. Each legacy request becomes an incoming
message in the listener's queue; the consumer thread that read it waits
until the oslo server replies, then hands the value, or the exception
itself, to the legacy reply path, so a legacy caller gets its reply or its
remote error exactly as from a legacy consumer.

Limits: there are no exchanges (a target naming another exchange than the
transport's default is refused with ``InvalidTarget``); no
``call_monitor_timeout`` heartbeats (the call's timeout bounds it); no
notification pools (every listener of a topic shares its notifications, one
listener getting each, as legacy consumers do; a pool is logged and
ignored).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable

import oslo_messaging
from oslo_messaging._drivers import base
from oslo_messaging._drivers import common as om_common
from oslo_serialization import jsonutils

# The one import across the impl_zmq | oslo_driver layer: zmq+ring:// *is*
# the Nova-era driver behind oslo.messaging's API (.importlinter says so).
from nova_rpc_zmq import config, errors, impl_zmq, wire
from nova_rpc_zmq.oslo_driver.listener import Inbox

if TYPE_CHECKING:
    from nova_rpc_zmq.oslo_driver.driver import ZmqDriver

LOG = logging.getLogger(__name__)

#: The matchmaker of ``zmq+ring://``, as the legacy options name it.
RING = "ring"
#: Seconds between looks at whether a listener was cleaned up while a
#: legacy consumer thread waits for the oslo server's answer.
WAIT_TICK = 0.25
#: The suffix ``codec.deserialize_remote_exception`` gives the class and
#: module of an exception it rebuilt.
REMOTE_SUFFIX = "_Remote"
#: The module of Python's built-in exceptions, as Python 3 names it.
BUILTINS = "builtins"


class RingConfigurationError(base.TransportDriverError):
    """The legacy options ``zmq+ring://`` reads are missing or wrong."""


class ServerStopped(errors.RPCException):
    """The oslo.messaging server stopped before it ran a legacy request
    (what the legacy caller gets back as its remote error)."""

    msg_fmt = "%(what)s stopped before it ran %(method)s"


def legacy_settings(conf: Any) -> config.Settings:
    """The Nova-era ``config.Settings`` of ``conf``, as ``impl_zmq`` derives
    them (the same cached object). Raises RingConfigurationError naming the
    option and the fix."""
    try:
        settings = config.settings_for(conf, rpc_backend="impl_zmq")
    except errors.ConfigurationError as exc:
        raise RingConfigurationError(
            "zmq+ring:// reads the Nova-era options: %s" % exc) from exc
    if settings.rpc_zmq_matchmaker != RING:
        raise RingConfigurationError(
            "zmq+ring:// routes by the Nova-era ring file, but "
            "[DEFAULT] rpc_zmq_matchmaker is %r: set rpc_zmq_matchmaker = "
            "ring and [matchmaker_ring] ringfile = <path of the ring file>, "
            "as for the Nova-era transport on this host"
            % (settings.rpc_zmq_matchmaker,))
    return settings


def is_remote(exc: BaseException) -> bool:
    """True for an exception a server sent (rebuilt by ``codec``)."""
    cls = type(exc)
    return isinstance(exc, errors.RemoteError) or (
        cls.__name__.endswith(REMOTE_SUFFIX)
        and (cls.__module__ or "").endswith(REMOTE_SUFFIX))


def remote_failure(exc: BaseException) -> dict:
    """The serialised form (``class``, ``module``, ``message``, ``tb``,
    ``args``, ``kwargs``) of a remote exception the legacy driver rebuilt,
    for oslo.messaging's ``deserialize_remote_exception``. A legacy
    ``RemoteError`` has no module: oslo.messaging makes it a RemoteError."""
    cls = type(exc)
    if not cls.__name__.endswith(REMOTE_SUFFIX):
        assert isinstance(exc, errors.RemoteError)
        return {"class": exc.exc_type or cls.__name__, "module": None,
                "message": exc.value or "",
                "tb": [exc.traceback] if exc.traceback else [],
                "args": [], "kwargs": {}}
    original: Any = cls.__mro__[1]
    module = original.__module__
    try:
        message = original.__str__(exc)
    except Exception:  # noqa: BLE001 - a broken __str__: the full text
        message = str(exc)
    full = exc.__dict__.get("_remote_message")
    tb = ""
    if isinstance(full, str) and full.startswith(message + "\n"):
        tb = full[len(message) + 1:]
    kwargs = getattr(exc, "kwargs", None)
    return {"class": original.__name__,
            "module": BUILTINS if module == "exceptions" else module,
            "message": message, "tb": [tb] if tb else [],
            "args": jsonutils.to_primitive(list(exc.args)),
            "kwargs": jsonutils.to_primitive(dict(kwargs))
            if isinstance(kwargs, Mapping) else {}}


class _Answer:
    """What the oslo server made of one legacy request; set once."""

    __slots__ = ("done", "value", "failure")

    def __init__(self, event: Any) -> None:
        self.done = event
        self.value: Any = None
        self.failure: Any = None

    def set(self, value: Any, failure: Any) -> None:
        if self.done.is_set():
            LOG.warning("a second reply to one legacy request dropped")
            return
        self.value, self.failure = value, failure
        self.done.set()


class RingRpcMessage(base.RpcIncomingMessage):
    """A legacy request as oslo.messaging's server sees it; ``reply``
    hands the answer to the legacy consumer thread waiting for it."""

    def __init__(self, ctxt: dict, message: dict, answer: _Answer) -> None:
        msg_id = uuid.uuid4().hex
        try:
            super().__init__(ctxt, message, msg_id)
        except TypeError:  # oslo.messaging 14.0: no msg_id argument
            super().__init__(ctxt, message)
            self.msg_id = msg_id
        self._answer = answer

    def acknowledge(self) -> None:
        """Nothing to do: the legacy consumer took it off its socket."""

    def requeue(self) -> None:
        """Not supported: legacy topics keep no queue."""

    def heartbeat(self) -> None:
        """Nothing to do: legacy callers have no call_monitor_timeout."""

    def reply(self, reply: Any = None, failure: Any = None) -> None:
        self._answer.set(reply, failure)


class RingNotification(base.IncomingMessage):
    """A legacy notification; ``acknowledge`` and ``requeue`` do nothing."""

    def acknowledge(self) -> None:
        """Nothing to do: notifications are not stored."""

    def requeue(self) -> None:
        """Not supported: notifications are not stored."""


class _LegacyProxy:
    """What a legacy consumer of the listener runs (an ``RpcDispatcher``
    to it): ``dispatch`` queues the request for the oslo server and blocks
    until it is answered; ``notify`` queues a notification."""

    def __init__(self, listener: "RingListener") -> None:
        self._listener = listener

    def dispatch(self, ctxt: Any, version: Any, method: str, namespace: Any,
                 **kwargs: Any) -> Any:
        message: dict[str, Any] = {wire.METHOD_KEY: method,
                                   wire.ARGS_KEY: kwargs}
        if version is not None:
            message[wire.VERSION_KEY] = version
        if namespace is not None:
            message[wire.NAMESPACE_KEY] = namespace
        return self._listener.run(ctxt.to_dict(), message)

    def notify(self, ctxt: Any, message: dict) -> None:
        self._listener.put(RingNotification(ctxt.to_dict(), message))


class RingListener(Inbox):
    """A poll-style listener fed by legacy consumers of this host.

    ``consume(topic, fanout)`` adds a consumer, ``start`` starts them
    (fanout subscriptions proven, as a Nova-era service's). Thread-safe.
    """

    def __init__(self, bridge: "RingBridge", what: str) -> None:
        drv = bridge.legacy()
        super().__init__(drv.handler)
        self.what = what
        self._event: Callable[[], Any] = drv.handler.Event
        self._proxy = _LegacyProxy(self)
        self._conn = drv.create_connection()
        self.closed = False

    def consume(self, topic: str, fanout: bool = False) -> None:
        """Consume legacy ``topic`` (or its fanout) into this listener."""
        self._conn.create_consumer(topic, self._proxy, fanout)

    def start(self) -> None:
        """Start reading (returns once fanout subscriptions are proven)."""
        self._conn.consume_in_thread()

    def run(self, ctxt: dict, message: dict) -> Any:
        """Hand a legacy request to the oslo server and wait for its answer
        (in the legacy consumer's thread). Returns the value; raises the
        server's exception (the legacy reply path sends it to the caller),
        or ServerStopped once the listener is cleaned up."""
        method = message.get(wire.METHOD_KEY)
        if self._stopped:
            raise ServerStopped(what=self.what, method=method)
        answer = _Answer(self._event())
        self.put(RingRpcMessage(ctxt, message, answer))
        while not answer.done.wait(WAIT_TICK):
            if self.closed:
                raise ServerStopped(what=self.what, method=method)
        if answer.failure is not None:
            exc = answer.failure[1]
            raise exc.with_traceback(answer.failure[2])
        return answer.value

    def stop(self) -> None:
        """Stop consuming (other processes of this host serving the topic
        get its messages) and wake ``poll``; never raises."""
        if not self.close_inbox():
            return
        try:
            self._conn.close()
        except Exception:  # noqa: BLE001 - stopping must go on
            LOG.exception("%s: closing its legacy consumers failed",
                          self.what)

    def cleanup(self) -> None:
        """Stop; legacy requests still waiting get ServerStopped."""
        self.stop()
        self.closed = True


class RingBridge:
    """The ``zmq+ring://`` half of ``ZmqDriver``: its ``send``,
    ``send_notification``, ``listen``, ``listen_for_notifications`` and
    ``cleanup``. The legacy driver is made on first use (a transport alone
    opens no socket). Thread-safe."""

    def __init__(self, driver: "ZmqDriver") -> None:
        self._driver = driver
        self.settings = legacy_settings(driver.conf)
        self._lock = threading.Lock()
        self._listeners: list[RingListener] = []

    def legacy(self) -> Any:
        """This process's Nova-era driver (``impl_zmq.get_driver``)."""
        return impl_zmq.get_driver(self.settings)

    def _check_exchange(self, target: Any) -> None:
        default = self._driver._default_exchange
        if target.exchange and target.exchange != default:
            raise oslo_messaging.InvalidTarget(
                "zmq+ring:// has no exchanges (Nova-era topics are global): "
                "leave the target's exchange unset or %r" % (default,), target)

    # -- sending -----------------------------------------------------------

    def send(self, target: Any, ctxt: Any, message: dict,
             wait_for_reply: bool | None = None, timeout: float | None = None,
             call_monitor_timeout: float | None = None,
             retry: int | None = None, transport_options: Any = None) -> Any:
        """oslo.messaging's ``send`` through the legacy driver; see the
        module docstring for what is raised."""
        self._check_exchange(target)
        topic = target.topic
        try:
            if target.server and not target.fanout:
                topic = wire.directed_topic(topic, target.server)
            elif target.fanout:
                wire.fanout_topic(topic)  # checks the name
        except errors.LocalError as exc:
            raise oslo_messaging.InvalidTarget(str(exc), target) from None
        ctx = dict(ctxt or {})
        drv = self.legacy()
        what = "%s to %s" % ("call" if wait_for_reply else
                             "fanout cast" if target.fanout else "cast", topic)
        if wait_for_reply:
            return self._call(drv, ctx, topic, message, timeout, what)
        send = drv.fanout_cast if target.fanout else drv.cast
        try:
            _primitive_retry(send, ctx, topic, message)
        except errors.NoHostsError as exc:
            LOG.warning("%s: no host serves it (%s); dropped", what, exc)
        except errors.Timeout as exc:
            raise oslo_messaging.MessagingTimeout("%s: %s" % (what, exc)) \
                from exc
        except errors.LocalError as exc:
            raise oslo_messaging.InvalidTarget(str(exc), target) from exc
        except errors.RPCException as exc:
            raise oslo_messaging.MessageDeliveryFailure(
                "%s: %s" % (what, exc)) from exc
        return None

    def _call(self, drv: Any, ctx: dict, topic: str, message: dict,
              timeout: float | None, what: str) -> Any:
        try:
            # multicall sends now: what it raises is ours, not the server's
            replies = _primitive_retry(drv.multicall, ctx, topic, message,
                                       timeout)
        except errors.Timeout as exc:  # NoHostsError too
            raise oslo_messaging.MessagingTimeout("%s: %s" % (what, exc)) \
                from exc
        except errors.RPCException as exc:
            raise oslo_messaging.MessageDeliveryFailure(
                "%s: %s" % (what, exc)) from exc
        result = None
        try:
            for result in replies:
                pass
        except Exception as exc:
            if is_remote(exc):
                data = json.dumps(remote_failure(exc))
                raise om_common.deserialize_remote_exception(
                    data, self._driver._allowed_remote_exmods) from None
            if isinstance(exc, errors.Timeout):
                raise oslo_messaging.MessagingTimeout(
                    "%s: %s" % (what, exc)) from exc
            if isinstance(exc, errors.RPCException):
                raise oslo_messaging.MessageDeliveryFailure(
                    "%s: %s" % (what, exc)) from exc
            raise
        return result

    def send_notification(self, target: Any, ctxt: Any, message: dict,
                          version: float, retry: int | None = None) -> None:
        """A notification through the legacy ``notify``: to one consumer
        of ``<topic>.<priority>``; dropped (logged) when no host serves it."""
        self._check_exchange(target)
        drv = self.legacy()
        try:
            _primitive_retry(drv.notify, dict(ctxt or {}), target.topic,
                             message, version >= 2.0)
        except errors.NoHostsError as exc:
            LOG.warning("notification to %s dropped: %s", target.topic, exc)
        except errors.RPCException as exc:
            raise oslo_messaging.MessageDeliveryFailure(
                "notification to %s: %s" % (target.topic, exc)) from exc

    # -- listening ---------------------------------------------------------

    def listen(self, target: Any, batch_size: int, batch_timeout: Any) -> Any:
        """An RPC server's listener: legacy consumers of the target's topic
        (bare and directed to this host) and of its fanout."""
        self._check_exchange(target)
        host = self.settings.rpc_zmq_host
        if target.server and target.server != host:
            LOG.warning("RPC server %s: zmq+ring:// sends a call directed to "
                        "server %r to the host of that name; this host is "
                        "rpc_zmq_host %r, so such calls do not come here. "
                        "Name the server after rpc_zmq_host.", target,
                        target.server, host)
        try:
            wire.fanout_topic(target.topic)
        except errors.LocalError as exc:
            raise oslo_messaging.InvalidTarget(str(exc), target) from None
        listener = RingListener(self, "RPC server %s" % target)
        listener.consume(target.topic)
        listener.consume(target.topic, fanout=True)
        return self._started(listener, batch_size, batch_timeout)

    def listen_for_notifications(self, targets_and_priorities: Any,
                                 pool: str | None, batch_size: int,
                                 batch_timeout: Any) -> Any:
        """A notification listener: legacy consumers of each
        ``<topic>-<priority>``."""
        if pool:
            LOG.warning("zmq+ring:// has no notification pools: pool %r is "
                        "ignored, every listener of a topic shares its "
                        "notifications", pool)
        topics = []
        for target, priority in targets_and_priorities:
            self._check_exchange(target)
            topics.append(wire.notification_topic(
                "%s.%s" % (target.topic, priority)))
        listener = RingListener(self, "notification listener of %s"
                                % ", ".join(topics))
        for topic in topics:
            listener.consume(topic)
        return self._started(listener, batch_size, batch_timeout)

    def _started(self, listener: RingListener, batch_size: int,
                 batch_timeout: Any) -> Any:
        try:
            listener.start()
        except BaseException:
            listener.cleanup()
            raise
        with self._lock:
            self._listeners.append(listener)
        return base.PollStyleListenerAdapter(listener, batch_size,
                                             batch_timeout)

    def cleanup(self) -> None:
        """Clean the listeners up. The legacy driver stays: legacy code of
        this process may use it; ``impl_zmq.cleanup()`` or the exit
        closes it."""
        with self._lock:
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.cleanup()


def _primitive_retry(send: Callable[..., Any], ctx: dict, topic: str,
                     message: dict, *rest: Any) -> Any:
    """``send(ctx, topic, message, *rest)``; once more with JSON primitives
    when the wire refuses a value (a datetime, a set...)."""
    try:
        return send(ctx, topic, message, *rest)
    except errors.LocalError:
        return send(jsonutils.to_primitive(ctx, convert_instances=True),
                    topic,
                    jsonutils.to_primitive(message, convert_instances=True),
                    *rest)
