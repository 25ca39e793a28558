"""Listeners and incoming messages of the oslo.messaging driver.

A listener owns one ``Inbound`` socket (its own port) and the registry
keys that lead there; with ``use_pub_sub`` an RPC server's listener also
owns a ``pubsub.Subscriber`` whose reader feeds fanouts into the same
callback. Its reader decodes each message with ``wire.decode``
(hostile input: a bad message is logged, counted in ``dropped`` and
dropped) and queues it; the socket takes messages of parts and one-part
messages alike (``sockets.Inbound`` opens the latter);
``poll`` takes from the queue. ``stop`` unregisters at once (no new
callers find it) and wakes ``poll``, which then returns what is queued and
nothing more; ``cleanup`` closes the socket.

A listener that takes one message at a time (``batch_size`` 1, every RPC
server and most notification listeners) is wrapped in ``DirectListener``
instead of oslo.messaging's ``PollStyleListenerAdapter``: the reader hands
each message to oslo.messaging's callback itself, so a request crosses two
threads (reader, executor worker) instead of three, the adapter's polling
thread being the one left out.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

from oslo_messaging._drivers import base
from oslo_messaging._drivers import common as om_common

from nova_rpc_zmq import errors, wire, zmqio
from nova_rpc_zmq.oslo_driver.registry import POOL_SEPARATOR

if TYPE_CHECKING:
    from nova_rpc_zmq.oslo_driver.driver import ZmqDriver

LOG = logging.getLogger(__name__)

#: The request key carrying the caller's call_monitor_timeout (as
#: oslo.messaging's AMQP drivers name it).
MONITOR_KEY = "_timeout"
_STOP = object()
#: Where the caller's ``host:port`` starts in a ``zmq_replies.`` topic.
_REPLY_TO_START = len(wire.REPLIES_PREFIX) + 1
#: Whether ``IncomingMessage`` takes the ``msg_id`` (newer oslo.messaging;
#: with 14.0 the driver sets the attribute itself).
_TAKES_MSG_ID = "msg_id" in inspect.signature(
    base.IncomingMessage.__init__).parameters


def is_remote_failure(value: Any) -> bool:
    """True for a response element that carries a serialised exception."""
    return (type(value) is dict and len(value) == 1
            and type(value.get(wire.EXC_KEY)) is str)


def _init_incoming(msg: Any, cls: Any, ctxt: dict, message: dict,
                   msg_id: str) -> None:
    """``cls.__init__`` of ``msg`` with its ``msg_id`` (oslo.messaging
    14.0's takes none: the attribute is set here)."""
    if _TAKES_MSG_ID:
        cls.__init__(msg, ctxt, message, msg_id)
    else:
        cls.__init__(msg, ctxt, message)
        msg.msg_id = msg_id


class RpcMessage(base.RpcIncomingMessage):
    """An RPC request; ``reply`` and ``heartbeat`` go back to the caller's
    reply socket (nothing for a cast). Neither ever raises."""

    def __init__(self, driver: "ZmqDriver", ctxt: dict, message: dict,
                 msg_id: str, reply_to: str | None) -> None:
        _init_incoming(self, base.RpcIncomingMessage, ctxt, message, msg_id)
        self._driver = driver
        self._reply_to = reply_to
        #: its number from ``driver.request_taken`` (``reply`` ends it)
        self.counted = 0
        monitor = message.pop(MONITOR_KEY, None)
        if type(monitor) in (int, float) and monitor > 0:
            self.client_timeout = monitor

    def acknowledge(self) -> None:
        """Nothing to do: a message is the listener's once read."""

    def requeue(self) -> None:
        """Not supported (``require_features(requeue=True)`` says so)."""

    def reply(self, reply: Any = None, failure: Any = None) -> None:
        # oslo.messaging's server calls this once per message it ran, casts
        # too, when the method has returned or raised
        counted, self.counted = self.counted, 0
        alone = counted and self._driver.request_done(counted)
        if not self._reply_to:
            return
        if failure is not None:
            response = [{wire.EXC_KEY:
                         om_common.serialize_remote_exception(failure)}]
        else:
            response = [reply]
        self._driver.send_reply(self._reply_to, self.msg_id, response, None)
        if alone:
            zmqio.hand_over()

    def heartbeat(self) -> None:
        if self._reply_to:
            self._driver.send_reply(self._reply_to, self.msg_id, [], True)


class NotificationMessage(base.IncomingMessage):
    """A notification; ``acknowledge`` and ``requeue`` do nothing."""

    def __init__(self, ctxt: dict, message: dict, msg_id: str) -> None:
        _init_incoming(self, base.IncomingMessage, ctxt, message, msg_id)

    def acknowledge(self) -> None:
        """Nothing to do: notifications are not stored."""

    def requeue(self) -> None:
        """Not supported: notifications are not stored."""


class Inbox(base.PollStyleListener):
    """A poll-style listener whose messages wait in a queue of ``handler``:
    its feeder calls ``put``, ``poll`` takes them, ``close_inbox`` (from
    ``stop``) makes ``poll`` drain what is left and then return None."""

    def __init__(self, handler: Any) -> None:
        super().__init__()
        self._queue = handler.Queue()
        self._empty = handler.Empty
        self._stopped = False

    def put(self, message: base.IncomingMessage) -> None:
        self._queue.put(message)

    def close_inbox(self) -> bool:
        """Mark stopped and wake ``poll``; False when already stopped."""
        if self._stopped:
            return False
        self._stopped = True
        self._queue.put(_STOP)
        return True

    @base.batch_poll_helper
    def poll(self, timeout: float | None = None) -> Any:
        """The next message, or None after ``timeout`` or once stopped and
        drained. Never raises."""
        try:
            if self._stopped:
                item = self._queue.get(block=False)
            else:
                item = self._queue.get(timeout=timeout)
        except self._empty:
            return None
        return None if item is _STOP else item


class QueueListener(Inbox):
    """A poll-style listener fed by an ``Inbound`` reader; after
    ``start_direct`` the reader calls the callback instead of queueing."""

    def __init__(self, driver: "ZmqDriver", topics: set[str],
                 keys: list[str], notifications: bool, what: str,
                 pool: str | None = None,
                 subscription: str | None = None) -> None:
        super().__init__(driver.handler)
        self._driver = driver
        self._topics = frozenset(topics)
        self._notifications = notifications
        self.what = what
        #: messages dropped, by reason (``wire.REASONS``, ``wrong topic``);
        #: plain counts: a lost increment under a race costs nothing
        self.dropped: dict[str, int] = {}
        self.inbound = driver.inbound(self._on_frames, what)
        self.member = driver.member(self.inbound.port)
        if pool is not None:
            # notification listeners: "<pool>@host:port", pools apart
            self.member = pool + POOL_SEPARATOR + self.member
        self.registrations = [(key, self.member) for key in keys]
        # the callback of DirectListener; the lock keeps a message from
        # being queued while start_direct drains the queue, and any
        # message from being handed over once stop() has returned
        self._callback: Any = None
        self._handing = driver.handler.Lock()
        # use_pub_sub: fanouts of registry key ``subscription`` come from
        # the publisher proxies into the same callback
        self.subscriber: Any = None
        if subscription is not None:
            try:
                self.subscriber = driver.subscriber(subscription,
                                                    self._on_frames, what)
            except BaseException:
                self.inbound.close()
                raise
        try:
            driver.register(self)
        except BaseException:
            if self.subscriber is not None:
                self.subscriber.close()
            raise

    def _on_frames(self, parts: list) -> None:
        try:
            msg = wire.decode(parts)
        except errors.RemoteProtocolError as exc:
            self._drop(exc.reason)
            LOG.warning("%s: dropped a bad message (%s): %s", self.what,
                        exc.reason, exc.detail)
            return
        if not isinstance(msg, wire.Message):
            return  # a probe: nothing to answer on this path
        if msg.topic not in self._topics:
            self._drop("wrong topic")
            LOG.warning("%s: dropped a message for topic %s (this listener "
                        "serves %s; a stale registration?)", self.what,
                        msg.topic, ", ".join(sorted(self._topics)))
            return
        message = self._incoming(msg)
        with self._handing:
            callback = self._callback
            if callback is None:
                self.put(message)
                return
            if type(message) is RpcMessage:
                message.counted = self._driver.request_taken()
            callback([message])

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def start_direct(self, callback: Any) -> None:
        """Hand every message to ``callback([message])`` from now on, the
        ones that came before ``start`` first, in order."""
        with self._handing:
            while True:
                try:
                    item = self._queue.get(block=False)
                except self._empty:
                    break
                if item is not _STOP:
                    callback([item])
            self._callback = callback

    def _incoming(self, msg: wire.Message) -> base.IncomingMessage:
        if self._notifications:
            return NotificationMessage(msg.context, msg.body,
                                       self._driver.local_id())
        # decode parsed and checked the call request already (msg.part)
        request = msg.call
        if request is not None:
            reply_to = request.reply_topic[_REPLY_TO_START:]
            return RpcMessage(self._driver, msg.context, request.msg,
                              request.msg_id, reply_to)
        return RpcMessage(self._driver, msg.context, msg.body,
                          self._driver.local_id(), None)

    def stop(self) -> None:
        """Unregister and wake ``poll``; no message is handed to the
        direct callback after this returns. Thread-safe, never raises."""
        with self._handing:
            self._callback = None
        if self.close_inbox():
            self._driver.unregister(self)

    def cleanup(self) -> None:
        """Stop, then close the sockets (unread messages are dropped)."""
        self.stop()
        if self.subscriber is not None:
            self.subscriber.close()
        self.inbound.close()


class DirectListener(base.Listener):
    """oslo.messaging's ``Listener`` over a ``QueueListener`` whose reader
    calls the server's callback with each message (``batch_size`` 1)."""

    def __init__(self, inbox: QueueListener, batch_size: int,
                 batch_timeout: Any) -> None:
        super().__init__(batch_size, batch_timeout, inbox.prefetch_size)
        self._inbox = inbox

    def start(self, on_incoming_callback: Any) -> None:
        super().start(on_incoming_callback)
        self._inbox.start_direct(on_incoming_callback)

    def stop(self) -> None:
        self._inbox.stop()
        super().stop()

    def cleanup(self) -> None:
        self._inbox.cleanup()


def adapt(inbox: QueueListener, batch_size: int,
          batch_timeout: Any) -> base.Listener:
    """The ``Listener`` oslo.messaging gets for ``inbox``: direct for one
    message at a time, oslo.messaging's polling adapter for batches."""
    if batch_size is None or batch_size <= 1:
        return DirectListener(inbox, batch_size, batch_timeout)
    return base.PollStyleListenerAdapter(inbox, batch_size, batch_timeout)
