"""The receiver: the only TCP listener of a host.

It reads every inbound message on ``tcp://<bind>:<rpc_zmq_port>``, checks it
as hostile input (``wire.decode`` with the configured limits), and forwards
the frames unchanged to ``ipc://<rpc_zmq_ipc_dir>/zmq_topic_<topic>``:
a PUSH socket for directed topics (one consumer process gets each message),
an XPUB socket for ``fanout~...`` and ``zmq_replies...`` (every subscriber).

One native thread runs one poll loop; nothing blocks on a slow consumer:
a message that cannot be handed over at once waits in its topic's backlog
and goes out when the socket can take it (POLLOUT). The XPUB sockets are set
to ``XPUB_NODROP``, so a burst waits in the backlog instead of being dropped
at the high-water mark; when the total backlog passes ``PAUSE_INPUT_AT`` the
loop stops reading TCP until it drains, so TCP flow control slows the
senders rather than the receiver losing messages or memory.

A topic socket bound a moment ago has no subscriber yet (ZeroMQ's slow
joiner): messages for a *new* publish topic are held for ``JOIN_GRACE``
seconds so that consumers that were waiting for the path can connect.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from nova_rpc_zmq import frames as frames_io
from nova_rpc_zmq import netaddr, wire
from nova_rpc_zmq.concurrency import new_context
from nova_rpc_zmq.errors import ConfigurationError, RemoteProtocolError
from nova_rpc_zmq.metrics import Counters

LOG = logging.getLogger(__name__)

#: Longest path an ``ipc://`` endpoint may have (sun_path minus the NUL).
IPC_PATH_MAX = 107
#: Seconds a new publish topic holds its messages for subscribers to join.
JOIN_GRACE = 0.2
#: Total backlogged messages at which TCP input pauses (and resumes at half).
PAUSE_INPUT_AT = 20000
#: Milliseconds an idle receiver waits in one receive (stop() is seen then).
IDLE_WAIT_MS = 200
#: Most messages read from TCP per poll round (fairness with the outputs).
BATCH = 256
#: Upper bound on distinct topic sockets, so a hostile peer cannot exhaust fds.
MAX_TOPICS = 10000
#: High-water mark of the topic sockets (messages per consumer pipe).
TOPIC_HWM = 10000
#: Milliseconds a closing socket may keep trying to deliver.
LINGER_MS = 1000
#: Milliseconds a TCP peer has to complete the ZMTP (and CURVE) handshake.
HANDSHAKE_MS = 5000


class ReceiverError(ConfigurationError):
    """The receiver cannot start; the message says what and how to fix it."""


@dataclass
class _Topic:
    """One outbound IPC socket and the messages it could not take yet."""

    name: str
    kind: str
    sock: Any
    backlog: collections.deque = field(default_factory=collections.deque)
    hold_until: float = 0.0


def ipc_path(ipc_dir: str, topic: str) -> str:
    """The file path behind ``ipc://<dir>/zmq_topic_<topic>``."""
    return os.path.join(ipc_dir, "zmq_topic_" + topic)


def prepare_ipc_dir(ipc_dir: str) -> None:
    """Create the IPC directory (0750) if missing and check it is usable.

    Raises ReceiverError naming the directory and the fix.
    """
    # checked first, so that a refused directory is not left behind
    longest = len(ipc_path(ipc_dir, "zmq_replies.")) + 20
    if longest > IPC_PATH_MAX:
        raise ReceiverError(
            "rpc_zmq_ipc_dir %s is too long (%d bytes) for ipc:// socket paths "
            "(at most %d bytes in all): choose a shorter directory such as "
            "/var/run/openstack" % (ipc_dir, len(ipc_dir), IPC_PATH_MAX))
    if not os.path.isdir(ipc_dir):
        try:
            os.makedirs(ipc_dir, mode=0o750, exist_ok=True)
            # makedirs' mode is masked by the umask (077 would lock the
            # services' group out): set it as documented
            os.chmod(ipc_dir, 0o750)
        except OSError as exc:
            raise ReceiverError(
                "cannot create rpc_zmq_ipc_dir %s (%s): create it with mode "
                "0750 for the user running the services, or point "
                "rpc_zmq_ipc_dir at a writable directory"
                % (ipc_dir, exc.strerror)) from exc
    if not os.access(ipc_dir, os.W_OK | os.X_OK):
        raise ReceiverError(
            "rpc_zmq_ipc_dir %s is not writable by uid %d: chown it to the "
            "user running the receiver and the services, mode 0750"
            % (ipc_dir, os.getuid()))


