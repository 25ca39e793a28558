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

from nova_rpc_zmq import frames as frames_io
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
        self._hosts: dict[str, str] = {}  # msg_id -> host the call went to
        self._ready = self.handler.Event()
        self._started = False
        self._start_lock = self.handler.Lock()
        self._closing = False
        self._probe_id = ""
        self._sock: Any = None
        self._threads: list[Any] = []
        self.counters: Counters = driver.counters

    @property
    def reply_topic(self) -> str:
        return wire.reply_topic(self.driver.settings.rpc_zmq_host)

    def new_msg_id(self) -> str:
        """32 hex digits, starting with this process's token."""
        return "%s%016x" % (self.token, next(self._ids))

    @property
    def caller_mark(self) -> bytes:
        """Frame 0 of our call requests: "streaming accepted" plus the token
        naming our direct reply socket (old servers ignore frame 0)."""
        return wire.CALLER_STREAMS + b"." + self.token.encode()

    def _start(self) -> None:
        zmq = self.handler.zmq
        sock = self.driver.ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        if self.handler.name == "threading":
            sock.setsockopt(zmq.RCVTIMEO, POLL_MS)
        sock.setsockopt(zmq.RECONNECT_IVL, 20)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 100)
        sock.setsockopt(zmq.SUBSCRIBE, self.token.encode())
        sock.connect("ipc://" + self.driver.ipc_path(self.reply_topic))
        # Servers on this host skip the receiver and push replies straight
        # here (one process hop less); replies from other hosts, and from
        # old servers, come through the receiver's publisher above.
        direct = self.driver.ctx.socket(zmq.PULL)
        direct.setsockopt(zmq.LINGER, 0)
        if self.handler.name == "threading":
            direct.setsockopt(zmq.RCVTIMEO, POLL_MS)
        direct.setsockopt(zmq.MAXMSGSIZE, self.driver.settings.limits.max_msg_size)
        direct.bind("ipc://" + self.driver.direct_reply_path(self.token))
        self._sock = sock
        self._threads = [self.handler.spawn(self._loop, sock),
                         self.handler.spawn(self._loop, direct)]

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
            own = self.driver.settings.rpc_zmq_host
            try:
                self.driver._send(own, wire.encode_probe(self._probe_id,
                                                         self.reply_topic),
                                  self.reply_topic)
            except Timeout:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._ready.wait(min(PROBE_INTERVAL * min(n, 10), left))
            security = self.driver.security
            failure = security.failure(own) if security is not None else None
            if failure is not None and not self._ready.is_set():
                raise failure
        if not self._ready.is_set():
            raise Timeout(
                info="no reply path: nothing came back through the local "
                     "receiver at %s within %.1fs; is nova-rpc-zmq-receiver "
                     "running on this host with rpc_zmq_ipc_dir=%s?"
                     % (self.driver.outbound.endpoint(
                         self.driver.settings.rpc_zmq_host), timeout,
                        self.driver.settings.rpc_zmq_ipc_dir),
                topic=self.reply_topic)

    def register(self, msg_id: str, host: str | None = None) -> Any:
        """A queue that receives ``(response, more)`` for ``msg_id``, or
        ``(REFUSED, error)`` when ``host`` refuses our connection."""
        q = self.handler.Queue()
        self._waiters[msg_id] = q
        if host is not None:
            self._hosts[msg_id] = host
        return q

    def unregister(self, msg_id: str) -> None:
        self._waiters.pop(msg_id, None)
        self._hosts.pop(msg_id, None)

    def refused(self, host: str, error: Exception) -> None:
        """``host`` refused us: wake every call waiting on it with ``error``."""
        for msg_id, waiting_on in list(self._hosts.items()):
            if waiting_on == host:
                q = self._waiters.get(msg_id)
                if q is not None:
                    q.put((REFUSED, error, None))

    def _loop(self, sock: Any) -> None:
        zmq = self.handler.zmq
        recv = self.handler.recv
        try:
            while not self._closing:
                try:
                    frames = recv(sock)
                except zmq.Again:
                    continue  # native threads: RCVTIMEO, to notice close()
                except zmq.ZMQError:
                    if not self._closing:
                        LOG.exception("reply listener socket failed")
                    break
                self._handle(frames)
        finally:
            sock.close(0)

    def _handle(self, frames: list) -> None:
        try:
            msg = wire.decode(frames, self.driver.settings.limits)
        except RemoteProtocolError as exc:
            self.counters.incr("replies.dropped." + exc.reason)
            LOG.warning("dropped a malformed reply: %s", exc)
            return
        if isinstance(msg, wire.Probe):
            # any of our probes proves the path, even an earlier one
            if msg.probe_id.startswith(self.token + "probe"):
                self._ready.set()
            return
        self._deliver(msg)

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
        seq = args.get(wire.SEQ_KEY)
        if type(seq) is not int or not 0 <= seq < wire.MAX_SEQ:
            seq = None  # unnumbered: an old server's complete reply
        q.put((response, args.get("more"), seq))

    def close(self) -> None:
        """Stop the listener; returns once its socket is closed (<0.5 s)."""
        self._closing = True
        for thread in self._threads:
            self.handler.stop(thread)
        self._threads = []


#: First item of a queue entry telling a caller its host refused us.
REFUSED = object()

_TOKEN_LEN = 16
_HEX = frozenset("0123456789abcdef")


def caller_mark(msg_id: str) -> tuple[bool, str | None]:
    """Read frame 0 of a call: (caller accepts streaming, its token or None).

    ``"stream"`` or ``"stream.<16 hex>"`` from our callers; anything else
    (``"0"`` from old ones) means one complete reply, no token.
    """
    mark = wire.CALLER_STREAMS.decode()
    if msg_id == mark:
        return True, None
    if msg_id.startswith(mark + "."):
        token = msg_id[len(mark) + 1:]
        if len(token) == _TOKEN_LEN and set(token) <= _HEX:
            return True, token
        return True, None
    return False, None


class DirectReplies:
    """PUSH sockets to the direct reply sockets of callers on this host.

    Bounded: at most ``MAX_SOCKETS`` callers are remembered (least recently
    used closed first). ``send`` never blocks: when a caller's queue is full
    it returns False and the reply takes the receiver's path instead.
    """

    MAX_SOCKETS = 256
    HWM = 1000

    def __init__(self, driver: Any) -> None:
        import collections
        self.driver = driver
        self.handler = driver.handler
        self._socks: "collections.OrderedDict[str, Any]" = collections.OrderedDict()
        self._lock = self.handler.Lock()
        self._closed = False

    def send(self, token: str, frames: list[bytes]) -> bool:
        zmq = self.handler.zmq
        with self._lock:
            if self._closed:
                return False  # a socket made now would hold up the context's end
            sock = self._socks.get(token)
            if sock is None:
                sock = self.driver.ctx.socket(zmq.PUSH)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.SNDHWM, self.HWM)
                sock.connect("ipc://" + self.driver.direct_reply_path(token))
                self._socks[token] = sock
                if len(self._socks) > self.MAX_SOCKETS:
                    _old, victim = self._socks.popitem(last=False)
                    victim.close(0)
            else:
                self._socks.move_to_end(token)
            try:
                frames_io.send(sock, frames, frames_io.NOBLOCK)
            except zmq.Again:
                self.driver.counters.incr("replies.direct_full")
                return False
        return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            socks, self._socks = self._socks, type(self._socks)()
        for sock in socks.values():
            sock.close(0)
