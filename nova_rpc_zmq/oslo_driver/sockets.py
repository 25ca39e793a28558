"""The sockets of the oslo.messaging driver: static direct connections.

* ``Inbound``: a PULL socket bound to a random port of
  ``[rpc_zmq_min_port, rpc_zmq_max_port)`` and one reader (a thread, or a
  green thread in a monkey-patched process) that hands each message to a
  callback. Every RPC server, notification listener and caller (for its
  replies) has one.
* ``Outbound``: one PUSH socket per peer ``host:port``, opened at first use
  and closed after ``OUTBOUND_IDLE`` seconds unused or at cleanup, with ``ZMQ_IMMEDIATE`` so that a message is only
  queued once the TCP connection is up: a peer that is not there refuses
  the message (``send`` says so) instead of holding it.

Each socket is used by one thread at a time: a reader owns its PULL; sends
on a PUSH take its lock. Sends never block in libzmq (``NOBLOCK``); a full
or unconnected peer is waited for with the handler's sleep.

One-part messages (static direct connections only): every libzmq call
lets the GIL go, so a message of eight parts costs eight hand-offs at each
end, and libzmq's I/O threads carry eight messages. A message may instead
travel as one part (``frames.pack``). An ``Inbound`` takes both forms
always (``unpack``); an ``Outbound`` packs only toward a peer known to
unpack: a caller whose reply socket unpacks makes call ids that start
with ``UNPACKS_MARK`` (``caller_unpacks``), and a server of this version
packs its replies to those; a caller that got a packed reply from a
server marks that server's socket (``learned``) and packs what it sends
there from then on. Earlier versions of this driver make hex ids, never
packed replies, and so get and send messages of parts, as before.

With ``rpc_zmq_curve`` both take a ``curve.Curve``: PULLs become CURVE
servers behind its ZAP authenticator, PUSHes CURVE clients of their host's
key (see ``curve.py``). A peer that refuses our handshake never gets a pipe
(``ZMQ_IMMEDIATE``), so nothing is queued for it; once the refusal is known,
sends to its host raise ``curve.HostRefused`` saying why.
"""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING, Any, Callable

import zmq

from nova_rpc_zmq import concurrency, frames, wire, zmqio

if TYPE_CHECKING:
    from nova_rpc_zmq.oslo_driver.curve import Curve

LOG = logging.getLogger(__name__)

#: Milliseconds a reader waits before it looks at its stop flag.
READ_WAKE_MS = 200
#: High-water mark of every socket (messages).
HWM = 10000
#: Seconds an outbound socket may stay unused before it is closed (the
#: reply sockets of callers long gone would otherwise pile up).
OUTBOUND_IDLE = 600.0
#: First letter of the call ids of a caller whose reply socket takes
#: one-part messages. Not a hex digit: earlier versions of this driver make
#: hex ids (a uuid4's and a counter's), so they never carry it.
UNPACKS_MARK = "p"


def caller_unpacks(msg_id: str) -> bool:
    """True when the call ``msg_id`` comes from a caller whose reply
    socket takes one-part messages (its id starts with ``UNPACKS_MARK``)."""
    return msg_id[:1] == UNPACKS_MARK


def _same(parts: list) -> list:
    return parts


class PortRangeExceeded(RuntimeError):
    """No free port in the configured range after the configured tries."""


def bind_random(sock: Any, address: str, min_port: int, max_port: int,
                tries: int) -> int:
    """Bind ``sock`` to ``tcp://address:<port>`` for a random port of
    ``[min_port, max_port)``; returns the port.

    Raises ``PortRangeExceeded`` (naming the range and the options to
    change) after ``tries`` ports in use, ``ValueError`` for an empty
    range.
    """
    if not 0 < min_port < max_port <= 65536:
        raise ValueError("rpc_zmq_min_port %d and rpc_zmq_max_port %d do not "
                         "make a port range" % (min_port, max_port))
    last: Exception | None = None
    for _ in range(max(1, tries)):
        port = random.randrange(min_port, max_port)
        try:
            sock.bind("tcp://%s:%d" % (address, port))
            return port
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE:
                raise
            last = exc
    raise PortRangeExceeded(
        "ports range exceeded: no free port for %s in [%d, %d) after %d "
        "tries (last: %s); widen rpc_zmq_min_port/rpc_zmq_max_port or raise "
        "rpc_zmq_bind_port_retries" % (address, min_port, max_port, tries,
                                      last))


def member_host(member: str) -> str:
    """The host of a ``host:port`` member (whose certificate a CURVE
    client uses as the server key)."""
    return member.rpartition(":")[0]