class Receiver:
    """The per-host routing daemon. ``start()`` then ``run()``; ``stop()``
    from any thread or a signal handler ends ``run()`` within ~0.2 s."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.ipc_dir = settings.rpc_zmq_ipc_dir
        self.limits = settings.limits
        self.backlog_limit = settings.rpc_zmq_topic_backlog
        self.counters = Counters("receiver")
        self.ctx: zmq.Context | None = None
        self.inbound: zmq.Socket | None = None
        self.topics: dict[str, _Topic] = {}
        self.waiting: dict[str, _Topic] = {}  # topics with a backlog
        self.backlogged = 0
        self.paused = False
        self._stopping = False
        self._peer_frame: Any = None
        self.curve = bool(getattr(settings, "rpc_zmq_curve", False))
        self.authenticator: Any = None
        self.servicegroup: Any = None
        self.endpoint = ""

    # -- start-up ---------------------------------------------------------
    def start(self) -> None:
        """Check the IPC directory, bind TCP. Raises ReceiverError."""
        prepare_ipc_dir(self.ipc_dir)
        bind = netaddr.resolve_bind_address(self.settings.rpc_zmq_bind_address)
        self.endpoint = netaddr.tcp_endpoint(bind, self.settings.rpc_zmq_port)
        keypair = None
        if self.curve:
            from nova_rpc_zmq.security import KeyPair
            keypair = KeyPair.from_settings(self.settings)  # ConfigurationError
        self.ctx = new_context(zmq.Context, self.settings.rpc_zmq_contexts,
                               self.settings.rpc_zmq_io_batch)
        if self.curve:
            # ZAP must answer before the first peer connects: without a
            # handler a CURVE server lets every key in.
            from nova_rpc_zmq.security import ZapAuthenticator
            self.authenticator = ZapAuthenticator.from_settings(self.ctx,
                                                                self.settings)
            self.authenticator.start()
        sock = self.ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.limits.max_msg_size)
        sock.setsockopt(zmq.RCVHWM, TOPIC_HWM)
        # a peer that does not finish the ZMTP handshake is cut off soon
        sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_MS)
        sock.setsockopt(zmq.RCVTIMEO, IDLE_WAIT_MS)
        if ":" in bind:
            sock.setsockopt(zmq.IPV6, 1)
        if keypair is not None:
            from nova_rpc_zmq.security import configure_server
            configure_server(sock, keypair)
            self.authenticator.watch_server(sock)
        try:
            sock.bind(self.endpoint)
        except zmq.ZMQError as exc:
            sock.close(0)
            self._close_context()
            if exc.errno == errno.EADDRINUSE:
                raise ReceiverError(
                    "port %d is in use on %s: another nova-rpc-zmq-receiver "
                    "(or another program) is already listening; stop it, or "
                    "set rpc_zmq_port to a free port in the reserved range"
                    % (self.settings.rpc_zmq_port, bind)) from exc
            raise ReceiverError(
                "cannot listen on %s: %s; check rpc_zmq_bind_address and "
                "rpc_zmq_port" % (self.endpoint, exc)) from exc
        self.inbound = sock
        LOG.info("receiver listening on %s, routing to %s", self.endpoint,
                 self.ipc_dir)
        if getattr(self.settings, "servicegroup_enabled", False):
            self._join_servicegroup()

    def _join_servicegroup(self) -> None:
        """Senders skip hosts whose receiver is down: be seen alive."""
        from nova_rpc_zmq.concurrency import get_handler
        from nova_rpc_zmq.servicegroup import API
        try:
            self.servicegroup = API(self.settings,
                                    handler=get_handler("threading"))
            self.servicegroup.join(self.settings.rpc_zmq_host,
                                   self.settings.rpc_zmq_receiver_group,
                                   {"endpoint": self.endpoint})
        except Exception:
            self.inbound.close(0)
            self.inbound = None
            self._close_context()
            raise

    def _close_context(self) -> None:
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None
        if self.ctx is not None:
            self.ctx.term()
            self.ctx = None

    # -- topic sockets ----------------------------------------------------
    def _topic_socket(self, name: str, kind: str,
                      frames: Any = None) -> _Topic | None:
        """The topic's socket, made on first use; None (dropped, logged with
        the sender from ``frames``) when it cannot be made."""
        topic = self.topics.get(name)
        if topic is not None:
            return topic
        if len(self.topics) >= MAX_TOPICS:
            self._drop("too_many_topics", name, frames,
                       "%d topic sockets open" % MAX_TOPICS)
            return None
        path = ipc_path(self.ipc_dir, name)
        if len(path) > IPC_PATH_MAX:
            self._drop("topic_too_long_for_ipc", name, frames,
                       "ipc path would be %d bytes" % len(path))
            return None
        assert self.ctx is not None
        sock = self.ctx.socket(zmq.XPUB if kind == "pub" else zmq.PUSH)
        sock.setsockopt(zmq.LINGER, LINGER_MS)
        sock.setsockopt(zmq.SNDHWM, TOPIC_HWM)
        hold = 0.0
        if kind == "pub":
            sock.setsockopt(zmq.XPUB_NODROP, 1)
            hold = time.monotonic() + JOIN_GRACE
        try:
            if os.path.exists(path):
                os.unlink(path)  # a stale file left by a killed receiver
            sock.bind("ipc://" + path)
        except (OSError, zmq.ZMQError) as exc:
            sock.close(0)
            self._drop("ipc_bind_failed", name, frames, str(exc))
            return None
        topic = _Topic(name, kind, sock, hold_until=hold)
        self.topics[name] = topic
        self.counters.incr("topics_created")
        LOG.debug("created %s socket for topic %s", kind, name)
        return topic

    # -- the loop ---------------------------------------------------------
    def _drop(self, reason: str, topic: str | None, frames: Any,
              detail: str = "") -> None:
        self.counters.incr("dropped." + reason)
        peer = "?"
        if frames is not None and self._peer_frame is not None:
            try:
                peer = self._peer_frame.get("Peer-Address")
            except (AttributeError, zmq.ZMQError):
                pass
        LOG.warning("dropped a message from %s (topic %r): %s%s", peer,
                    topic, reason, " (%s)" % detail if detail else "")

    def _accept(self, frames: list) -> None:
        """Check one inbound message and hand it to its topic socket."""
        self.counters.incr("received")
        try:
            msg = wire.decode(frames, self.limits)
        except RemoteProtocolError as exc:
            topic = None
            if len(frames) > 1 and len(frames[1]) <= 300:
                topic = frames[1].decode("utf-8", "replace")
            self._drop(exc.reason, topic, frames, exc.detail)
            return
        name, kind = wire.route(msg.topic)
        topic = self._topic_socket(name, kind, frames)
        if topic is None:
            return
        if topic.backlog or topic.hold_until:
            self._enqueue(topic, frames)
            return
        try:
            frames_io.send(topic.sock, frames, frames_io.NOBLOCK)
        except zmq.Again:
            self._enqueue(topic, frames)
        else:
            self.counters.incr("forwarded")

    def _enqueue(self, topic: _Topic, frames: list) -> None:
        limit = self.backlog_limit
        if limit is not None and len(topic.backlog) >= limit:
            self._drop("backlog_full", topic.name, frames,
                       "rpc_zmq_topic_backlog = %d" % limit)
            return
        topic.backlog.append(frames)
        self.waiting[topic.name] = topic
        self.backlogged += 1
        if not self.paused and self.backlogged >= PAUSE_INPUT_AT:
            self.paused = True
            self.counters.incr("input_paused")
            LOG.info("backlog at %d messages: pausing TCP input",
                     self.backlogged)

    def _flush(self, topic: _Topic, now: float) -> None:
        if topic.hold_until:
            if now < topic.hold_until:
                return
            topic.hold_until = 0.0
        sent = 0
        backlog = topic.backlog
        try:
            while backlog:
                frames_io.send(topic.sock, backlog[0], frames_io.NOBLOCK)
                backlog.popleft()
                sent += 1
        except zmq.Again:
            pass
        if not backlog:
            self.waiting.pop(topic.name, None)
        if sent:
            self.backlogged -= sent
            self.counters.incr("forwarded", sent)
            if self.paused and self.backlogged <= PAUSE_INPUT_AT // 2:
                self.paused = False
                LOG.info("backlog drained to %d: resuming TCP input",
                         self.backlogged)

    def _subscribed(self, topic: _Topic) -> None:
        """A subscriber joined a held publish topic: release its backlog."""
        try:
            while True:
                topic.sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            pass
        topic.hold_until = 0.0

    def metrics(self) -> str:
        """Counters as text: routing, and CURVE refusals when on."""
        text = self.counters.render()
        auth = self.authenticator
        if auth is not None:
            lines = ["receiver.curve.accepted %d" % auth.accepted]
            for reason, n in sorted(auth.refused.items()):
                lines.append("receiver.curve.refused.%s %d"
                             % (reason.replace(" ", "_"), n))
            text += "\n".join(lines) + "\n"
        return text

    def stop(self) -> None:
        """Ask ``run()`` to return; safe from signal handlers and threads."""
        self._stopping = True

    def run(self) -> None:
        """Route until ``stop()``; then close every socket."""
        assert self.inbound is not None
        inbound = self.inbound
        poller = zmq.Poller()
        polled: dict[Any, int] = {}
        idle = {inbound: zmq.POLLIN}
        try:
            while not self._stopping:
                if not self.waiting and not self.paused:
                    # the common case, kept short: nothing waits to go out
                    if polled != idle:
                        for sock in list(polled):
                            poller.unregister(sock)
                        poller.register(inbound, zmq.POLLIN)
                        polled = dict(idle)
                    # read first: under load a message is usually there
                    # already; when none is, wait in a blocking receive
                    # (RCVTIMEO, so stop() is seen), cheaper than a poll
                    if not self._read_batch(inbound):
                        self._read_batch(inbound, block=True)
                    continue
                now = time.monotonic()
                # only the topics with a backlog: the loop's cost must not
                # grow with the number of topics
                waiting = list(self.waiting.values())
                timeout = 200.0
                want: dict[Any, int] = {}
                if not self.paused:
                    want[inbound] = zmq.POLLIN
                for t in waiting:
                    if t.hold_until:
                        # a subscription arriving ends the hold early
                        want[t.sock] = zmq.POLLIN
                        timeout = min(timeout, max(0.0, (t.hold_until - now) * 1000))
                    else:
                        want[t.sock] = zmq.POLLOUT
                for sock in list(polled):
                    if sock not in want:
                        poller.unregister(sock)
                        del polled[sock]
                for sock, ev in want.items():
                    if polled.get(sock) != ev:
                        poller.register(sock, ev)
                        polled[sock] = ev
                try:
                    events = dict(poller.poll(timeout))
                except zmq.ZMQError as exc:
                    if exc.errno == errno.EINTR:
                        continue
                    raise
                if events.get(inbound):
                    self._read_batch(inbound)
                now = time.monotonic()
                for t in waiting:
                    ev = events.get(t.sock, 0)
                    if t.hold_until and ev & zmq.POLLIN:
                        self._subscribed(t)
                    if t.hold_until or ev:
                        self._flush(t, now)
        finally:
            self._shutdown()

    def _read_batch(self, inbound: zmq.Socket, block: bool = False) -> int:
        """Route up to BATCH waiting messages; returns how many were read.
        ``block``: wait for the first (at most IDLE_WAIT_MS)."""
        nonblock = frames_io.NOBLOCK
        flags = 0 if block else nonblock
        recv_first, recv_rest = frames_io.recv_first, frames_io.recv_rest
        max_parts = self.limits.max_frames + 1
        again = zmq.Again
        for n in range(BATCH):
            try:
                # the first part as a Frame keeps the peer's address for
                # the log of a drop; the rest as bytes (cheapest for small)
                first = recv_first(inbound, flags)
            except again:
                return n
            flags = nonblock
            frames = [first.bytes]
            if first.more and recv_rest(inbound, frames, max_parts):
                # too many parts: decode sees one more than the limit
                frames.append(b"")
            self._peer_frame = first
            try:
                self._accept(frames)
            except Exception:  # noqa: BLE001 - one message must not kill the loop
                self.counters.incr("dropped.internal_error")
                LOG.exception("internal error routing a message; dropped it")
            if self.paused:
                return n + 1
        return BATCH

    def _shutdown(self) -> None:
        lost = sum(len(t.backlog) for t in self.topics.values())
        if lost:
            LOG.warning("stopping with %d undelivered messages in backlogs",
                        lost)
        if self.inbound is not None:
            self.inbound.close(0)
            self.inbound = None
        for t in self.topics.values():
            t.sock.close(0 if t.backlog else LINGER_MS)
        self.topics.clear()
        self.waiting.clear()
        if self.servicegroup is not None:
            self.servicegroup.stop(leave=True)  # an orderly stop: seen at once
            self.servicegroup = None
        self._close_context()
        LOG.info("receiver stopped")
