"""The receiver's topic table: one outbound IPC socket per topic, and the
messages it could not take yet.

Directed topics get a PUSH socket (one consumer process gets each
message), ``fanout~...`` and ``zmq_replies...`` an XPUB socket (every
subscriber), bound at ``ipc://<rpc_zmq_ipc_dir>/zmq_topic_<topic>`` on
first use. A message that a socket cannot take at once waits in its
topic's backlog. Every backlog is bounded (``rpc_zmq_topic_backlog``
messages and ``rpc_zmq_topic_backlog_bytes`` bytes; all of them together
at ``TOTAL_FACTOR`` times that): beyond it a message is dropped and counted
as ``dropped.no_consumer`` (no consumer ever took a message of the topic)
or ``dropped.backlog_full`` (its consumers are too slow), and logged once
per interval (``droplog``).

The XPUB sockets are set to ``XPUB_NODROP``, so a fanout burst waits in the
backlog instead of being dropped at a subscriber's high-water mark. A
subscriber that takes nothing (stopped, hung) would then hold every other
one back: when a fanout backlog has not moved for ``FANOUT_STALL`` seconds,
or is full, the full subscribers are cut off (one send with XPUB_NODROP
off): the others get the backlog at once, and the cut-off one misses the
topic's messages until it has read its pipe down (counted in
``fanout_cut_off``, logged once per interval as ``subscriber_full``).

A topic socket bound a moment ago has no subscriber yet (ZeroMQ's slow
joiner): messages for a *new* publish topic are held for ``JOIN_GRACE``
seconds so that consumers that were waiting for the path can connect.

``TopicTable`` is the receiver's part that owns these; the routing loop
(``loop.py``) calls it. Not thread-safe: the loop's thread only.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from nova_rpc_zmq import frames as frames_io
from nova_rpc_zmq import zmqio
from nova_rpc_zmq.ipcdir import IPC_PATH_MAX, ipc_path
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
#: Upper bound on distinct topic sockets, so a hostile peer cannot exhaust fds.
MAX_TOPICS = 10000
#: High-water mark of the topic sockets (messages per consumer pipe).
TOPIC_HWM = 10000
#: Milliseconds a closing socket may keep trying to deliver.
LINGER_MS = 1000


@dataclass
class Topic:
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


class TopicTable:
    """The topic sockets and their bounded backlogs, with the drop log.

    A part of ``Receiver``: the attributes below are set by its
    ``__init__``. Not thread-safe: called from the routing loop only.
    """

    ipc_dir: str
    backlog_limit: int
    backlog_bytes_limit: int
    total_limit: int
    total_bytes_limit: int
    counters: Counters
    droplog: DropLog
    ctx: Any
    topics: dict[str, Topic]
    waiting: dict[str, Topic]
    backlogged: int
    backlogged_bytes: int
    _peer_frame: Any

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

    def _topic_socket(self, name: str, kind: str,
                      frames: Any = None) -> Topic | None:
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
        pub = kind == "pub"
        try:
            sock = zmqio.make_socket(
                self.ctx, zmq.XPUB if pub else zmq.PUSH, linger=LINGER_MS,
                sndhwm=TOPIC_HWM, options={zmq.XPUB_NODROP: 1} if pub else None)
        except zmq.ZMQError as exc:
            # out of descriptors or at the context's socket cap: this
            # topic waits for one to close; every other topic still routes
            self._drop("too_many_topics", name, frames,
                       "no socket for a new topic (%s, %d topics open); raise "
                       "the receiver's open-files limit (LimitNOFILE)"
                       % (exc, len(self.topics)))
            return None
        hold = time.monotonic() + JOIN_GRACE if pub else 0.0
        try:
            if os.path.exists(path):
                os.unlink(path)  # a stale file left by a killed receiver
            sock.bind("ipc://" + path)
        except (OSError, zmq.ZMQError) as exc:
            sock.close(0)
            self._drop("ipc_bind_failed", name, frames, str(exc))
            return None
        topic = Topic(name, kind, sock, hold_until=hold)
        self.topics[name] = topic
        self.counters.incr("topics_created")
        LOG.debug("created %s socket for topic %s", kind, name)
        return topic

    def _enqueue(self, topic: Topic, frames: list) -> None:
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

    def _full_reason(self, topic: Topic) -> str:
        """``no_consumer`` or ``backlog_full`` for a message that does not
        fit in ``topic``'s backlog."""
        if topic.kind == "pub":
            self._read_subscriptions(topic)
            return "backlog_full" if topic.subscriptions > 0 else "no_consumer"
        # a PUSH socket cannot tell its peers; a topic no consumer ever
        # took a message of has none (a stopped host, a name mismatch)
        return "backlog_full" if topic.taken else "no_consumer"

    def _read_subscriptions(self, topic: Topic) -> bool:
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

    def _release(self, topic: Topic, frames: list) -> None:
        """Account for a message leaving ``topic``'s backlog."""
        size = 0
        for part in frames:
            size += len(part)
        topic.size -= size
        self.backlogged -= 1
        self.backlogged_bytes -= size

    def _cut_off(self, topic: Topic, why: str) -> bool:
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

    def _flush(self, topic: Topic, now: float) -> None:
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

    def _subscribed(self, topic: Topic) -> None:
        """A subscriber joined a held publish topic: release its backlog."""
        if self._read_subscriptions(topic):
            topic.hold_until = 0.0

