"""A caller's replies: one reply socket per transport, one queue per call.

The first call of a transport binds a PULL socket in the port range; its
address goes into every request as the reply topic
``zmq_replies.<rpc_zmq_host>:<port>``. The reader hands each
``-process_reply`` to the queue of the waiting call by ``msg_id``; a reply
nobody waits for (its call timed out) is logged and dropped.

A reply with ``more`` set and no values is a heartbeat: the server's
method still runs (``call_monitor_timeout``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import oslo_messaging
from oslo_messaging._drivers import common as om_common

from nova_rpc_zmq import errors, wire
from nova_rpc_zmq.oslo_driver.listener import is_remote_failure

if TYPE_CHECKING:
    from nova_rpc_zmq.oslo_driver.driver import ZmqDriver

LOG = logging.getLogger(__name__)


class ReplyWaiter:
    """Routes replies to waiting calls; thread-safe."""

    def __init__(self, driver: "ZmqDriver") -> None:
        self._driver = driver
        self._handler = driver.handler
        self._waiting: dict[str, Any] = {}
        self._inbound = driver.inbound(self._on_frames, "reply socket")
        self.member = driver.member(self._inbound.port)
        self.reply_topic = wire.reply_topic(self.member)

    def _on_frames(self, parts: list) -> None:
        try:
            msg = wire.decode(parts)
            if not isinstance(msg, wire.Message):
                return
            reply = wire.parse_reply(msg.body)
        except errors.RemoteProtocolError as exc:
            LOG.warning("reply socket %s: dropped a bad reply (%s): %s",
                        self.member, exc.reason, exc.detail)
            return
        waiting = self._waiting.get(reply.msg_id)
        if waiting is None:
            LOG.info("reply socket %s: a reply for %s came after its call "
                     "ended; dropped", self.member, reply.msg_id)
            return
        waiting.put(reply)

    def expect(self, msg_id: str) -> Any:
        """Make the queue for call ``msg_id`` (before its request goes)."""
        waiting = self._handler.Queue()
        self._waiting[msg_id] = waiting
        return waiting

    def forget(self, msg_id: str) -> None:
        """The call ended: later replies are dropped."""
        self._waiting.pop(msg_id, None)

    def wait(self, msg_id: str, waiting: Any, deadline: float | None,
             monitor: float | None, what: str) -> Any:
        """The call's result; raises the rebuilt remote exception, or
        MessagingTimeout at ``deadline`` or when no heartbeat came within
        ``monitor`` seconds."""
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
                reply = waiting.get(timeout=wait)
            except self._handler.Empty:
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
            return value

    def close(self) -> None:
        """Close the reply socket; calls still waiting time out."""
        self._inbound.close()
