"""The receiver: the only TCP listener of a host.

It reads every inbound message on ``tcp://<bind>:<rpc_zmq_port>``, checks it
as hostile input (``wire.decode`` with the configured limits), and forwards
the frames unchanged to ``ipc://<rpc_zmq_ipc_dir>/zmq_topic_<topic>``:
a PUSH socket for directed topics (one consumer process gets each message),
an XPUB socket for ``fanout~...`` and ``zmq_replies...`` (every subscriber).

One native thread runs one poll loop; nothing blocks on a slow consumer:
a message that cannot be handed over at once waits in its topic's backlog
and goes out when the socket can take it (POLLOUT). Every backlog is bounded
(``rpc_zmq_topic_backlog`` messages and ``rpc_zmq_topic_backlog_bytes``
bytes; all of them together at ``TOTAL_FACTOR`` times that): beyond it a
message is dropped and counted as ``dropped.no_consumer`` (no consumer ever
took a message of the topic) or ``dropped.backlog_full`` (its consumers are
too slow), and logged once per interval (``droplog``). TCP input is never
paused: one stuck topic must not silence the host's other topics.

The XPUB sockets are set to ``XPUB_NODROP``, so a fanout burst waits in the
backlog instead of being dropped at a subscriber's high-water mark. A
subscriber that takes nothing (stopped, hung) would then hold every other
one back: when a fanout backlog has not moved for ``FANOUT_STALL`` seconds,
or is full, the full subscribers are cut off (one send with XPUB_NODROP
off): the others get the backlog at once, and the cut-off one misses the
topic's messages until it has read its pipe down (counted in
``fanout_cut_off``, logged once per interval as ``subscriber_full``).

The loop notes when it last turned; the health page (``health.py``) says
503 when it has not for ``rpc_zmq_health_stuck_after`` seconds. ``drain()``
(SIGTERM) stops accepting, hands what the receiver holds to the local
consumers for at most ``rpc_zmq_drain_timeout`` seconds, then ends
``run()``; ``request_reload()`` (SIGHUP) runs ``on_reload`` (or ``reload()``)
in the loop's own thread at its next turn. A lock file in
``rpc_zmq_ipc_dir``, held while the receiver runs, keeps a second receiver
from taking over the first one's sockets.

A topic socket bound a moment ago has no subscriber yet (ZeroMQ's slow
joiner): messages for a *new* publish topic are held for ``JOIN_GRACE``
seconds so that consumers that were waiting for the path can connect.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import zmq

from nova_rpc_zmq import frames as frames_io
from nova_rpc_zmq import netaddr, wire
from nova_rpc_zmq.concurrency import new_context
from nova_rpc_zmq.errors import ConfigurationError, RemoteProtocolError
from nova_rpc_zmq.ipcdir import (  # noqa: F401 - also this module's names
    IPC_PATH_MAX, LOCK_NAME, IpcDirError, ipc_path, lock_ipc_dir, prepare_ipc_dir)
from nova_rpc_zmq.metrics import Counters
from nova_rpc_zmq.receiver.droplog import DropLog

LOG = logging.getLogger(__name__)

#: Seconds a new publish topic holds its messages for subscribers to join.
JOIN_GRACE = 0.2
#: All backlogs together hold at most this many times one topic's bounds.
TOTAL_FACTOR = 4
#: Seconds a fanout backlog may stay still before full subscribers are cut off.
FANOUT_STALL = 1.0
#: Reasons of drops caused by consumers or by this host's limits, not by the
#: message: logged as rate-limited summaries.
FLOW_REASONS = ("no_consumer", "backlog_full", "subscriber_full", "too_many_topics",
                "ipc_bind_failed")
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
#: The inbound socket's MAXMSGSIZE is this many times rpc_zmq_max_msg_size:
#: a frame over the limit but under this arrives and is dropped as
#: ``too_large`` (counted, logged with its peer); libzmq cuts the
#: connection of a larger one before the receiver sees it, and reports that
#: exactly like a peer that went away, so that one is not counted.
OVERSIZE_MARGIN = 2


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
    #: bytes of the messages in ``backlog``
    size: int = 0
    #: messages a consumer took (a PUSH send that succeeded)
    taken: int = 0
    #: XPUB only: distinct prefixes subscribed (read at a drop or a hold)
    subscriptions: int = 0
    #: when the backlog last moved (or began)
    moved: float = 0.0


class Receiver:
    """The per-host routing daemon. ``start()`` then ``run()``; ``stop()``
    from any thread or a signal handler ends ``run()`` within ~0.2 s."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.ipc_dir = settings.rpc_zmq_ipc_dir
        self.limits = settings.limits
        self.backlog_limit = settings.rpc_zmq_topic_backlog
        self.backlog_bytes_limit = settings.rpc_zmq_topic_backlog_bytes
        self.total_limit = TOTAL_FACTOR * self.backlog_limit
        self.total_bytes_limit = TOTAL_FACTOR * self.backlog_bytes_limit
        self.stuck_after = float(getattr(settings, "rpc_zmq_health_stuck_after", 1))
        self.drain_timeout = float(getattr(settings, "rpc_zmq_drain_timeout", 5))
        #: True from drain() on: the health page says DRAINING
        self.draining = False
        #: run in the loop's thread after request_reload(); default reload()
        self.on_reload: Callable[[], None] | None = None
        # set from signal handlers, acted on by the loop (one read per turn)
        self._signalled = False
        self._drain_requested = False
        self._reload_requested = False
        #: linger of the topic sockets at shutdown (drain: the time left)
        self._close_linger_ms: int | None = None
        self.counters = Counters("receiver")
        self.droplog = DropLog()
        self.ctx: zmq.Context | None = None
        self.inbound: zmq.Socket | None = None
        self.topics: dict[str, _Topic] = {}
        self.waiting: dict[str, _Topic] = {}  # topics with a backlog
        self.backlogged = 0
        self.backlogged_bytes = 0
        #: when the loop last turned (monotonic); read by the health thread
        self.turned = time.monotonic()
        self._lock_fd: int | None = None
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
        # not the limit itself: libzmq would cut the connection of a frame
        # over it before we see the message, and the drop would go uncounted
        # and unlogged; frames up to the margin reach _read_batch, which
        # drops and counts them (too_large); libzmq still bounds the memory
        sock.setsockopt(zmq.MAXMSGSIZE,
                        self.limits.max_msg_size * OVERSIZE_MARGIN)
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
        try:
            # after the bind, so that a second receiver on the same conf is
            # told about the port; before any topic socket is touched
            self._lock_fd = lock_ipc_dir(self.ipc_dir)
        except ReceiverError:
            sock.close(0)
            self._close_context()
            raise
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
            self._unlock()
            raise

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

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
        try:
            sock = self.ctx.socket(zmq.XPUB if kind == "pub" else zmq.PUSH)
        except zmq.ZMQError as exc:
            # out of descriptors or at the context's socket cap: this
            # topic waits for one to close; every other topic still routes
            self._drop("too_many_topics", name, frames,
                       "no socket for a new topic (%s, %d topics open); raise "
                       "the receiver's open-files limit (LimitNOFILE)"
                       % (exc, len(self.topics)))
            return None
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
    def _peer(self, frames: Any) -> str:
        if frames is not None and self._peer_frame is not None:
            try:
                return self._peer_frame.get("Peer-Address")
            except (AttributeError, zmq.ZMQError):
                pass
        return "?"

    def _drop(self, reason: str, topic: str | None, frames: Any,
              detail: str = "") -> None:
        """Count and log one dropped message: every reason, hostile input
        as well as ``FLOW_REASONS``, is logged as summaries (``droplog``),
        never one line each, so a flood cannot flood the log."""
        self.counters.incr("dropped." + reason)
        self.droplog.record(reason, topic, self._peer(frames), detail,
                            time.monotonic())

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
            topic.taken += 1
            self.counters.incr("forwarded")

    def _enqueue(self, topic: _Topic, frames: list) -> None:
        """Put a message in its topic's backlog, or drop it (counted) when a
        bound is reached; a full fanout backlog cuts off full subscribers."""
        size = 0
        for part in frames:
            size += len(part)
        full = ""
        if len(topic.backlog) >= self.backlog_limit:
            full = "rpc_zmq_topic_backlog = %d messages" % self.backlog_limit
        elif topic.size + size > self.backlog_bytes_limit:
            full = ("rpc_zmq_topic_backlog_bytes = %d bytes"
                    % self.backlog_bytes_limit)
        elif self.backlogged >= self.total_limit:
            full = "all topics hold %d messages" % self.backlogged
        elif self.backlogged_bytes + size > self.total_bytes_limit:
            full = "all topics hold %d bytes" % self.backlogged_bytes
        if full and topic.kind == "pub" and not topic.hold_until \
                and topic.backlog and self._cut_off(topic, full):
            # the others took the backlog: try again
            self._flush(topic, time.monotonic())
            if not topic.backlog:
                try:
                    frames_io.send(topic.sock, frames, frames_io.NOBLOCK)
                except zmq.Again:
                    pass
                else:
                    topic.taken += 1
                    self.counters.incr("forwarded")
                    return
            full = ""
        if full:
            self._drop(self._full_reason(topic), topic.name, frames, full)
            return
        if not topic.backlog:
            topic.moved = time.monotonic()
        topic.backlog.append(frames)
        topic.size += size
        self.waiting[topic.name] = topic
        self.backlogged += 1
        self.backlogged_bytes += size

    def _full_reason(self, topic: _Topic) -> str:
        """``no_consumer`` or ``backlog_full`` for a message that does not
        fit in ``topic``'s backlog."""
        if topic.kind == "pub":
            self._read_subscriptions(topic)
            return "backlog_full" if topic.subscriptions > 0 else "no_consumer"
        # a PUSH socket cannot tell its peers; a topic no consumer ever
        # took a message of has none (a stopped host, a name mismatch)
        return "backlog_full" if topic.taken else "no_consumer"

    def _read_subscriptions(self, topic: _Topic) -> bool:
        """Apply the XPUB's pending (un)subscriptions; True when one came."""
        came = False
        try:
            while True:
                event = topic.sock.recv(zmq.NOBLOCK)
                # without XPUB_VERBOSE: the first subscription and the last
                # unsubscription of each prefix
                if event[:1] == b"\x01":
                    topic.subscriptions += 1
                    came = True
                elif event[:1] == b"\x00":
                    topic.subscriptions = max(0, topic.subscriptions - 1)
        except zmq.Again:
            pass
        return came

    def _release(self, topic: _Topic, frames: list) -> None:
        """Account for a message leaving ``topic``'s backlog."""
        size = 0
        for part in frames:
            size += len(part)
        topic.size -= size
        self.backlogged -= 1
        self.backlogged_bytes -= size

    def _cut_off(self, topic: _Topic, why: str) -> bool:
        """Send the head of a fanout backlog to every subscriber with room,
        cutting off the full ones; True when it went out.

        With XPUB_NODROP off for one send, libzmq skips the full pipes and
        stops writing to them until their subscriber has read its pipe
        down: from then on the others get every message at once, and the
        cut-off subscriber misses the topic's messages (libzmq does not say
        how many) until it reads again.
        """
        sock = topic.sock
        frames = topic.backlog[0]
        sock.setsockopt(zmq.XPUB_NODROP, 0)
        try:
            frames_io.send(sock, frames, frames_io.NOBLOCK)
        except zmq.Again:
            return False
        finally:
            sock.setsockopt(zmq.XPUB_NODROP, 1)
        self._release(topic, topic.backlog.popleft())
        topic.moved = time.monotonic()
        topic.taken += 1
        self.counters.incr("forwarded")
        self.counters.incr("fanout_cut_off")
        self.droplog.record("subscriber_full", topic.name, "-", why
                            + "; a subscriber that took nothing is cut off "
                            "from this fanout until it reads again",
                            time.monotonic())
        return True

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
                self._release(topic, backlog.popleft())
                sent += 1
        except zmq.Again:
            if not sent and topic.kind == "pub" \
                    and now - topic.moved >= FANOUT_STALL \
                    and self._cut_off(topic, "nothing went out for %.1f s"
                                      % (now - topic.moved)):
                self._flush(topic, now)
                return
        if sent:
            topic.moved = now
            topic.taken += sent
            self.counters.incr("forwarded", sent)
        if not backlog:
            self.waiting.pop(topic.name, None)

    def _subscribed(self, topic: _Topic) -> None:
        """A subscriber joined a held publish topic: release its backlog."""
        if self._read_subscriptions(topic):
            topic.hold_until = 0.0

    def stuck(self) -> str | None:
        """Why the receiver is not routing (for the health page), or None.

        Thread-safe: reads attributes the loop writes. The health page uses
        ``health.ReceiverHealth``, which adds the drain file and ZAP.
        """
        if self.draining:
            return "DRAINING"
        if self._stopping:
            return "STOPPING"
        idle = time.monotonic() - self.turned
        if idle > self.stuck_after:
            return ("STUCK: the routing loop has not turned for %.1f s "
                    "(rpc_zmq_health_stuck_after = %g)" % (idle, self.stuck_after))
        return None

    def metrics(self) -> str:
        """``GET /metrics``: the Prometheus text format 0.0.4
        (``exposition``). Thread-safe: reads, never locks the loop."""
        from nova_rpc_zmq.receiver import exposition
        return exposition.render(self)

    def stop(self) -> None:
        """Ask ``run()`` to return at once, dropping what the backlogs hold
        (a drain in progress is cut short); safe from signal handlers and
        threads."""
        self._stopping = True

    def drain(self) -> None:
        """Ask ``run()`` to stop accepting, hand what it holds to the local
        consumers for at most ``rpc_zmq_drain_timeout`` seconds, then
        return. Safe from signal handlers and threads; seen within
        ``IDLE_WAIT_MS``."""
        self.draining = True
        self._drain_requested = True
        self._signalled = True

    def request_reload(self) -> None:
        """Ask the loop to run ``on_reload`` (default ``reload()``) at its
        next turn, in its own thread. Safe from signal handlers."""
        self._reload_requested = True
        self._signalled = True

    def reload(self) -> list[str]:
        """Re-read what can change without a restart: the CURVE keys dir
        now (it is also re-read within a second of a change). Returns what
        was re-read, for the log. Call from the loop's thread."""
        done = []
        auth = self.authenticator
        if auth is not None:
            auth.allow_list.refresh(force=True)
            done.append("CURVE keys dir %s" % auth.allow_list.keys_dir)
        return done

    def _on_signal_requests(self) -> bool:
        """Act on drain()/request_reload(); True when run() must end."""
        self._signalled = False
        if self._reload_requested:
            self._reload_requested = False
            try:
                if self.on_reload is not None:
                    self.on_reload()
                else:
                    self.reload()
            except Exception:  # noqa: BLE001 - a bad reload must not stop routing
                LOG.exception("reload failed; running on with what was "
                              "loaded before")
        if self._drain_requested:
            self._drain_requested = False
            self._drain()
            return True
        return False

    def _drain(self) -> None:
        """Take what libzmq already read off the network, close the TCP
        socket (peers keep what they have not sent and deliver it to the
        next receiver), then flush the backlogs while consumers take them,
        until empty or ``drain_timeout``."""
        monotonic = time.monotonic
        deadline = monotonic() + self.drain_timeout
        inbound = self.inbound
        LOG.info("draining: no longer accepting; handing %d held messages to "
                 "local services (at most %g s, rpc_zmq_drain_timeout)",
                 self.backlogged, self.drain_timeout)
        if inbound is not None:
            # bounded: a peer that keeps sending must not hold us here
            while not self._stopping and monotonic() < deadline \
                    and self._read_batch(inbound) == BATCH:
                self.turned = monotonic()
            inbound.close(0)
            self.inbound = None
        poller = zmq.Poller()
        while self.waiting and not self._stopping:
            now = self.turned = monotonic()
            if now >= deadline:
                break
            waiting = list(self.waiting.values())
            timeout = min(float(IDLE_WAIT_MS), (deadline - now) * 1000)
            for t in waiting:
                if t.hold_until:
                    # no new subscriber is worth waiting for past the grace
                    timeout = min(timeout, max(0.0, (t.hold_until - now) * 1000))
                poller.register(t.sock, zmq.POLLIN if t.hold_until else zmq.POLLOUT)
            try:
                events = dict(poller.poll(timeout))
            except zmq.ZMQError as exc:
                if exc.errno != errno.EINTR:
                    raise
                events = {}
            now = monotonic()
            for t in waiting:
                poller.unregister(t.sock)
                if t.name not in self.waiting:
                    continue
                if t.hold_until and events.get(t.sock, 0) & zmq.POLLIN:
                    self._subscribed(t)
                self._flush(t, now)
        # what went into a socket's pipe still needs time to reach its
        # consumer: give the sockets what is left of the drain time
        left = max(0.0, deadline - monotonic())
        if not self._stopping:  # stop() during the drain: as a plain stop
            self._close_linger_ms = int(min(left, self.drain_timeout) * 1000)
        if self.waiting:
            LOG.warning("drain timeout (%g s): %d messages still held",
                        self.drain_timeout, self.backlogged)

    def run(self) -> None:
        """Route until ``stop()``; then close every socket."""
        assert self.inbound is not None
        inbound = self.inbound
        poller = zmq.Poller()
        polled: dict[Any, int] = {}
        idle = {inbound: zmq.POLLIN}
        droplog = self.droplog
        monotonic = time.monotonic
        try:
            while not self._stopping:
                now = self.turned = monotonic()
                if self._signalled and self._on_signal_requests():
                    break
                if now >= droplog.due:
                    droplog.flush(now)
                if not self.waiting:
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
                # only the topics with a backlog: the loop's cost must not
                # grow with the number of topics
                waiting = list(self.waiting.values())
                timeout = float(IDLE_WAIT_MS)
                want: dict[Any, int] = {inbound: zmq.POLLIN}
                for t in waiting:
                    if t.hold_until:
                        # a subscription arriving ends the hold early
                        want[t.sock] = zmq.POLLIN
                        timeout = min(timeout, max(0.0, (t.hold_until - now) * 1000))
                    else:
                        want[t.sock] = zmq.POLLOUT
                        if t.kind == "pub":
                            # wake up to notice a fanout that stopped moving
                            timeout = min(timeout, max(
                                0.0, (t.moved + FANOUT_STALL - now) * 1000))
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
                now = monotonic()
                for t in waiting:
                    if t.name not in self.waiting:
                        continue  # emptied meanwhile (a cut-off)
                    ev = events.get(t.sock, 0)
                    if t.hold_until and ev & zmq.POLLIN:
                        self._subscribed(t)
                    if t.hold_until or ev or t.kind == "pub":
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
        max_bytes = self.limits.max_msg_size
        ok, too_many = frames_io.PARTS_OK, frames_io.PARTS_TOO_MANY
        again = zmq.Again
        for n in range(BATCH):
            try:
                # the first part as a Frame keeps the peer's address for
                # the log of a drop; the rest as bytes (cheapest for small)
                first = recv_first(inbound, flags)
            except again:
                return n
            flags = nonblock
            self._peer_frame = first
            if len(first) > max_bytes:
                # over the limit in one frame (libzmq let it in, up to
                # OVERSIZE_MARGIN times the limit): never copied into Python
                if first.more:
                    # keeps no part: takes the rest off the socket unread
                    recv_rest(inbound, [], 0)
                self.counters.incr("received")
                self._drop("too_large", None, first,
                           "one frame of %d bytes, over %d "
                           "(rpc_zmq_max_msg_size); discarded unread"
                           % (len(first), max_bytes))
                continue
            frames = [first.bytes]
            if first.more:
                status = recv_rest(inbound, frames, max_parts, max_bytes)
                if status == too_many:
                    # decode sees one more than the limit
                    frames.append(b"")
                elif status != ok:
                    self._too_large(frames)
                    continue
            try:
                self._accept(frames)
            except Exception:  # noqa: BLE001 - one message must not kill the loop
                self.counters.incr("dropped.internal_error")
                # the traceback once per place; repeats summed up
                topic = None
                if len(frames) > 1 and len(frames[1]) <= 300:
                    topic = frames[1].decode("utf-8", "replace")
                self.droplog.internal_error(sys.exc_info(), topic,
                                            self._peer(frames), time.monotonic())
        return BATCH

    def _too_large(self, kept: list) -> None:
        """A message passed rpc_zmq_max_msg_size while being received; its
        remaining parts were discarded unread."""
        self.counters.incr("received")
        topic = None
        if len(kept) > 1 and len(kept[1]) <= 300:
            topic = kept[1].decode("utf-8", "replace")
        self._drop("too_large", topic, kept,
                   "over %d bytes (rpc_zmq_max_msg_size) after %d frames; the "
                   "rest was discarded unread" % (self.limits.max_msg_size,
                                                  len(kept) + 1))

    def _shutdown(self) -> None:
        lost = sum(len(t.backlog) for t in self.topics.values())
        if lost:
            LOG.warning("stopping with %d undelivered messages in backlogs",
                        lost)
        if self.inbound is not None:
            self.inbound.close(0)
            self.inbound = None
        linger = self._close_linger_ms
        for t in self.topics.values():
            if linger is not None:  # drained: the pipes get the time left
                t.sock.close(linger)
            else:
                t.sock.close(0 if t.backlog else LINGER_MS)
        self.topics.clear()
        self.waiting.clear()
        self.droplog.flush(time.monotonic(), force=True)
        if self.servicegroup is not None:
            self.servicegroup.stop(leave=True)  # an orderly stop: seen at once
            self.servicegroup = None
        self._close_context()
        self._unlock()
        LOG.info("receiver stopped")
