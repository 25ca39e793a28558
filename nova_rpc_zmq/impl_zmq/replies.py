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

import collections
import itertools
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable

import zmq

from nova_rpc_zmq import frames as frames_io
from nova_rpc_zmq import wire, zmqio
from nova_rpc_zmq.concurrency import Handler
from nova_rpc_zmq.errors import RemoteProtocolError, Timeout
from nova_rpc_zmq.impl_zmq.routes import caller_mark  # noqa: F401 - its old home
from nova_rpc_zmq.ipcdir import direct_reply_path, ipc_path
from nova_rpc_zmq.metrics import Counters

if TYPE_CHECKING:
    from nova_rpc_zmq.config import Settings

LOG = logging.getLogger(__name__)

#: Replies a caller's reply sockets take in before Python reads them.
#: libzmq's own I/O thread fills these queues without the GIL, so a burst
#: of replies leaves the receiver's pipe at once even while the caller's
#: threads are busy; with the default 1000 the receiver's pipe stayed
#: full, and a caller with thousands of calls in flight was cut off from
#: its reply topic (``subscriber_full``) and lost replies. A caller gets
#: no more replies than it has calls waiting, so this bounds little.
REPLY_RCVHWM = 100000

_DIRECT_REPLY_MARK = wire.DIRECT_REPLY_MARK

#: Seconds between probe resends while waiting for the reply path.
PROBE_INTERVAL = 0.1
#: RCVTIMEO of the listener, so it notices close() promptly.
POLL_MS = 250

#: ``send(host, frames, topic)``: hands frames to ``host``'s receiver.
Send = Callable[[str, list, str], None]


class ReplyWaiter:
    """The process's reply listener. Start lazily via ``ensure_ready``.

    ``ctx`` is the driver's context (``zmqio.context(handler)``), ``send``
    reaches the receiver of a host (probes go through our own), ``endpoint``
    names a host's receiver address for error messages, and ``refusal``
    (with CURVE) tells the CURVE refusal of a host, or None.
    """

    def __init__(self, handler: Handler, ctx: Any, settings: Settings,
                 send: Send, counters: Counters, *,
                 endpoint: Callable[[str], str] = str,
                 refusal: Callable[[str], Exception | None] | None = None
                 ) -> None:
        self.handler = handler
        self.ctx = ctx
        self.settings = settings
        self.send = send
        self.endpoint = endpoint
        self.refusal = refusal
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
        self.counters = counters
        self.reply_topic = wire.reply_topic(settings.rpc_zmq_host)
        #: ports where the direct reply socket also listens on TCP, for
        #: services on other hosts (``impl_zmq/remote.py``); None: off
        self.direct_ports: range | None = None
        #: the TCP port it got (0: none; ``tcp_port`` binds it)
        self.direct_port = 0
        #: with CURVE, makes that socket a CURVE server before it binds
        self.direct_serve: Callable[[Any], None] | None = None
        self._tcp_tried = False
        #: takes the ``whereis`` probes that answer our asks
        self.on_where: Callable[[str], None] | None = None

    @property
    def in_flight(self) -> int:
        """Calls registered and waiting for their reply now."""
        return len(self._waiters)

    def new_msg_id(self) -> str:
        """32 hex digits, starting with this process's token."""
        return "%s%016x" % (self.token, next(self._ids))

    @property
    def caller_mark(self) -> bytes:
        """Frame 0 of our call requests: "streaming accepted" plus the token
        naming our direct reply socket (old servers ignore frame 0)."""
        return wire.CALLER_STREAMS + b"." + self.token.encode()

    def _start(self) -> None:
        settings = self.settings
        # green readers wait in the hub and notice close() when stopped
        rcvtimeo = None if self.handler.green else POLL_MS
        sock = zmqio.make_socket(
            self.ctx, zmq.SUB, linger=0, rcvtimeo=rcvtimeo,
            rcvhwm=REPLY_RCVHWM, maxmsgsize=settings.limits.max_msg_size,
            subscribe=self.token.encode(),
            options={zmq.RECONNECT_IVL: 20, zmq.RECONNECT_IVL_MAX: 100})
        sock.connect("ipc://" + ipc_path(settings.rpc_zmq_ipc_dir,
                                         self.reply_topic))
        # Servers on this host skip the receiver and push replies straight
        # here (one process hop less); replies from other hosts, and from
        # old servers, come through the receiver's publisher above.
        direct = zmqio.make_socket(self.ctx, zmq.PULL, linger=0,
                                   rcvtimeo=rcvtimeo, rcvhwm=REPLY_RCVHWM,
                                   maxmsgsize=settings.limits.max_msg_size)
        direct.bind("ipc://" + direct_reply_path(settings.rpc_zmq_ipc_dir,
                                                 self.token))
        self._sock = sock
        self._threads = [self.handler.spawn(self._loop, sock),
                         self.handler.spawn(self._loop, direct)]

    def tcp_port(self) -> int:
        """The port of the TCP reply socket for services on other hosts
        (``impl_zmq/remote.py``), bound at the first call that needs it
        (a process that calls only its own host holds no port); 0 when
        the direct path is off or no port of the range is free."""
        if self.direct_ports is None or self._tcp_tried:
            return self.direct_port
        with self._start_lock:
            if self._tcp_tried or self._closing:
                return self.direct_port
            self._tcp_tried = True
            from nova_rpc_zmq.impl_zmq.remote import bind_direct
            settings = self.settings
            sock = zmqio.make_socket(
                self.ctx, zmq.PULL, linger=0,
                rcvtimeo=None if self.handler.green else POLL_MS,
                rcvhwm=REPLY_RCVHWM, maxmsgsize=settings.limits.max_msg_size)
            port = bind_direct(sock, settings, self.direct_ports,
                               "the reply socket", serve=self.direct_serve)
            if port is None:
                sock.close(0)
                return 0
            self._threads.append(self.handler.spawn(self._loop, sock))
            self.direct_port = port
        return port

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
        deadline = time.monotonic() + timeout
        own = self.settings.rpc_zmq_host
        n = 0
        while not self._ready.is_set():
            n += 1
            self._probe_id = "%s%s%d" % (self.token, wire.PROBE_MARK, n)
            try:
                self.send(own, wire.encode_probe(self._probe_id,
                                                 self.reply_topic),
                          self.reply_topic)
            except Timeout:
                pass  # our receiver's queue is full: the next probe retries
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._ready.wait(min(PROBE_INTERVAL * min(n, 10), left))
            failure = self.refusal(own) if self.refusal is not None else None
            if failure is not None and not self._ready.is_set():
                raise failure
        if not self._ready.is_set():
            raise Timeout(
                info="no reply path: nothing came back through the local "
                     "receiver at %s within %.1fs; is nova-rpc-zmq-receiver "
                     "running on this host with rpc_zmq_ipc_dir=%s?"
                     % (self.endpoint(own), timeout,
                        self.settings.rpc_zmq_ipc_dir),
                topic=self.reply_topic)

    def register(self, msg_id: str, host: str | None = None) -> Any:
        """A queue that receives ``(response, more)`` for ``msg_id``, or
        ``(REFUSED, error)`` when ``host`` refuses our connection."""
        q = self.handler.Mailbox(len(self._waiters))
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
        if not self.handler.green and self.settings.rpc_zmq_io_batch:
            # woken by the I/O thread (or a caller letting the GIL go), a
            # native reader waits for a free core or the tick instead of
            # preempting that thread: with 16 threaded callers on two
            # hosts 7% more calls per second, 59 instead of 65 us of the
            # caller's CPU per call; a lone call is not slower
            zmqio.batch_this_thread()
        recv = zmqio.recv_function(self.handler)
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
            if len(frames) == 1 and frames[0].startswith(_DIRECT_REPLY_MARK):
                # a service of ours on another host, straight to us
                reply = wire.decode_direct_reply(frames[0],
                                                 self.settings.limits)
                self.counters.incr("replies.direct_style")
                self._deliver_reply(reply)
                return
            # the direct path sends one part (``frames.pack``)
            msg = wire.decode(frames_io.unpack(frames), self.settings.limits)
        except RemoteProtocolError as exc:
            self.counters.incr("replies.dropped." + exc.reason)
            LOG.warning("dropped a malformed reply: %s", exc)
            return
        if isinstance(msg, wire.Probe):
            # any of our probes proves the path, even an earlier one
            if msg.probe_id.startswith(self.token + wire.PROBE_MARK):
                self._ready.set()
            elif self.on_where is not None:
                self.on_where(msg.probe_id)
            return
        self._deliver(msg)

    def _deliver(self, msg: wire.Message) -> None:
        reply = msg.reply  # decode checked and parsed it
        if reply is None:
            self.counters.incr("replies.dropped.not_a_reply")
            LOG.warning("dropped a message on the reply topic that is not a "
                        "reply (method %r)", msg.body.get(wire.METHOD_KEY))
            return
        self._deliver_reply(reply)

    def _deliver_reply(self, reply: wire.Reply) -> None:
        q = self._waiters.get(reply.msg_id)
        if q is None:
            self.counters.incr("replies.late")
            LOG.debug("dropped a late reply for %s", reply.msg_id)
            return
        q.put((reply.response, reply.more, reply.seq))

    def close(self) -> None:
        """Stop the listener; returns once its socket is closed (<0.5 s)."""
        self._closing = True
        for thread in self._threads:
            self.handler.stop(thread)
        self._threads = []


