"""A caller's replies: one reply socket per transport, one queue per call.

The first call of a transport binds a PULL socket in the port range; its
address goes into every request as the reply topic
``zmq_replies.<rpc_zmq_host>:<port>``. The reader hands each
``-process_reply`` to the queue of the waiting call by ``msg_id``; a reply
nobody waits for (its call timed out) is logged and dropped.

A reply with ``more`` set and no values is a heartbeat: the server's
method still runs (``call_monitor_timeout``).

A reply comes as parts or as one part (``frames.pack``; ``sockets.py``,
"One-part messages"); which form came is kept with it, so that the caller
learns whether the server that answered takes one-part messages. A bad
reply is logged, counted in ``dropped`` by reason and dropped.

With native threads there is no reader thread: the waiting callers read
the socket themselves, one at a time (leader and followers). The leader
reads until its own reply comes, putting the others' replies in their
queues; when it leaves it wakes one follower to lead. A lone caller thus
gets its reply straight from the socket, without a hand-over between two
threads (each costs a wake-up and a GIL hand-off). Green threads keep the
reader: a green switch is cheap.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import oslo_messaging
from oslo_messaging._drivers import common as om_common

from nova_rpc_zmq import errors, frames, wire
from nova_rpc_zmq.oslo_driver.listener import is_remote_failure

if TYPE_CHECKING:
    from nova_rpc_zmq.oslo_driver.driver import ZmqDriver

LOG = logging.getLogger(__name__)


#: Longest wait of the leading caller on the reply socket, and of a
#: follower on its queue, before it looks again (seconds): bounds how long
#: ``close`` waits for the leader and how late a missed wake-up is noticed.
LEAD_SLICE = 0.2
#: Put in a follower's queue: the leader left, lead now.
_LEAD = object()


class ReplyWaiter:
    """Routes replies to waiting calls; thread-safe."""

    def __init__(self, driver: "ZmqDriver") -> None:
        self._driver = driver
        self._handler = driver.handler
        self._waiting: dict[str, Any] = {}
        native = not driver.handler.green
        # unpacked here, where which form came is wanted
        self._inbound = driver.inbound(self._on_frames, "reply socket",
                                       reader=not native, unpack=False)
        # a socket that has its own reader (behind proxies) is not read here
        self._lead = native and not getattr(self._inbound, "reading", True)
        self._leader = threading.Lock()
        self._followers: dict[int, Any] = {}
        self._closing = False
        self.member = driver.member(self._inbound.port)
        self.reply_topic = wire.reply_topic(self.member)
        #: replies dropped, by reason (``wire.REASONS``, ``not a reply``);
        #: plain counts: a lost increment under a race costs nothing
        self.dropped: dict[str, int] = {}

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def _parse(self, parts: list) -> Any:
        """``(reply, came as one part)`` of ``parts``, or None (a bad one is
        logged and counted)."""
        packed = False
        if len(parts) == 1:
            parts = frames.unpack(parts)
            packed = len(parts) > 1
        try:
            msg = wire.decode(parts)
        except errors.RemoteProtocolError as exc:
            self._drop(exc.reason)
            LOG.warning("reply socket %s: dropped a bad reply (%s): %s",
                        self.member, exc.reason, exc.detail)
            return None
        if type(msg) is not wire.Message:
            return None  # a probe: nothing to answer on this path
        # decode parsed and checked the reply already (msg.part)
        reply = msg.reply
        if reply is None:
            self._drop("not a reply")
            LOG.warning("reply socket %s: dropped a message that is not a "
                        "reply (%s to %s)", self.member,
                        msg.body.get(wire.METHOD_KEY), msg.topic)
            return None
        return reply, packed

    def _queue_of(self, item: Any) -> Any:
        reply = item[0]
        waiting = self._waiting.get(reply.msg_id)
        if waiting is None:
            LOG.info("reply socket %s: a reply for %s came after its call "
                     "ended; dropped", self.member, reply.msg_id)
        return waiting

    def _on_frames(self, parts: list) -> None:
        item = self._parse(parts)
        if item is not None:
            waiting = self._queue_of(item)
            if waiting is not None:
                waiting.put(item)

    # -- leader and followers (native threads) ------------------------------

    def _take(self, waiting: Any, timeout: float | None) -> Any:
        """The next ``(reply, came as one part)`` for the call of
        ``waiting``; raises the handler's Empty after ``timeout`` seconds."""
        if not self._lead:
            return waiting.get(timeout=timeout)
        end = None if timeout is None else time.monotonic() + timeout
        told_to_lead = False
        try:
            while not self._closing:
                item = self._poll_queue(waiting)
                if item is _LEAD:
                    told_to_lead = True
                    continue
                if item is not None:
                    return item
                if self._leader.acquire(blocking=False):
                    told_to_lead = False
                    try:
                        item = self._read_until_mine(waiting, end)
                    finally:
                        self._leader.release()
                        self._pass_lead()
                    if item is None:
                        raise self._handler.Empty
                    return item
                remaining = None if end is None else end - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise self._handler.Empty
                key = id(waiting)
                self._followers[key] = waiting
                try:
                    # the leader may have left between our try and now
                    if not self._leader.locked():
                        continue
                    item = waiting.get(timeout=LEAD_SLICE if remaining is None
                                       else min(remaining, LEAD_SLICE))
                except self._handler.Empty:
                    continue
                finally:
                    self._followers.pop(key, None)
                if item is _LEAD:
                    told_to_lead = True
                    continue
                return item
            raise self._handler.Empty
        finally:
            if told_to_lead:
                self._pass_lead()  # we were told to lead but did not

    def _poll_queue(self, waiting: Any) -> Any:
        try:
            return waiting.get(timeout=0)
        except self._handler.Empty:
            return None

    def _read_until_mine(self, waiting: Any, end: float | None) -> Any:
        """As the leader: read the socket, handing the others' replies over,
        until one for ``waiting`` comes (returned) or ``end`` (None)."""
        while not self._closing:
            item = self._poll_queue(waiting)
            if item is not None and item is not _LEAD:
                return item
            wait = LEAD_SLICE
            if end is not None:
                wait = min(wait, end - time.monotonic())
                if wait <= 0:
                    return None
            parts = self._inbound.read(wait)
            if parts is None:
                continue
            got = self._parse(parts)
            if got is None:
                continue
            target = self._queue_of(got)
            if target is waiting:
                return got
            if target is not None:
                target.put(got)
        return None

    def _pass_lead(self) -> None:
        """Wake one follower to lead (if any waits)."""
        for waiting in list(self._followers.values()):
            waiting.put(_LEAD)
            return

    def expect(self, msg_id: str) -> Any:
        """Make the queue for call ``msg_id`` (before its request goes)."""
        # native: woken through an eventfd, the GIL let go meanwhile
        waiting = self._handler.Mailbox(len(self._waiting))
        self._waiting[msg_id] = waiting
        return waiting

    def calls_waiting(self) -> int:
        """Calls that wait for their reply now."""
        return len(self._waiting)

    def forget(self, msg_id: str) -> None:
        """The call ended: later replies are dropped."""
        self._waiting.pop(msg_id, None)

    def wait(self, msg_id: str, waiting: Any, deadline: float | None,
             monitor: float | None, what: str) -> tuple[Any, bool]:
        """The call's result and whether its reply came as one part;
        raises the rebuilt remote exception, or MessagingTimeout at
        ``deadline`` or when no heartbeat came within ``monitor``
        seconds."""
        heard = time.monotonic()
        while True:
            now = time.monotonic()
            limits = []
            if deadline is not None:
                limits.append(deadline - now)
            if monitor:
                limits.append(heard + monitor - now)
            wait = max(0.0, min(limits)) if limits else None
            try:
                reply, packed = self._take(waiting, wait)
            except self._handler.Empty:
                if self._closing:
                    raise oslo_messaging.MessagingTimeout(
                        "%s: the transport was cleaned up while the call "
                        "waited for its reply (msg_id %s)" % (what, msg_id)) \
                        from None
                if deadline is not None and time.monotonic() >= deadline:
                    raise oslo_messaging.MessagingTimeout(
                        "%s: no reply within the timeout (msg_id %s)"
                        % (what, msg_id)) from None
                raise oslo_messaging.MessagingTimeout(
                    "%s: no heartbeat from the server within "
                    "call_monitor_timeout %ss (msg_id %s)"
                    % (what, monitor, msg_id)) from None
            if reply.more and not reply.response:
                heard = time.monotonic()
                continue
            value: Any = reply.response[0] if reply.response else None
            if is_remote_failure(value):
                raise om_common.deserialize_remote_exception(
                    value[wire.EXC_KEY], self._driver._allowed_remote_exmods)
            return value, packed

    def close(self) -> None:
        """Close the reply socket; calls still waiting time out."""
        self._closing = True
        # the leader leaves within LEAD_SLICE: the socket is not closed
        # under its read
        held = self._lead and self._leader.acquire(timeout=LEAD_SLICE * 5)
        try:
            self._inbound.close()
        finally:
            if held:
                self._leader.release()
