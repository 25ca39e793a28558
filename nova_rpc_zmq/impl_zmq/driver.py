"""The ZeroMQ driver: one ``Driver`` per process holds the context, the
socket cache, the matchmaker, the reply listener and the worker pool.

Sending: ``matchmaker.queues(topic)`` -> ``(directed topic, host)`` pairs;
frames from ``wire.encode``; the host's cached PUSH socket, or, for a call
to this host, a local service's own socket when one takes it (``local``);
for a call to one of our nodes on another host, the service's own TCP
socket once its port is known (``remote``).
A call is the old curried ``-reply`` cast; the server answers with
``-process_reply`` casts to ``zmq_replies.<caller host>``, one per value
when the caller said it accepts streaming (frame 0 =
``wire.CALLER_STREAMS``), else one holding the whole list, exactly as old
callers expect.
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import TYPE_CHECKING, Any, Iterator

from nova_rpc_zmq import codec, wire, zmqio
from nova_rpc_zmq.concurrency import Handler, get_handler
from nova_rpc_zmq.errors import NoHostsError, RPCException, Timeout
from nova_rpc_zmq.impl_zmq import routes
from nova_rpc_zmq.impl_zmq.local import LocalCalls
from nova_rpc_zmq.impl_zmq.remote import RemoteCalls, RemoteReplies, port_range
from nova_rpc_zmq.impl_zmq.replies import REFUSED, DirectReplies, ReplyWaiter
from nova_rpc_zmq.impl_zmq.sockets import LINGER_MS, Outbound
from nova_rpc_zmq.ipcdir import direct_reply_path, ipc_path
from nova_rpc_zmq.metrics import Counters
from nova_rpc_zmq.runner import FAILURE, LAST, VALUE, run_request

if TYPE_CHECKING:
    from nova_rpc_zmq.config import Settings

LOG = logging.getLogger(__name__)

#: Seconds ``cleanup()`` may take: queued casts flush (the sockets' linger)
#: and the context ends, even while a method still runs.
CLOSE_TIMEOUT = LINGER_MS / 1000.0 + 3.0
#: Streamed reply parts a call keeps while an earlier one is still on its way.
MAX_EARLY_PARTS = 10000


def context_dict(context: Any) -> dict:
    """The JSON-able dict of a request context (object, dict or None)."""
    if context is None:
        return {}
    if isinstance(context, dict):
        return context
    to_dict = getattr(context, "to_dict", None)
    if to_dict is None:
        raise TypeError("context %r has no to_dict(): pass a "
                        "CommonRpcContext, a dict or None" % (context,))
    return to_dict()


class Driver:
    """Everything one process needs to send and receive. Fork-aware:
    ``get_driver`` makes a new one in a child process."""

    def __init__(self, settings: Settings, handler: Handler | None = None,
                 matchmaker: Any = None) -> None:
        self.settings = settings
        self.handler = handler = handler or get_handler()
        self.pid = os.getpid()
        self.closed = False
        self.counters = counters = Counters("driver")
        self.ctx = ctx = zmqio.context(handler, settings.rpc_zmq_contexts,
                                       batch=settings.rpc_zmq_io_batch)
        self.servicegroup: Any = None
        self.liveness: Any = None
        if settings.servicegroup_enabled:
            self._start_liveness()
        if matchmaker is None:
            from nova_rpc_zmq.matchmaker import get_matchmaker
            matchmaker = get_matchmaker(settings, liveness=self.liveness)
        self.matchmaker = matchmaker
        self.security = self._client_security()
        self.outbound = Outbound(self.handler, self.ctx, settings,
                                 configure=self.security.configure
                                 if self.security else None)
        if self.security is not None:
            self.security.forget = self.outbound.forget
            self.security.reopen = self.outbound.reopen
            self.security.on_refusal = self._refused
        # which route a call and its reply take; a request's reply topic
        # comes from the network: answer known hosts only
        self.routes = routes.RoutePolicy.from_settings(settings, matchmaker)
        self.reply_policy = self.routes.reply_policy
        security = self.security
        self.replies = ReplyWaiter(
            handler, ctx, settings, self._send, counters,
            endpoint=self.outbound.endpoint,
            refusal=security.failure if security is not None else None)
        self.direct = DirectReplies(handler, ctx, settings.rpc_zmq_ipc_dir,
                                    counters)
        self.local: LocalCalls | None = None
        if settings.rpc_zmq_local_calls:
            self.local = LocalCalls(handler, ctx, settings.rpc_zmq_ipc_dir,
                                    counters)
        # calls to our nodes on other hosts, and their replies, skip the
        # receivers once the peer named its port (impl_zmq/remote.py)
        self.remote: RemoteCalls | None = None
        self.remote_replies: RemoteReplies | None = None
        self.direct_ports = ports = port_range(settings)
        #: CURVE on the direct path's sockets (``curve.DirectSecurity``)
        self.direct_security: Any = None
        if ports is not None:
            secure = None
            if security is not None and security.keypair is not None:
                from nova_rpc_zmq.impl_zmq.curve import DirectSecurity
                self.direct_security = DirectSecurity(settings, handler, ctx,
                                                      security)
                secure = self.direct_security.client
                self.replies.direct_serve = self.direct_security.serve
            self.routes.remote_calls = True
            self.replies.direct_ports = ports
            self.remote = RemoteCalls(
                handler, ctx, settings, counters, ports,
                send_receiver=self._send, endpoint=self.outbound.endpoint,
                token=self.replies.token,
                reply_port=self.replies.tcp_port, secure=secure)
            self.replies.on_where = self.remote.answered
            self.remote_replies = RemoteReplies(
                handler, ctx, settings, counters, ports,
                endpoint=self.outbound.endpoint,
                allows=self.reply_policy.allows, secure=secure)
        self.connections: list[Any] = []
        self._allowed_modules = list(settings.allowed_rpc_exception_modules)
        # opt-in GET /metrics of this process (rpc_zmq_metrics_port)
        from nova_rpc_zmq.impl_zmq import exporter
        #: a reader of each gauge of ``exporter.GAUGES``
        self.gauges: exporter.Gauges = {
            "calls_in_flight": lambda: self.replies.in_flight,
            "outbound_peers": lambda: self.outbound.peer_count,
            "connections": lambda: len(self.connections)}
        self.metrics_server = exporter.start(settings, handler, counters, self.gauges)

    # -- hooks for later layers ------------------------------------------
    def _start_liveness(self) -> None:
        """Join the ServiceGroup (consumers heartbeat their topics) and,
        with the ring matchmaker, route around hosts seen down. Raises
        ServiceGroupUnavailable naming the back end when it is away."""
        from nova_rpc_zmq.servicegroup import API, LivenessView
        self.servicegroup = API(self.settings, handler=self.handler)
        if self.settings.rpc_zmq_matchmaker == "ring":
            self.liveness = LivenessView.from_settings(
                self.servicegroup, self.settings, handler=self.handler)

    def _client_security(self) -> Any:
        from nova_rpc_zmq.impl_zmq.curve import ClientSecurity
        return ClientSecurity.from_settings(self.settings, self.handler)

    def joined_topic(self, bare_topic: str) -> None:
        """A consumer of ``bare_topic`` started in this process: with a
        ServiceGroup, this host joins the topic's group."""
        if self.servicegroup is not None:
            self.servicegroup.join(self.settings.rpc_zmq_host, bare_topic,
                                   {"pid": os.getpid()})

    def left_connection(self, conn: Any) -> None:
        if conn in self.connections:
            self.connections.remove(conn)

    # -- paths ------------------------------------------------------------
    def ipc_path(self, topic: str) -> str:
        """The receiver's socket file of ``topic`` on this host."""
        return ipc_path(self.settings.rpc_zmq_ipc_dir, topic)

    def direct_reply_path(self, token: str) -> str:
        """The reply socket a caller process binds for servers on its host."""
        return direct_reply_path(self.settings.rpc_zmq_ipc_dir, token)

    # -- sending ----------------------------------------------------------
    def _queues(self, topic: str) -> list[tuple[str, str]]:
        try:
            queues = self.matchmaker.queues(topic)
        except NoHostsError:
            self.counters.incr("no_host")
            LOG.error("no host for topic %s", topic)
            raise
        if not queues:
            self.counters.incr("no_host")
            raise NoHostsError(topic, getattr(self.matchmaker, "source",
                                              "the matchmaker"))
        return queues

    def _send(self, host: str, frames: list[bytes], topic: str) -> None:
        security = self.security
        if security is not None:
            security.check(host)
        self.outbound.send(host, frames, topic=topic)

    def cast(self, context: Any, topic: str, msg: dict,
             envelope: bool = False, msg_id: str | bytes = wire.NO_MSG_ID) -> None:
        """Send ``msg`` to one consumer of ``topic`` (all hosts for fanout)."""
        ctx = context_dict(context)
        errors = []
        for dtopic, host in self._queues(topic):
            frames = wire.encode(msg_id, dtopic, ctx, msg, envelope)
            self.counters.incr("casts")
            try:
                self._send(host, frames, dtopic)
            except RPCException as exc:
                # one dead host must not stop a fanout to the others
                self.counters.incr("send_failed")
                LOG.error("cast of %s to host %s failed: %s", dtopic, host, exc)
                errors.append(exc)
        if errors and not wire.is_fanout(topic):
            raise errors[0]

    def fanout_cast(self, context: Any, topic: str, msg: dict,
                    envelope: bool = False) -> None:
        self.cast(context, wire.fanout_topic(wire.bare_topic(topic)), msg,
                  envelope)

    def multicall(self, context: Any, topic: str, msg: dict,
                  timeout: float | None = None,
                  envelope: bool = False) -> Iterator[Any]:
        """Send a call now; return an iterator over each value as the
        server produces it, in the order it produced them (parts that took
        different paths are put back in order).

        Sending errors (NoHostsError, a full peer's Timeout) raise here;
        iterating raises Timeout when ``timeout`` (default
        ``rpc_response_timeout``) passes without the next value, or the
        remote exception rebuilt.
        """
        stream = self._stream(context, topic, msg, timeout, envelope)
        next(stream)  # sends; the values come with the iteration
        return stream

    def _stream(self, context: Any, topic: str, msg: dict,
                timeout: float | None, envelope: bool) -> Iterator[Any]:
        timeout = float(timeout or self.settings.rpc_response_timeout)
        ctx = context_dict(context)
        dtopic, host = self._queues(topic)[0]
        replies = self.replies
        replies.ensure_ready(timeout)
        msg_id = replies.new_msg_id()
        local, remote = self.local, self.remote
        route = self.routes.for_call(host)
        alone = route == routes.REMOTE and remote is not None and \
            not envelope and remote.takes_direct_calls(dtopic, host)
        if alone:
            # consumers of this version: the call alone, as the receivers'
            # form says it with the context twice and nested
            frames = wire.encode_direct_call(
                replies.caller_mark, dtopic, msg_id, replies.reply_topic, ctx,
                msg)
        else:
            frames = wire.encode_call(replies.caller_mark, dtopic, msg_id,
                                      replies.reply_topic, ctx, msg, envelope)
        queue = replies.register(msg_id, host)
        self.counters.incr("calls")
        empty = self.handler.Empty
        method = msg.get(wire.METHOD_KEY) if isinstance(msg, dict) else None
        try:
            if route == routes.LOCAL:
                sent = local is not None and local.send(dtopic, frames)
            elif route == routes.REMOTE:
                sent = remote is not None and remote.send(dtopic, host, frames)
            else:
                sent = False
            if not sent:
                if alone:
                    frames = wire.encode_call(
                        replies.caller_mark, dtopic, msg_id,
                        replies.reply_topic, ctx, msg)
                self._send(host, frames, dtopic)
            yield None  # sent: multicall() returns the iterator now
            expected = 0  # the next streamed part to hand out
            early: dict[int, tuple[list, Any]] = {}
            while True:
                try:
                    response, more, seq = self._wait(queue, host, timeout)
                except empty:
                    self.counters.incr("call_timeouts")
                    raise Timeout(info="no reply from host %s within %.1fs"
                                       % (host, timeout),
                                  topic=topic, method=method) from None
                parts = [(response, more)]
                if seq is not None:
                    if seq != expected:
                        # it overtook an earlier part on a faster path
                        if seq > expected and len(early) < MAX_EARLY_PARTS:
                            early[seq] = (response, more)
                        continue
                    expected += 1
                    while expected in early:
                        parts.append(early.pop(expected))
                        expected += 1
                for response, more in parts:
                    for value in response:
                        if isinstance(value, dict) and wire.EXC_KEY in value:
                            raise self.remote_exception(value[wire.EXC_KEY])
                        yield value
                    if not more:
                        return
        finally:
            replies.unregister(msg_id)

    def _wait(self, queue: Any, host: str, timeout: float) -> Any:
        """The next reply part; a refusal by ``host`` (CURVE keys, mechanism)
        ends the wait at once with its AuthenticationError."""
        first, second, seq = queue.get(timeout=timeout)
        if first is REFUSED:
            self.counters.incr("refused_by_peer")
            raise second
        return first, second, seq

    def _refused(self, host: str, error: Exception) -> None:
        """The handshake watcher saw ``host`` refuse us."""
        self.replies.refused(host, error)

    def call(self, context: Any, topic: str, msg: dict,
             timeout: float | None = None, envelope: bool = False) -> Any:
        """Send a call and return the last value the server produced."""
        result = None
        for result in self.multicall(context, topic, msg, timeout, envelope):
            pass
        return result

    def remote_exception(self, data: Any) -> BaseException:
        """The exception a server sent (``codec.deserialize_remote_exception``
        with ``allowed_rpc_exception_modules``); never raises."""
        return codec.deserialize_remote_exception(data, self._allowed_modules)

    # -- receiving --------------------------------------------------------
    def create_connection(self) -> Any:
        from nova_rpc_zmq.impl_zmq.consumer import Connection
        conn = Connection(self.handler, self.ctx, self.settings, self.counters,
                          send=self._send, process=self.process,
                          on_join=self.joined_topic,
                          on_close=self.left_connection,
                          direct_ports=self.direct_ports,
                          remote=self.remote_replies,
                          direct_serve=self.direct_security.serve
                          if self.direct_security is not None else None)
        self.connections.append(conn)
        return conn

    def process(self, proxy: Any, msg: wire.Message) -> None:
        """Run one received message (in a pool worker); never raises."""
        try:
            self._process(proxy, msg)
        except Exception:  # noqa: BLE001 - a bad message must not kill a worker
            self.counters.incr("consumer.failed")
            LOG.exception("failed to process a message on %s", msg.topic)

    def _process(self, proxy: Any, msg: wire.Message) -> None:
        ctx = codec.RpcContext(**msg.context)
        if msg.is_notification:  # decode lets them in on notification topics only
            self._notify(proxy, ctx, msg)
            return
        request = msg.call
        if request is not None:
            self._answer(proxy, ctx, msg, request)
            return
        method = msg.method
        if method.startswith("-"):
            self.counters.incr("consumer.dropped.internal_method")
            LOG.warning("dropped internal method %r sent to %s", method,
                        msg.topic)
            return
        if not run_request(proxy, ctx, msg.body, where=msg.topic):
            self.counters.incr("consumer.cast_failed")

    def _notify(self, proxy: Any, ctx: Any, msg: wire.Message) -> None:
        deliver = getattr(proxy, "deliver", None)
        if deliver is None:
            self.counters.incr("consumer.dropped.notification")
            LOG.warning("dropped a notification on %s: its consumer takes "
                        "no notifications", msg.topic)
            return
        try:
            deliver(ctx, msg.body)
        except Exception as exc:  # noqa: BLE001
            self.counters.incr("consumer.notification_failed")
            LOG.exception("notification %s on %s raised %s",
                          msg.body.get("event_type"), msg.topic, type(exc).__name__)

    def notify(self, context: Any, topic: str, msg: dict,
               envelope: bool = False) -> None:
        """Send notification ``msg`` (no ``method``) to one consumer of
        ``topic`` (``notifications.info`` goes to ``notifications-info``).
        Raises like ``cast``; LocalError for a body that is not a dict."""
        topic = wire.notification_topic(topic)
        ctx = context_dict(context)
        for dtopic, host in self._queues(topic):
            frames = wire.encode(wire.NO_MSG_ID, dtopic, ctx, msg, envelope,
                                 notification=True)
            self._send(host, frames, dtopic)

    def _answer(self, proxy: Any, ctx: Any, msg: wire.Message,
                request: wire.CallRequest) -> None:
        """Run a call request and send its replies by the route
        ``self.routes`` chooses (direct to the caller, or its receiver)."""
        route = self.routes.for_reply(msg.msg_id, request.reply_topic)
        if route.route == routes.REFUSE:
            self.counters.incr("consumer.dropped.unknown_reply_host")
            self.reply_policy.refused(request.reply_topic, msg.topic)
            return
        msg_id, reply_topic = request.msg_id, request.reply_topic
        token = route.token if route.route == routes.DIRECT else None
        remote_token = route.token if route.route == routes.REMOTE else None
        remote = self.remote_replies
        stream = route.stream
        ctx_dict = msg.context
        parts = itertools.count()

        def of_the_wire(response: list, more: bool | None,
                        seq: int | None) -> list:
            return wire.encode(msg_id, reply_topic, ctx_dict,
                               wire.reply_body(msg_id, response, more, seq))

        def send(response: list, more: bool | None) -> None:
            # streamed parts are numbered: one may go straight to the caller
            # and the next through the receivers when the direct queue is full
            seq = next(parts) if stream else None
            if remote_token is not None and remote is not None:
                # a caller of this version takes the reply alone: a third of
                # the encoding, and of its decoding, of a message of the wire
                alone = remote.takes_direct_replies(reply_topic, remote_token)
                frames = wire.encode_direct_reply(msg_id, response, more, seq) \
                    if alone else of_the_wire(response, more, seq)
                if remote.send(reply_topic, remote_token, frames):
                    return
                if alone:
                    frames = of_the_wire(response, more, seq)
            else:
                frames = of_the_wire(response, more, seq)
                if token is not None and self.direct.send(token, frames):
                    return
            for dtopic, host in self._queues(reply_topic):
                self._send(host, frames, dtopic)

        collected: list[Any] = []

        def emit(kind: str, payload: Any) -> None:
            if kind == VALUE:
                if stream:
                    send([payload], True)
                else:
                    collected.append(payload)
                return
            if kind == LAST:
                # a plain method's value and the end: one reply message
                if stream:
                    send([payload], False)
                else:
                    send(collected + [payload], None)
                return
            final = [{wire.EXC_KEY: payload}] if kind == FAILURE else []
            if stream:
                send(final, False)
            else:
                send(collected + final, None)

        run_request(proxy, ctx, request.msg, emit, where=msg.topic, last=True)

    # -- shutdown ---------------------------------------------------------
    def cleanup(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close consumers and the reply listener, flush queued casts
        (bounded linger) and end the context; returns within about
        ``timeout`` seconds even with methods still running (their answers
        are then dropped, logged). Idempotent."""
        if self.closed:
            return
        self.closed = True
        server = getattr(self, "metrics_server", None)
        if server is not None:
            server.stop()
        for conn in list(self.connections):
            conn.close()
        self.replies.close()
        self.direct.close()
        if self.local is not None:
            self.local.close()
        if self.remote is not None:
            self.remote.close()
        if self.remote_replies is not None:
            self.remote_replies.close()
        if self.security is not None:
            self.security.close()
        if self.direct_security is not None:
            self.direct_security.close()  # its sockets are closed
        self.outbound.close()
        if self.liveness is not None:
            self.liveness.close()
        if self.servicegroup is not None:
            # leave=False: other worker processes of this host may still
            # serve the same topics; a crash and an exit look alike
            self.servicegroup.stop(leave=False)
        zmqio.term_context(self.ctx, self.handler, timeout)