#: First item of a queue entry telling a caller its host refused us.
REFUSED = object()


class DirectReplies:
    """PUSH sockets to the direct reply sockets of callers on this host.

    Bounded: at most ``MAX_SOCKETS`` callers are remembered (least recently
    used closed first). ``send`` never blocks: when a caller's queue is full
    it returns False and the reply takes the receiver's path instead.
    """

    MAX_SOCKETS = 256
    HWM = 1000

    def __init__(self, handler: Handler, ctx: Any, ipc_dir: str,
                 counters: Counters) -> None:
        self.handler = handler
        self.ctx = ctx
        self.ipc_dir = ipc_dir
        self.counters = counters
        self._socks: "collections.OrderedDict[str, Any]" = collections.OrderedDict()
        self._lock = self.handler.Lock()
        self._closed = False

    def send(self, token: str, frames: list[bytes]) -> bool:
        """Push ``frames`` to the caller with ``token``; False (never
        blocking) when its queue is full or we are closed."""
        with self._lock:
            if self._closed:
                return False  # a socket made now would hold up the context's end
            sock = self._socks.get(token)
            if sock is None:
                sock = zmqio.make_socket(self.ctx, zmq.PUSH, linger=0,
                                         sndhwm=self.HWM)
                sock.connect("ipc://" + direct_reply_path(self.ipc_dir, token))
                self._socks[token] = sock
                if len(self._socks) > self.MAX_SOCKETS:
                    _old, victim = self._socks.popitem(last=False)
                    victim.close(0)
            else:
                self._socks.move_to_end(token)
            try:
                frames_io.send(sock, frames, frames_io.NOBLOCK)
            except zmq.Again:
                self.counters.incr("replies.direct_full")
                return False
        return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            socks, self._socks = self._socks, type(self._socks)()
        for sock in socks.values():
            sock.close(0)
