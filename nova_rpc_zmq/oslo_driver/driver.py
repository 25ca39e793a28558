"""``ZmqDriver``: oslo.messaging's driver contract on static direct
connections (see docs/design.md, "The oslo.messaging driver").

Every RPC server and notification listener binds its own port and
registers ``host:port`` under its target's keys; a caller looks the key up
(``registry.Lookup``), connects a PUSH straight to the server's PULL and
sends the message in the project's wire format (``wire.encode``: v2 style,
oslo envelope). A call is a curried ``-reply`` request naming the caller's
own reply socket (``zmq_replies.<host>:<port>``); the server pushes the
``-process_reply`` answer there. One TCP hop each way, no broker, no proxy.

On static direct connections messages between two processes of this
version travel as one ZeroMQ part (``sockets.py``, "One-part messages"):
call ids say that the caller unpacks, a server packs its replies to such
callers, and a caller packs toward a server once a packed reply showed
that it unpacks.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import uuid
from typing import Any

import oslo_messaging
from oslo_messaging._drivers import base

from nova_rpc_zmq import concurrency, errors, wire, zmqio
from nova_rpc_zmq.oslo_driver import options, registry
from nova_rpc_zmq.oslo_driver.curve import Curve, HostRefused, NoServerKey
from nova_rpc_zmq.oslo_driver.dynamic import DynamicOutbound
from nova_rpc_zmq.oslo_driver.listener import (MONITOR_KEY, QueueListener,
                                               adapt)
from nova_rpc_zmq.oslo_driver.proxied import (PROXY_SETTLE, ProxyInbound,
                                              ProxyList, ProxyOutbound)
from nova_rpc_zmq.oslo_driver.pubsub import (FanoutSender, Subscriber,
                                             parse_subscribe_on, publishers)
from nova_rpc_zmq.oslo_driver.replies import ReplyWaiter
from nova_rpc_zmq.oslo_driver.sockets import (UNPACKS_MARK, Inbound,
                                              Outbound, caller_unpacks)

LOG = logging.getLogger(__name__)

#: Seconds one server may take to accept a message (its connection up,
#: room in its queue) before the next server of the topic is tried.
ATTEMPT_WAIT = 1.0
#: A cast that finds no server willing to take it gives up after this
#: long when ``retry`` is unlimited (calls have their own timeout).
CAST_GIVE_UP = 30.0
#: Errors of a send to a member that CURVE keeps us from (its key or ours).
CURVE_REFUSALS = (HostRefused, NoServerKey)
#: The transport URL's matchmaker (after ``zmq+``) -> registry kind.
URL_MATCHMAKERS = {"": None, "dummy": "dummy", "redis": "redis",
                   "sentinel": "sentinel", "ring": "ring"}
#: The matchmaker whose transport is the Nova-era driver (``ring.py``).
RING = "ring"
#: Matchmakers a router proxy cannot share (it is another process).
NOT_SHARED = {"dummy": "zmq+dummy:// is one process's",
              "ring": "zmq+ring:// routes by the Nova-era ring file"}


class ZmqConfigurationError(base.TransportDriverError):
    """A setting of ``[oslo_messaging_zmq]`` this driver cannot honour."""


def rpc_key(exchange: str, topic: str, server: str | None = None) -> str:
    """The registry key of an RPC target (bare, or directed to server)."""
    key = "rpc/%s/%s" % (exchange, topic)
    return key if server is None else "%s/%s" % (key, server)


def notify_key(exchange: str, topic: str) -> str:
    """The registry key of a notification topic (``topic.priority``)."""
    return "notify/%s/%s" % (exchange, topic)


def _matchmaker(url: Any, zconf: Any) -> str:
    transport = url.transport or "zmq"
    _, _, name = transport.partition("+")
    if name in URL_MATCHMAKERS:
        kind = URL_MATCHMAKERS[name] or zconf.rpc_zmq_matchmaker
    else:
        kind = name
    if kind in options.MATCHMAKERS:
        return kind
    raise oslo_messaging.InvalidTransportURL(
        str(url), "the %r matchmaker (%s) is not available yet; use zmq:// "
        "(one host), zmq+redis://host:port, zmq+sentinel://host:port,..., "
        "zmq+ring:// (the Nova-era ring file and receivers) or zmq+dummy:// "
        "(one process)"
        % (kind, transport))


def matchmaker_kind(url: Any, zconf: Any) -> str:
    """The registry kind of a TransportURL (``redis``, ``directory``...);
    raises InvalidTransportURL for one this driver does not have."""
    return _matchmaker(url, zconf)


def _check_proxy_matchmaker(kind: str) -> None:
    if kind in NOT_SHARED:
        raise ZmqConfigurationError(
            "[%s] use_router_proxy = true: %s, the proxies cannot register "
            "there; use zmq+redis://host:port (or zmq:// on one host) for "
            "services and proxies" % (options.GROUP, NOT_SHARED[kind]))


def _ring_bridge(driver: "ZmqDriver") -> Any:
    """``zmq+ring://``'s send and listen paths (imported only then: it
    loads the Nova-era driver)."""
    from nova_rpc_zmq.oslo_driver.ring import RingBridge
    return RingBridge(driver)


def _check(zconf: Any) -> None:
    problems, warnings = options.check(zconf)
    for warning in warnings:
        LOG.warning("[%s] %s", options.GROUP, warning)
    if problems:
        raise ZmqConfigurationError("[%s] %s" % (options.GROUP,
                                                 "; ".join(problems)))


class ZmqDriver(base.BaseDriver):
    """oslo.messaging driver for ``zmq://``, ``zmq+redis://``,
    ``zmq+dummy://`` transport URLs; thread-safe (green or native threads,
    whichever the process uses)."""

    def __init__(self, conf: Any, url: Any, default_exchange: str | None = None,
                 allowed_remote_exmods: list[str] | None = None) -> None:
        super().__init__(conf, url, default_exchange, allowed_remote_exmods)
        self.zconf = options.register(conf)
        _check(self.zconf)
        self.kind = _matchmaker(url, self.zconf)
        self.proxied = bool(self.zconf.use_router_proxy)
        self.dynamic = bool(self.zconf.use_dynamic_connections)
        # with dynamic connections a bare topic's message is offered to at
        # most this many workers per round (the first by round robin)
        self._offered = self.zconf.zmq_failover_connections + 1 \
            if self.dynamic else None
        if self.proxied:
            _check_proxy_matchmaker(self.kind)
        self._ring = _ring_bridge(self) if self.kind == RING else None
        self.handler = concurrency.get_handler()
        # CURVE keys are read now: a bad key file fails the start
        try:
            self._curve = Curve.from_options(self.zconf, self.handler)
        except errors.ConfigurationError as exc:
            raise ZmqConfigurationError("[%s] %s" % (options.GROUP, exc)) \
                from None
        try:
            # zmq+ring:// registers nothing: liveness is the Nova-era side's
            self.registry = registry.registry_for(
                self.kind, url, None if self._ring else conf,
                self.zconf.rpc_zmq_host, self.handler)
        except ValueError as exc:
            raise oslo_messaging.InvalidTransportURL(str(url), str(exc)) \
                from None
        self.lookup = registry.Lookup(self.registry)
        self._proxies = ProxyList(registry.Lookup(self.registry),
                                  self.handler.Lock(), PROXY_SETTLE) \
            if self.proxied else None
        linger = self.zconf.zmq_linger
        self._linger_ms = 1000 if linger < 0 else int(linger * 1000)
        self._lock = self.handler.Lock()
        self._listeners: list[QueueListener] = []
        self._refresher: Any = None
        self._stop_refresh = self.handler.Event()
        self._pid = os.getpid()
        # one-part messages: on static direct connections only (a proxy
        # routes by the parts; a dynamic connection carries one message)
        self._packing = not self.proxied and not self.dynamic
        self._ids_prefix = self._new_ids_prefix()
        self._ids = itertools.count()
        self._ctx: Any = None
        self._outbound: Outbound | ProxyOutbound | DynamicOutbound | None \
            = None
        #: the outbound sockets when they may send one-part messages
        self._direct: Outbound | None = None
        self._replies: ReplyWaiter | None = None
        self._closed = False
        #: let the core go after queueing a lone message (``_context``)
        self._hand_over = False
        #: requests handed to oslo.messaging and not yet answered, and the
        #: number of the last one handed
        self._serving = 0
        self._taken = 0
        self._serving_lock = self.handler.Lock()

    # -- sockets -----------------------------------------------------------

    def _context(self) -> Any:
        if self._pid != os.getpid():
            # A forked child must not touch its parent's sockets: it
            # starts afresh (the parent's are left alone, not closed).
            LOG.info("fork detected: this process gets its own sockets")
            self._pid = os.getpid()
            self._ids_prefix = self._new_ids_prefix()
            self._ctx = self._outbound = self._replies = self._direct = None
            self._listeners = []
            self._refresher = None
        if self._ctx is None:
            with self._lock:
                if self._ctx is None:
                    batch = self.zconf.rpc_zmq_io_batch
                    ctx = zmqio.context(self.handler, batch=batch)
                    self._hand_over = batch and not self.handler.green \
                        and zmqio.batch_policy_allowed()
                    if self._proxies is not None:
                        self._outbound = ProxyOutbound(
                            self.handler, ctx, self._linger_ms,
                            self._proxies, self.lookup.suspect,
                            curve=self._curve)
                    elif self.dynamic:
                        self._outbound = DynamicOutbound(
                            self.handler, ctx, self._linger_ms,
                            curve=self._curve)
                    else:
                        self._outbound = self._direct = Outbound(
                            self.handler, ctx, self._linger_ms,
                            curve=self._curve)
                    self._ctx = ctx
        return self._ctx

    def _out(self) -> Outbound | ProxyOutbound | DynamicOutbound:
        self._context()
        assert self._outbound is not None
        return self._outbound

    def inbound(self, on_message: Any, what: str, reader: bool = True,
                unpack: bool = True) -> Inbound | ProxyInbound:
        """A bound PULL socket in the configured port range, which opens
        one-part messages unless ``unpack`` is False (``Inbound``); with
        ``use_router_proxy`` a DEALER connected to every proxy."""
        z = self.zconf
        if self._proxies is not None:
            try:
                return ProxyInbound(self.handler, self._context(),
                                    z.rpc_zmq_host, self._proxies,
                                    on_message, what, curve=self._curve)
            except (errors.LocalError, ValueError) as exc:
                raise ZmqConfigurationError(
                    "[%s] %s" % (options.GROUP, exc)) from exc
        try:
            return Inbound(self.handler, self._context(),
                           z.rpc_zmq_bind_address,
                           (z.rpc_zmq_min_port, z.rpc_zmq_max_port,
                            z.rpc_zmq_bind_port_retries), on_message, what,
                           curve=self._curve, reader=reader,
                           batch=z.rpc_zmq_io_batch, unpack=unpack)
        except (RuntimeError, ValueError) as exc:
            raise ZmqConfigurationError(str(exc)) from exc

    def member(self, port: int | str) -> str:
        """How other hosts reach our ``port``: ``rpc_zmq_host:port``, or
        behind router proxies the inbound socket's member id itself."""
        if isinstance(port, str):
            return port
        return "%s:%d" % (self.zconf.rpc_zmq_host, port)

    # -- registrations -----------------------------------------------------

    def register(self, listener: QueueListener) -> None:
        """Register a new listener's keys and keep them fresh."""
        ttl = self.zconf.zmq_target_expire
        try:
            for key, member in listener.registrations:
                self.registry.register(key, member, ttl)
        except Exception as exc:
            listener.inbound.close()
            raise base.TransportDriverError(
                "cannot register %s in the %s matchmaker: %s"
                % (listener.what, self.kind, exc)) from exc
        with self._lock:
            self._listeners.append(listener)
            if self._refresher is None and self.zconf.zmq_target_update > 0:
                self._refresher = self.handler.spawn(self._refresh)

    def unregister(self, listener: QueueListener) -> None:
        """Remove a listener's keys; never raises."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)
        for key, member in listener.registrations:
            try:
                self.registry.unregister(key, member)
            except Exception:
                LOG.exception("could not unregister %s from %s", member, key)

    def _refresh(self) -> None:
        every = self.zconf.zmq_target_update
        while not self._stop_refresh.wait(every):
            with self._lock:
                listeners = list(self._listeners)
            for listener in listeners:
                for key, member in listener.registrations:
                    try:
                        self.registry.register(key, member,
                                               self.zconf.zmq_target_expire)
                    except Exception as exc:
                        LOG.warning("could not refresh %s under %s in the %s "
                                    "matchmaker (retried in %ss): %s", member,
                                    key, self.kind, every, exc)

    # -- sending -----------------------------------------------------------

    def _deliver(self, key: str, parts: list, deadline: float | None,
                 retry: int | None, what: str, wait_for_servers: bool
                 ) -> str | None:
        """Hand ``parts`` to one member of ``key`` (round robin; with
        dynamic connections at most ``zmq_failover_connections + 1``
        members per round); returns the member that took them.

        Without ``wait_for_servers``, returns None when a fresh look finds
        no member. Raises MessagingTimeout at ``deadline`` and
        MessageDeliveryFailure once ``retry`` rounds in which every member
        refused are used up; a message is never handed over twice.
        """
        out = self._out()
        refused = 0
        fresh = False
        while True:
            members = self.lookup.rotation(key, fresh)[:self._offered]
            rejected: list[Exception] = []
            for member in members:
                wait = ATTEMPT_WAIT if deadline is None else max(
                    0.0, min(ATTEMPT_WAIT, deadline - time.monotonic()))
                try:
                    if out.send(member, parts, wait):
                        return member
                except CURVE_REFUSALS as refused_by:
                    # this member will not talk to us: try the next one
                    rejected.append(refused_by)
                    self.lookup.suspect(member)
                    continue
                self.lookup.suspect(member)
                LOG.warning("%s: %s did not take the message within %.1fs",
                            what, member, wait)
            if members and len(rejected) == len(members):
                # every server refused our keys: say so now, not at timeout
                raise rejected[-1]
            for refusal in rejected:
                LOG.warning("%s: %s", what, refusal)
            if members:
                refused += 1
            elif fresh and not wait_for_servers:
                return None
            if deadline is not None and time.monotonic() >= deadline:
                raise oslo_messaging.MessagingTimeout(
                    "%s: no server took the message in time" % what)
            if members and retry is not None and 0 <= retry < refused:
                raise oslo_messaging.MessageDeliveryFailure(
                    "%s: no server took the message after %d retries"
                    % (what, retry))
            if fresh:
                self.handler.sleep(0.05)
            fresh = True

    def _encode(self, msg_id: str | None, topic: str, ctxt: Any, body: dict,
                envelope: bool = True, notification: bool = False) -> list:
        ctxt = dict(ctxt or {})
        try:
            return wire.encode(msg_id, topic, ctxt, body, envelope,
                               wire.DEFAULT_LIMITS, notification)
        except errors.LocalError:
            from oslo_serialization import jsonutils
            return wire.encode(msg_id, topic, jsonutils.to_primitive(ctxt),
                               jsonutils.to_primitive(body), envelope,
                               wire.DEFAULT_LIMITS, notification)

    def send(self, target: Any, ctxt: Any, message: dict,
             wait_for_reply: bool | None = None, timeout: float | None = None,
             call_monitor_timeout: float | None = None,
             retry: int | None = None, transport_options: Any = None) -> Any:
        if self._ring is not None:
            return self._ring.send(target, ctxt, message, wait_for_reply,
                                   timeout, call_monitor_timeout, retry)
        exchange = target.exchange or self._default_exchange
        topic = target.topic
        try:
            if target.fanout:
                key, wire_topic = rpc_key(exchange, topic), \
                    wire.fanout_topic(topic)
            elif target.server:
                key = rpc_key(exchange, topic, target.server)
                wire_topic = wire.directed_topic(topic, target.server)
            else:
                key, wire_topic = rpc_key(exchange, topic), topic
        except errors.LocalError as exc:
            raise oslo_messaging.InvalidTarget(str(exc), target) from None
        deadline = None if timeout is None else time.monotonic() + timeout
        what = "%s to %s" % ("call" if wait_for_reply else "cast", key)
        if not wait_for_reply:
            parts = self._encode(None, wire_topic, ctxt, message)
            if target.fanout:
                self._fanout(key, parts, what)
            elif self._deliver(key, parts, deadline or (
                    time.monotonic() + CAST_GIVE_UP), retry, what,
                    False) is None:
                LOG.warning("%s: no server registered; dropped", what)
            return None
        replies = self._reply_waiter()
        msg_id = self.local_id()
        msg = dict(message)
        if call_monitor_timeout:
            msg[MONITOR_KEY] = call_monitor_timeout
        body = wire.call_request(msg_id, replies.reply_topic, {}, msg)
        parts = self._encode(msg_id, wire_topic, ctxt, body)
        waiting = replies.expect(msg_id)
        member = None
        try:
            member = self._deliver(key, parts, deadline, retry, what, True)
            if self._hand_over and replies.calls_waiting() == 1:
                zmqio.hand_over()
            value, packed = replies.wait(msg_id, waiting, deadline,
                                         call_monitor_timeout, what)
        except oslo_messaging.MessagingTimeout:
            if member is not None and self._direct is not None:
                # it may be an earlier version now, which drops one part
                self._direct.learned(member, False)
            raise
        finally:
            replies.forget(msg_id)
        if self._direct is not None and member is not None:
            self._direct.learned(member, packed)
        return value

    def _new_ids_prefix(self) -> str:
        """The random start of this transport's ids; with one-part
        messages it says that our reply socket unpacks."""
        if self._packing:
            return UNPACKS_MARK + uuid.uuid4().hex[:19]
        return uuid.uuid4().hex[:20]

    def local_id(self) -> str:
        """A new id, unique among this transport's: its random prefix and
        a counter (a forked child gets its own prefix in ``_context``).
        A call's msg_id, and the msg_id oslo.messaging wants of each
        incoming cast and notification (cheaper than a uuid4, which reads
        the system's random source each time)."""
        return "%s%x" % (self._ids_prefix, next(self._ids))

    #: With ``use_pub_sub``: the sender of fanouts to a publisher proxy
    #: (made at the first fanout, again in a forked child).
    _fanout_sender: FanoutSender | None = None

    def _publisher(self) -> FanoutSender:
        ctx = self._context()
        sender = self._fanout_sender
        if sender is None or sender.ctx is not ctx:
            with self._lock:
                sender = self._fanout_sender
                if sender is None or sender.ctx is not ctx:
                    sender = FanoutSender(self.handler, ctx,
                                          self._linger_ms, self.lookup,
                                          curve=self._curve)
                    self._fanout_sender = sender
        return sender

    def subscriber(self, key: str, on_message: Any, what: str) -> Subscriber:
        """A SUB socket for the fanouts of registry ``key`` (``use_pub_sub``):
        to the ``subscribe_on`` endpoints when set, else to every publisher
        proxy the matchmaker lists."""
        fixed = None
        listed = None
        if self.zconf.subscribe_on:
            try:
                fixed = parse_subscribe_on(self.zconf.subscribe_on)
            except ValueError as exc:
                raise ZmqConfigurationError("[%s] %s" % (options.GROUP, exc)) \
                    from None
        else:
            listed = publishers(self.lookup, self.handler.Lock())
        return Subscriber(self.handler, self._context(), key, on_message,
                          what, listed, fixed, curve=self._curve)

    def _fanout(self, key: str, parts: list, what: str) -> None:
        if self.zconf.use_pub_sub and \
                self._publisher().send(key, parts, ATTEMPT_WAIT, what):
            return  # one message to one publisher proxy
        out = self._out()
        for member in self.lookup.members(key, fresh=True):
            try:
                taken = out.send(member, parts, ATTEMPT_WAIT)
            except CURVE_REFUSALS as exc:
                LOG.warning("%s: %s misses the fanout message: %s",
                            what, member, exc)
                continue
            if not taken:
                LOG.warning("%s: %s did not take the fanout message; "
                            "it misses it", what, member)

    def _reply_waiter(self) -> ReplyWaiter:
        self._context()
        if self._replies is None:
            with self._lock:
                if self._replies is None:
                    self._replies = ReplyWaiter(self)
        return self._replies

    def send_reply(self, reply_to: str, msg_id: str, response: list,
                   more: bool | None) -> None:
        """Push one ``-process_reply`` to a caller, as one part when its
        call id says that it unpacks; never raises (logs)."""
        try:
            body = wire.reply_body(msg_id, response, more)
            parts = self._encode(msg_id, wire.reply_topic(reply_to), {}, body)
            out = self._out()
            direct = self._direct
            if direct is not None and caller_unpacks(msg_id):
                taken = direct.send(reply_to, parts, ATTEMPT_WAIT * 5, True)
            else:
                taken = out.send(reply_to, parts, ATTEMPT_WAIT * 5)
            if not taken:
                LOG.warning("reply to %s for %s dropped: the caller did not "
                            "take it", reply_to, msg_id)
        except Exception:
            LOG.exception("reply to %s for %s dropped", reply_to, msg_id)

    def request_taken(self) -> int:
        """A request goes to oslo.messaging's executor: its number, to give
        ``request_done`` once it is answered (negative when others were
        being served as it came); 0 when not counted."""
        if not self._hand_over:
            return 0
        with self._serving_lock:
            self._serving += 1
            self._taken += 1
            return self._taken if self._serving == 1 else -self._taken

    def request_done(self, number: int) -> bool:
        """Request ``number`` (of ``request_taken``) was answered; True
        when it was served alone: no other request of this transport was
        being served when it came, or came while it ran (see
        ``zmqio.hand_over``)."""
        with self._serving_lock:
            self._serving = max(0, self._serving - 1)
            return self._serving == 0 and self._taken == number > 0

    @property
    def serving(self) -> int:
        """Requests handed to oslo.messaging and not yet answered (counted
        only where ``zmqio.hand_over`` is used)."""
        return self._serving

    def send_notification(self, target: Any, ctxt: Any, message: dict,
                          version: float, retry: int | None = None) -> None:
        if self._ring is not None:
            self._ring.send_notification(target, ctxt, message, version,
                                         retry)
            return
        exchange = target.exchange or self._default_exchange
        key = notify_key(exchange, target.topic)
        wire_topic = wire.notification_topic(target.topic)
        parts = self._encode(None, wire_topic, ctxt, message,
                             envelope=version >= 2.0, notification=True)
        out = self._out()
        for pool, members in self.lookup.pools(key).items():
            for member in members:
                try:
                    if out.send(member, parts, ATTEMPT_WAIT):
                        break
                except CURVE_REFUSALS as exc:
                    LOG.warning("notification to %s: %s", key, exc)
                self.lookup.suspect(member)
            else:
                LOG.warning("notification to %s (pool %r) dropped: no "
                            "listener took it", key, pool or None)

    # -- listening ---------------------------------------------------------

    def listen(self, target: Any, batch_size: int, batch_timeout: Any) -> Any:
        if self._ring is not None:
            return self._ring.listen(target, batch_size, batch_timeout)
        exchange = target.exchange or self._default_exchange
        topic, server = target.topic, target.server
        try:
            topics = {topic, wire.directed_topic(topic, server),
                      wire.fanout_topic(topic)}
        except errors.LocalError as exc:
            raise oslo_messaging.InvalidTarget(str(exc), target) from None
        listener = QueueListener(
            self, topics, [rpc_key(exchange, topic),
                           rpc_key(exchange, topic, server)],
            notifications=False, what="RPC server %s" % target,
            subscription=rpc_key(exchange, topic)
            if self.zconf.use_pub_sub else None)
        return adapt(listener, batch_size, batch_timeout)

    def listen_for_notifications(self, targets_and_priorities: Any,
                                 pool: str | None, batch_size: int,
                                 batch_timeout: Any) -> Any:
        if self._ring is not None:
            return self._ring.listen_for_notifications(
                targets_and_priorities, pool, batch_size, batch_timeout)
        topics, keys = set(), []
        for target, priority in targets_and_priorities:
            exchange = target.exchange or self._default_exchange
            name = "%s.%s" % (target.topic, priority)
            topics.add(wire.notification_topic(name))
            keys.append(notify_key(exchange, name))
        listener = QueueListener(self, topics, keys, notifications=True,
                                 what="notification listener (pool %r)"
                                 % (pool,), pool=pool or "")
        return adapt(listener, batch_size, batch_timeout)

    def cleanup(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._ring is not None:
            self._ring.cleanup()
        self._stop_refresh.set()
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener.cleanup()
        if self._refresher is not None:
            self.handler.join(self._refresher, 5.0)
        if self._replies is not None:
            self._replies.close()
        if self._outbound is not None:
            self._outbound.close()
        if self._fanout_sender is not None:
            self._fanout_sender.close()
        if self._curve is not None:
            self._curve.close()
        self.registry.close()
        if self._ctx is not None and self._pid == os.getpid():
            zmqio.term_context(self._ctx, self.handler, 5.0)
