"""The receiver's routing loop: read the TCP port, check, forward.

One native thread runs one poll loop; nothing blocks on a slow consumer:
a message that cannot be handed over at once waits in its topic's backlog
(``topics.py``) and goes out when the socket can take it (POLLOUT). TCP
input is never paused: one stuck topic must not silence the host's other
topics. Every inbound message is checked as hostile input (``wire.decode``
with the configured limits) and forwarded with its frames unchanged.

The loop notes when it last turned (``turned``, read by the health page).
``drain()`` and ``request_reload()`` (signal handlers) only set flags; the
loop acts on them at its next turn (``_on_signal_requests``).
"""

from __future__ import annotations

import errno
import logging
import sys
import time
from typing import Any, Callable

import zmq

from nova_rpc_zmq import frames as frames_io
from nova_rpc_zmq import wire
from nova_rpc_zmq.errors import RemoteProtocolError
from nova_rpc_zmq.receiver import heap
from nova_rpc_zmq.receiver.connections import READ_EVERY, ConnectionCount
from nova_rpc_zmq.receiver.topics import FANOUT_STALL, TopicTable

LOG = logging.getLogger(__name__)

#: Milliseconds an idle receiver waits in one receive (stop() is seen then).
IDLE_WAIT_MS = 200
#: Most messages read from TCP per poll round (fairness with the outputs).
BATCH = 256


class RoutingLoop(TopicTable):
    """``run()`` and what it calls per message and per signal.

    A part of ``Receiver``: the attributes below are set by its
    ``__init__`` and ``start()``.
    """

    limits: Any
    inbound: Any
    connections: ConnectionCount | None
    turned: float
    draining: bool
    drain_timeout: float
    on_reload: Callable[[], None] | None
    _stopping: bool
    _signalled: bool
    _drain_requested: bool
    _reload_requested: bool
    _close_linger_ms: int | None

    def _close_inbound(self) -> None:
        """Close the TCP socket and its connection monitor (which must go
        first: libzmq wants the monitor stopped on a live socket)."""
        if self.connections is not None:
            self.connections.close()
            self.connections = None
        if self.inbound is not None:
            self.inbound.close(0)
            self.inbound = None

    def reload(self) -> list[str]:
        """Re-read what can change without a restart (``Receiver``)."""
        raise NotImplementedError

    def _shutdown(self) -> None:
        """Close every socket (``Receiver``)."""
        raise NotImplementedError

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
            self._close_inbound()
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
                events = dict(poller.poll(int(timeout)))
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
        connections = self.connections
        connections_due = 0.0
        monotonic = time.monotonic
        release_due = monotonic() + heap.RELEASE_EVERY
        try:
            while not self._stopping:
                now = self.turned = monotonic()
                if self._signalled and self._on_signal_requests():
                    break
                if now >= droplog.due:
                    droplog.flush(now)
                if now >= release_due:
                    # the pages of a drained backlog back to the system
                    heap.release()
                    release_due = now + heap.RELEASE_EVERY
                if now >= connections_due and connections is not None:
                    connections.read()
                    connections_due = now + READ_EVERY
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
                    events = dict(poller.poll(int(timeout)))
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
                self.droplog.internal_error(sys.exc_info(), topic,  # type: ignore[arg-type]
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