class Inbound:
    """A bound PULL socket and its reader.

    ``on_message(frames)`` runs in the reader for each message and must
    not raise (what it raises is logged and the message dropped). With
    ``curve`` the socket is a CURVE server that admits the keys of its
    keys dir (set before the bind, so no peer gets in unchecked).

    With ``reader=False`` no reader is started: the owner calls ``read``
    itself, from one thread at a time (a caller's reply socket, read by
    whichever waiting caller leads; see ``replies.py``). With ``unpack``
    (the default) a one-part message is opened into its parts
    (``frames.unpack``) before ``on_message`` or ``read`` gives it; an
    owner that wants to know which form came passes False and unpacks
    itself. A one-part message that does not open is given as it is (one
    part), which ``wire.decode`` refuses. With ``batch``
    a native reader runs under SCHED_BATCH (``rpc_zmq_io_batch``): woken
    by the I/O thread, or by a worker that lets the GIL go, it waits for
    a free core or the tick instead of preempting that thread, which
    would then have to switch back in.
    """

    def __init__(self, handler: concurrency.Handler, ctx: Any,
                 bind_address: str, port_range: tuple[int, int, int],
                 on_message: Callable[[list], None], what: str,
                 curve: Curve | None = None, reader: bool = True,
                 batch: bool = False, unpack: bool = True) -> None:
        self.handler = handler
        self._unpack: Callable[[list], list] = frames.unpack if unpack \
            else _same
        # a native reader only: a green one runs in the hub's own thread
        self._batch = batch and not handler.green and \
            zmqio.batch_policy_allowed()
        self.what = what
        self._on_message = on_message
        self._sock = zmqio.make_socket(
            ctx, zmq.PULL, linger=0, rcvhwm=HWM, rcvtimeo=READ_WAKE_MS,
            maxmsgsize=wire.DEFAULT_LIMITS.max_msg_size)
        try:
            if curve is not None:
                curve.serve(self._sock, ctx)
            self.port = bind_random(self._sock, bind_address, *port_range)
        except BaseException:
            self._sock.close(0)
            raise
        self._stopped = False
        self._reader = handler.spawn(self._read) if reader else None
        self._rcvtimeo = READ_WAKE_MS

    def _read(self) -> None:
        if self._batch and not zmqio.batch_this_thread():
            LOG.debug("%s: reader stays under its scheduling policy",
                      self.what)
        sock, handle, unpack = self._sock, self._on_message, self._unpack
        recv = zmqio.recv_function(self.handler)
        while not self._stopped:
            try:
                parts = recv(sock)
            except zmq.Again:
                continue
            except zmq.ZMQError as exc:
                if not self._stopped:
                    LOG.error("%s: reading port %d failed, no more messages "
                              "are read: %s", self.what, self.port, exc)
                return
            try:
                handle(unpack(parts))
            except Exception:
                LOG.exception("%s: a message from port %d was dropped",
                              self.what, self.port)

    @property
    def reading(self) -> bool:
        """True when a reader of its own reads the socket."""
        return self._reader is not None

    def read(self, timeout: float) -> list | None:
        """The next message's frames, waiting at most ``timeout`` seconds;
        None when none came or the socket is closed (``reader=False`` only;
        one thread at a time, and never together with ``close``).

        One blocking receive with ``ZMQ_RCVTIMEO`` (set only when the wait
        changes): libzmq then sleeps in a single poll of its mailbox,
        where a poller would poll, check and receive again."""
        if self._stopped:
            return None
        ms = max(0, int(timeout * 1000))
        try:
            if ms != self._rcvtimeo:
                self._sock.setsockopt(zmq.RCVTIMEO, ms)
                self._rcvtimeo = ms
            return self._unpack(frames.recv(self._sock, 0))
        except zmq.Again:
            return None
        except zmq.ZMQError as exc:
            if not self._stopped:
                LOG.error("%s: reading port %d failed: %s", self.what,
                          self.port, exc)
            return None

    def close(self) -> None:
        """Stop the reader (within ``READ_WAKE_MS``) and close the socket;
        messages not yet read are dropped."""
        if self._stopped:
            return
        self._stopped = True
        if self._reader is not None:
            self.handler.join(self._reader, 5.0)
        self._sock.close(0)


