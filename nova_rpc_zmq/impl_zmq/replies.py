"""One reply listener per process, serving every waiting caller.

All replies for this host arrive on ``ipc://<dir>/zmq_topic_zmq_replies.<host>``
(a publish socket of the local receiver). This process subscribes once, to
its own random 16-hex-digit token: every ``msg_id`` it makes starts with the
token, and a reply carries its ``msg_id`` in frame 0, so the receiver's
publisher filters replies per process. A caller registers its ``msg_id``,
sends, and waits on its own queue; the listener puts each reply part there.
A reply for a ``msg_id`` no one waits for (it timed out) is dropped and
counted, never handed to another caller.

The first call of a process must not lose its reply to the slow-joiner
effect, so before it the listener proves the path: it sends a probe message
through the local receiver to its own reply topic and waits to see it come
back (resending while waiting, within the call's timeout).
"""

from __future__ import annotations

import itertools
import logging
import uuid
from typing import Any

from nova_rpc_zmq import wire
from nova_rpc_zmq.errors import RemoteProtocolError, Timeout
from nova_rpc_zmq.metrics import Counters

LOG = logging.getLogger(__name__)

#: Seconds between probe resends while waiting for the reply path.
PROBE_INTERVAL = 0.1
#: RCVTIMEO of the listener, so it notices close() promptly.
POLL_MS = 250


class ReplyWaiter:
    """The process's reply listener. Start lazily via ``ensure_ready``."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.handler = driver.handler
        self.token = uuid.uuid4().hex[:16]
        self._ids = itertools.count(1)
        self._waiters: dict[str, Any] = {}
        self._ready = self.handler.Event()
        self._started = False
        self._start_lock = self.handler.Lock()
        self._closing = False
        self._probe_id = ""
        self._sock: Any = None
        self._thread: Any = None
        self.counters: Counters = driver.counters

    @property
    def reply_topic(self) -> str:
        return wire.reply_topic(self.driver.settings.rpc_zmq_host)

    def new_msg_id(self) -> str:
        """32 hex digits, starting with this process's token."""
        return "%s%016x" % (self.token, next(self._ids))

    def _start(self) -> None:
        zmq = self.handler.zmq
        sock = self.driver.ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, POLL_MS)
        sock.setsockopt(zmq.RECONNECT_IVL, 20)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 100)
        sock.setsockopt(zmq.SUBSCRIBE, self.token.encode())
        sock.connect("ipc://" + self.driver.ipc_path(self.reply_topic))
        self._sock = sock
        self._thread = self.handler.spawn(self._loop)

    def ensure_ready(self, timeout: float) -> None:
        """Start the listener if needed and prove the reply path works.

        Raises Timeout naming the receiver when no probe comes back.
        """
        if self._ready.is_set():
            return
        with self._start_lock:
            if not self._started:
                self._start()
                self._started = True
        import time
        deadline = time.monotonic() + timeout
        n = 0
        while not self._ready.is_set():
            n += 1
            self._probe_id = "%sprobe%d" % (self.token, n)
            try:
                self.driver.outbound.send(
                    self.driver.settings.rpc_zmq_host,
                    wire.encode_probe(self._probe_id, self.reply_topic),
                    topic=self.reply_topic)
            except Timeout:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._ready.wait(min(PROBE_INTERVAL * min(n, 10), left))
        if not self._ready.is_set():
            raise Timeout(
                info="no reply path: nothing came back through the local "
                     "receiver at %s within %.1fs; is nova-rpc-zmq-receiver "
                     "running on this host with rpc_zmq_ipc_dir=%s?"
                     % (self.driver.outbound.endpoint(
                         self.driver.settings.rpc_zmq_host), timeout,
                        self.driver.settings.rpc_zmq_ipc_dir),
                topic=self.reply_topic)

    def register(self, msg_id: str) -> Any:
        """A queue that receives ``(response, more)`` for ``msg_id``."""
        q = self.handler.Queue()
        self._waiters[msg_id] = q
        return q

    def unregister(self, msg_id: str) -> None:
        self._waiters.pop(msg_id, None)

    def _loop(self) -> None:
        zmq = self.handler.zmq
        sock = self._sock
        limits = self.driver.settings.limits
        while not self._closing:
            try:
                frames = sock.recv_multipart()
            except zmq.Again:
                continue
            except zmq.ZMQError:
                if self._closing:
                    break
                LOG.exception("reply listener socket failed")
                break
            try:
                msg = wire.decode(frames, limits)
            except RemoteProtocolError as exc:
                self.counters.incr("replies.dropped." + exc.reason)
                LOG.warning("dropped a malformed reply: %s", exc)
                continue
            if isinstance(msg, wire.Probe):
                # any of our probes proves the path, even an earlier one
                if msg.probe_id.startswith(self.token + "probe"):
                    self._ready.set()
                continue
            self._deliver(msg)
        sock.close(0)

    def _deliver(self, msg: Any) -> None:
        args = msg.body.get("args")
        if msg.body.get("method") != wire.PROCESS_REPLY_METHOD or \
                not isinstance(args, dict):
            self.counters.incr("replies.dropped.not_a_reply")
            LOG.warning("dropped a message on the reply topic that is not a "
                        "reply (method %r)", msg.body.get("method"))
            return
        msg_id = args.get("msg_id") or msg.msg_id
        q = self._waiters.get(msg_id)
        if q is None:
            self.counters.incr("replies.late")
            LOG.debug("dropped a late reply for %s", msg_id)
            return
        response = args.get("response")
        if not isinstance(response, list):
            response = [response]
        q.put((response, args.get("more")))

    def close(self) -> None:
        """Stop the listener; returns once its socket is closed (<0.5 s)."""
        self._closing = True
        thread = self._thread
        if thread is not None:
            join = getattr(thread, "join", None) or getattr(thread, "wait")
            join()
            self._thread = None