class Outbound:
    """PUSH sockets to peers, one per ``host:port``, shared by threads.

    With ``curve`` each is a CURVE client of its host's key; see ``send``
    for what a refusal does. A peer marked with ``learned`` gets one-part
    messages (see the module docstring).
    """

    def __init__(self, handler: concurrency.Handler, ctx: Any,
                 linger_ms: int, idle: float = OUTBOUND_IDLE,
                 curve: Curve | None = None) -> None:
        self.handler = handler
        self._curve = curve
        self._ctx = ctx
        self._linger_ms = linger_ms
        self._idle = idle
        self._lock = handler.Lock()
        # member -> [socket, lock, last use, peer unpacks]
        self._peers: dict[str, list] = {}
        self._swept = time.monotonic()
        self._closed = False

    def _peer(self, member: str) -> list:
        peer = self._peers.get(member)
        if peer is not None:
            return peer
        with self._lock:
            peer = self._peers.get(member)
            if peer is None:
                if self._closed:
                    raise zmq.ZMQError(zmq.ENOTSOCK, "transport cleaned up")
                self._sweep()
                sock = zmqio.make_socket(self._ctx, zmq.PUSH,
                                         linger=self._linger_ms, sndhwm=HWM,
                                         immediate=True)
                try:
                    if self._curve is not None:
                        self._curve.connect(sock, member_host(member))
                    sock.connect("tcp://%s" % member)
                except BaseException:
                    sock.close(0)
                    raise
                peer = [sock, self.handler.Lock(), time.monotonic(), False]
                self._peers[member] = peer
            return peer

    def _drop_host(self, host: str) -> None:
        """Close every socket to ``host`` (the next send opens new ones)."""
        with self._lock:
            for member, peer in list(self._peers.items()):
                if member_host(member) == host:
                    with peer[1]:
                        del self._peers[member]
                        peer[0].close()
                        peer[2] = None

    def _sweep(self) -> None:
        """Close sockets idle for longer than ``idle`` (under ``_lock``,
        at most every tenth of ``idle``)."""
        now = time.monotonic()
        if now - self._swept < self._idle / 10:
            return
        self._swept = now
        for member, peer in list(self._peers.items()):
            if now - peer[2] > self._idle:
                with peer[1]:
                    del self._peers[member]
                    peer[0].close()
                    peer[2] = None  # closed: a sender holding it looks again

    def learned(self, member: str, unpacks: bool) -> None:
        """Whether ``member`` takes one-part messages, as its last reply
        showed (or False after a call to it timed out). Kept with its
        socket: a socket closed when idle forgets it. Thread-safe."""
        peer = self._peers.get(member)
        if peer is not None and peer[3] != unpacks:
            peer[3] = unpacks
            LOG.debug("%s: one-part messages %s", member,
                      "from now on" if unpacks else "no more")

    def unpacks(self, member: str) -> bool:
        """True when ``member`` is marked to get one-part messages."""
        peer = self._peers.get(member)
        return peer is not None and peer[3]

    def send(self, member: str, parts: list, wait: float | None,
             pack: bool = False) -> bool:
        """Queue ``parts`` to ``member`` (``host:port``), waiting at most
        ``wait`` seconds (None: for ever) for its connection or room; as
        one part (``frames.pack``) with ``pack`` or when the member is
        marked (``learned``).

        Returns False when it did not go (nothing was queued: a message is
        never sent twice). Raises ``zmq.ZMQError`` after cleanup. With
        CURVE, raises ``curve.HostRefused`` once the peer's host refused
        our handshake (see ``curve.py`` for retries) and
        ``curve.NoServerKey`` when the keys dir has no certificate of it.
        """
        deadline = None if wait is None else time.monotonic() + wait
        pause = 0.0005
        host = member_host(member)
        while True:
            if self._curve is not None:
                refused, retry = self._curve.refusal(host)
                if retry:
                    self._drop_host(host)  # new sockets for the next sends
                if refused is not None:
                    raise refused
            peer = self._peer(member)
            if (pack or peer[3]) and len(parts) > 1:
                parts = frames.pack(parts)
            with peer[1]:
                if peer[2] is not None:
                    peer[2] = time.monotonic()
                    try:
                        frames.send(peer[0], parts, frames.NOBLOCK)
                        return True
                    except zmq.Again:
                        pass
            if peer[2] is None:
                continue  # swept while we waited for its lock
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self.handler.sleep(pause)
            pause = min(pause * 2, 0.02)

    def close(self) -> None:
        """Close every socket (each keeps its linger for unsent messages)."""
        with self._lock:
            self._closed = True
            peers, self._peers = self._peers, {}
        for peer in peers.values():
            with peer[1]:
                peer[0].close()
                peer[2] = None
