"""The ZAP handler: the loop that asks the ``AllowList`` about each peer.

ZAP (ZMTP RFC 27) is how libzmq asks the application whether a peer may
finish its handshake: a server socket sends a request to the REP socket
bound at ``inproc://zeromq.zap.01`` *in the same context* and waits for
the reply.  Request frames: version ``1.0``, request id, domain, peer
address, routing identity, mechanism, then the mechanism's credentials
(for CURVE: the client's 32-byte public key).  Reply frames: version,
request id, status code (``200``/``300``/``400``/``500``), status text,
user id, metadata.

Without a ZAP handler a CURVE server accepts *any* client key.  So the
receiver must, in this order::

    auth = ZapAuthenticator(ctx, AllowList(keys_dir))
    auth.start()                           # binds the ZAP endpoint
    sock = ctx.socket(zmq.ROUTER)          # or PULL
    configure_server(sock, my_keypair)     # CURVE_SERVER, keys, ZAP domain
    auth.watch_server(sock)                # count refusals ZAP never sees
    sock.bind("tcp://*:9501")
    ...
    sock.close(); auth.stop()

``configure_server`` sets ``ZAP_ENFORCE_DOMAIN`` where libzmq has it; then
if the handler is not running, every CURVE handshake fails (measured with
libzmq 4.3.5: the server sees HANDSHAKE_FAILED_NO_DETAIL errno 14, the
client HANDSHAKE_FAILED_NO_DETAIL errno 32, repeatedly), so a missing
handler fails closed.  A NULL socket without a ZAP domain (the receiver's
IPC sockets) never consults ZAP, so one context can hold both.

What the receiver sees of each refusal (libzmq 4.3.5, measured):

* unknown client key: a ZAP request with mechanism CURVE, refused here
  (400, counted as 'no matching key', logged with the peer address);
* client with a wrong server key: no ZAP request; the server socket sees
  HANDSHAKE_FAILED_PROTOCOL 0x11000001 (cryptographic error), counted by
  ``watch_server`` as 'bad handshake';
* client without CURVE (NULL or PLAIN): no ZAP request; the greeting
  fails.  The two greetings cross, so which side detects the mismatch is
  a race (about half each, measured): the server socket sees either
  HANDSHAKE_FAILED_PROTOCOL 0x11000002, counted by ``watch_server`` as
  'mechanism mismatch', or HANDSHAKE_FAILED_NO_DETAIL (EPIPE), counted as
  'handshake aborted' (logged at debug level only, since a bare TCP probe
  such as a load balancer's check looks the same).  ZAP only sees
  NULL/PLAIN when a server socket was left without CURVE but with a ZAP
  domain; the policy then refuses it (400 'mechanism mismatch'), a second
  line of defence.

Each refused handshake also ends in a ``DISCONNECTED`` event on the
server socket, after its ``ACCEPTED``, like any other closed connection.
``watch_server(sock, on_connection=...)`` hands those two events to the
caller (the receiver's connection count): the socket has one monitor, and
this is it.

The accepted peer's host name is the ZAP user id, so a receiver may read
it from each message: ``frame.get('User-Id')`` (``recv(copy=False)``).

The loop runs in a native thread (the receiver daemon uses threads) with
plain pyzmq sockets, even on a green context.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from nova_rpc_zmq import concurrency, zmqio
from nova_rpc_zmq.errors import ConfigurationError, LocalError
from nova_rpc_zmq.security.keys import KeyPair
from nova_rpc_zmq.security.policy import (MECHANISM_MISMATCH, AllowList,
                                          Decision)


#: libzmq's option number for ZMQ_ZAP_ENFORCE_DOMAIN (libzmq 4.2.3 and
#: later). pyzmq before 23 does not name it, yet the libzmq it bundles
#: (4.3.4) honours it: without it, a CURVE server whose ZAP handler is not
#: running lets every CURVE client in.
ZAP_ENFORCE_DOMAIN = int(getattr(zmq, "ZAP_ENFORCE_DOMAIN", 93))

if TYPE_CHECKING:
    from nova_rpc_zmq import config

LOG = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"
#: The ZAP domain of every nova-rpc-zmq server socket.
DEFAULT_DOMAIN = "nova-rpc-zmq"

#: Extra refusal labels counted by the authenticator itself.
UNKNOWN_DOMAIN = "unknown domain"
BAD_ZAP_REQUEST = "bad zap request"
INTERNAL_ERROR = "internal error"
BAD_HANDSHAKE = "bad handshake"
HANDSHAKE_ABORTED = "handshake aborted"
PROTOCOL_ERROR = "protocol error"

_SERVER_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                  | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                  | zmq.EVENT_MONITOR_STOPPED)
#: What ``watch_server(on_connection=...)`` also watches and hands over.
CONNECTION_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED
#: libzmq retries a refused handshake about every 100 ms, so a repeating
#: monitor refusal is logged once per this many seconds per endpoint and
#: reason, with how many came in between (all are counted).
WARN_EVERY = 60.0
_MAX_BATCH = 100          # requests or events handled per wake-up
_MAX_FRAMES = 16          # a ZAP request has 6 frames plus credentials

RefusalCallback = Callable[[Decision, str], None]
#: Called with ``zmq.EVENT_ACCEPTED`` or ``zmq.EVENT_DISCONNECTED``.
ConnectionCallback = Callable[[int], None]


def _unbound(sock: Any, what: str) -> None:
    """Mechanism options are copied at bind/connect time: set them first."""
    try:
        endpoint = sock.getsockopt(zmq.LAST_ENDPOINT)
    except zmq.ZMQError:
        return
    if endpoint:
        raise LocalError("%s must be called before the socket binds or "
                         "connects (it is already on %s)"
                         % (what, endpoint.decode("ascii", "replace")))


def _set_keys(sock: Any, keypair: KeyPair, role: str,
              fresh: bool = True) -> None:
    """This host's key pair on ``sock``, unbound and unconnected unless
    not ``fresh``."""
    if keypair.secret is None:
        raise ConfigurationError("a CURVE %s needs this host's secret "
                                 "key: load rpc_zmq_curve_key_file with "
                                 "load_keypair()" % role)
    if fresh:
        _unbound(sock, "configure_" + role)
    sock.curve_secretkey = keypair.secret
    sock.curve_publickey = keypair.public


def configure_server(sock: Any, keypair: KeyPair,
                     domain: str = DEFAULT_DOMAIN,
                     later_endpoints: bool = False) -> None:
    """Make ``sock`` (ROUTER or PULL) a CURVE server checked by ZAP.

    Call before ``bind`` and after ``ZapAuthenticator.start``.  Sets
    CURVE_SERVER, the key pair, ZAP_DOMAIN and, where libzmq has it,
    ZAP_ENFORCE_DOMAIN.  Raises ConfigurationError without a secret key.
    ``later_endpoints``: the socket may be bound or connected already;
    only the endpoints made from now on are CURVE (libzmq copies a
    socket's options into each endpoint as it is made).
    """
    _set_keys(sock, keypair, "server", fresh=not later_endpoints)
    sock.curve_server = True
    sock.zap_domain = domain.encode("utf-8")
    try:
        sock.setsockopt(ZAP_ENFORCE_DOMAIN, 1)
    except zmq.ZMQError:  # a libzmq older than 4.2.3
        LOG.warning("libzmq %s has no ZAP_ENFORCE_DOMAIN: a CURVE server "
                    "whose authenticator is not running would let peers in "
                    "unchecked; use libzmq 4.2.3 or later", zmq.zmq_version())


def configure_client(sock: Any, keypair: KeyPair, server_public: bytes
                     ) -> None:
    """Make ``sock`` (PUSH, DEALER...) a CURVE client of ``server_public``.

    Call before ``connect``; ``server_public`` is the Z85 key from
    ``keys.server_key_for(host, keys_dir)``.
    """
    _set_keys(sock, keypair, "client")
    sock.curve_serverkey = server_public


class ZapAuthenticator:
    """Serves ZAP requests of one context from ``allow_list``.

    ``start`` binds the ZAP endpoint (one handler per context) and runs the
    loop in a daemon thread; ``stop`` ends it within ``timeout``.
    ``on_refusal(decision, peer_address)`` runs in the loop thread for each
    refusal; its exceptions are logged, never fatal.  Counters are safe to
    read from any thread.  ``warn_every``: seconds between two log lines of
    one repeating monitor refusal (endpoint and reason); the next line says
    how many came in between (``WARN_EVERY`` by default).
    """

    def __init__(self, context: zmq.Context, allow_list: AllowList,
                 on_refusal: RefusalCallback | None = None,
                 domain: str = DEFAULT_DOMAIN,
                 poll_interval: float = 0.1,
                 warn_every: float = WARN_EVERY) -> None:
        self.context = context
        self.allow_list = allow_list
        self.on_refusal = on_refusal
        self.domain = domain.encode("utf-8")
        self.poll_interval = poll_interval
        self.warn_every = warn_every
        self._lock = threading.Lock()
        self._accepted = 0
        self._refused: dict[str, int] = {}
        self._warned: dict[tuple[str, str], tuple[float, int]] = {}
        #: monitor sockets not yet polled, with their on_connection
        self._pending: list[tuple[zmq.Socket, ConnectionCallback | None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._zap: zmq.Socket | None = None
        self._serial = 0

    @classmethod
    def from_settings(cls, context: zmq.Context, settings: config.Settings,
                      on_refusal: RefusalCallback | None = None
                      ) -> "ZapAuthenticator":
        """An authenticator for the allow list of ``settings``."""
        return cls(context, AllowList.from_settings(settings), on_refusal)

    # ------------------------------------------------------------ control --
    def start(self) -> None:
        """Bind the ZAP endpoint now and serve it in a daemon thread.

        Raises LocalError when another handler already serves the context.
        """
        if self._thread is not None:
            raise LocalError("ZapAuthenticator already started")
        # A plain socket even on a green context: the loop is a real thread.
        sock = zmqio.make_socket(self.context, zmq.REP, linger=0, native=True)
        try:
            sock.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            sock.close()
            if exc.errno == zmq.EADDRINUSE:
                raise LocalError("another ZAP handler already serves this "
                                 "ZeroMQ context; run one ZapAuthenticator "
                                 "per context") from exc
            raise
        self._zap = sock
        self._stop.clear()
        # Thread start is the memory barrier that hands the socket over.
        self._thread = self._start_thread()

    def _start_thread(self) -> Any:
        """Start the loop's thread; returns it (``join``, ``is_alive``)."""
        thread = threading.Thread(target=self._run, daemon=True,
                                  name="nova-rpc-zmq-zap")
        thread.start()
        return thread

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving and close the ZAP socket, waiting at most
        ``timeout`` seconds.  Afterwards CURVE handshakes on server sockets
        with ZAP_ENFORCE_DOMAIN fail (closed)."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout)
        if thread.is_alive():
            LOG.error("ZAP handler thread did not stop within %.1fs", timeout)
            return
        self._thread = None

    @property
    def running(self) -> bool:
        """True while the loop thread serves requests."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> "ZapAuthenticator":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def watch_server(self, sock: zmq.Socket,
                     on_connection: ConnectionCallback | None = None) -> None:
        """Count and log handshakes ``sock`` refuses before ZAP is asked
        (mechanism mismatch, wrong server key).  Call from the thread that
        owns ``sock``, before it binds; this takes over ``sock``'s monitor.

        ``on_connection(event)`` runs in the loop thread for each TCP
        connection ``sock`` accepts (``zmq.EVENT_ACCEPTED``) and each one
        closed, refused ones included (``zmq.EVENT_DISCONNECTED``), in
        order, none lost; its exceptions are logged, never fatal.
        """
        with self._lock:
            self._serial += 1
            addr = "inproc://nova-rpc-zmq.zap-monitor.%d.%d" % (id(self),
                                                                self._serial)
        events = _SERVER_EVENTS
        rcvhwm = None
        if on_connection is not None:
            # no bound on the reading side: a lost event would leave a
            # connection count wrong for good
            events |= CONNECTION_EVENTS
            rcvhwm = 0
        sock.monitor(addr, events)
        pair = zmqio.make_socket(sock.context, zmq.PAIR, linger=0,
                                 rcvhwm=rcvhwm, native=True)
        pair.connect(addr)
        with self._lock:
            self._pending.append((pair, on_connection))

    # ---------------------------------------------------------- counters --
    @property
    def accepted(self) -> int:
        """Handshakes allowed so far."""
        with self._lock:
            return self._accepted

    @property
    def refused(self) -> dict[str, int]:
        """Refused handshakes so far, by reason label (a copy)."""
        with self._lock:
            return dict(self._refused)

    def _warn_now_and_then(self, endpoint: str, reason: str,
                           why: str) -> None:
        key = (endpoint, reason)
        now = time.monotonic()
        with self._lock:
            last, held = self._warned.get(key, (-self.warn_every, 0))
            if now - last < self.warn_every:
                self._warned[key] = (last, held + 1)
                return
            self._warned[key] = (now, 0)
        LOG.warning("CURVE handshake refused on %s: %s (%s)%s", endpoint,
                    reason, why, " (%d more like it since the last report)"
                    % held if held else "")

    def _count_refusal(self, reason: str) -> None:
        with self._lock:
            self._refused[reason] = self._refused.get(reason, 0) + 1

    # --------------------------------------------------------------- loop --
    def _run(self) -> None:
        zap = self._zap
        assert zap is not None
        poller = zmq.Poller()
        poller.register(zap, zmq.POLLIN)
        monitors: dict[zmq.Socket, ConnectionCallback | None] = {}
        timeout_ms = max(1, int(self.poll_interval * 1000))
        try:
            while not self._stop.is_set():
                with self._lock:
                    fresh, self._pending = self._pending, []
                for pair, on_connection in fresh:
                    poller.register(pair, zmq.POLLIN)
                    monitors[pair] = on_connection
                ready = dict(poller.poll(timeout_ms))
                if zap in ready:
                    self._serve_batch(zap)
                for pair in [m for m in monitors if m in ready]:
                    if not self._read_monitor(pair, monitors[pair]):
                        poller.unregister(pair)
                        del monitors[pair]
                        pair.close()
        except zmq.ContextTerminated:
            LOG.info("ZAP handler stops: its context was terminated")
        except Exception:  # noqa: BLE001 - the loop must say why it died
            LOG.exception("ZAP handler loop failed; CURVE handshakes will "
                          "fail until it is restarted")
        finally:
            with self._lock:
                leftovers = [pair for pair, _ in self._pending]
                self._pending = []
            for sock in list(monitors) + leftovers + [zap]:
                sock.close(linger=0)
            self._zap = None

    def _serve_batch(self, zap: zmq.Socket) -> None:
        for _ in range(_MAX_BATCH):
            try:
                frames = zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                reply = self._answer(frames)
            except Exception:  # noqa: BLE001 - a REP must always reply
                LOG.exception("ZAP request could not be decided; refusing")
                self._count_refusal(INTERNAL_ERROR)
                reply = self._reply(frames[1] if len(frames) > 1 else b"",
                                    "500", INTERNAL_ERROR)
            zap.send_multipart(reply)

    @staticmethod
    def _reply(request_id: bytes, code: str, text: str,
               user_id: str = "") -> list[bytes]:
        return [ZAP_VERSION, request_id, code.encode("ascii"),
                text.encode("utf-8"), user_id.encode("utf-8"), b""]

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        request_id = frames[1] if len(frames) > 1 else b""
        if len(frames) < 6 or len(frames) > _MAX_FRAMES \
                or frames[0] != ZAP_VERSION:
            LOG.error("malformed ZAP request (%d frames, version %r); "
                      "refused", len(frames), frames[0][:8] if frames else b"")
            self._count_refusal(BAD_ZAP_REQUEST)
            return self._reply(request_id, "500", BAD_ZAP_REQUEST)
        _, _, domain, address, _identity, mechanism = frames[:6]
        credentials = frames[6:]
        peer = address.decode("utf-8", "replace") or "<unknown address>"
        if domain != self.domain:
            decision = Decision(False, "400", UNKNOWN_DOMAIN,
                                detail="ZAP domain %r is not %r" % (
                                    domain, self.domain))
        else:
            key = credentials[0] if mechanism == b"CURVE" and credentials \
                else b""
            decision = self.allow_list.check(mechanism, key)
        if decision.allowed:
            with self._lock:
                self._accepted += 1
            LOG.debug("ZAP: accepted %s from %s", decision.host, peer)
            return self._reply(request_id, decision.status_code,
                               decision.reason, decision.host or "")
        self._count_refusal(decision.reason)
        LOG.warning("CURVE handshake refused from %s: %s (%s, mechanism %s)",
                    peer, decision.reason, decision.detail or "-",
                    mechanism.decode("ascii", "replace"))
        self._notify(decision, peer)
        return self._reply(request_id, decision.status_code, decision.reason)

    def _notify(self, decision: Decision, peer: str) -> None:
        if self.on_refusal is None:
            return
        try:
            self.on_refusal(decision, peer)
        except Exception:  # noqa: BLE001 - a callback never kills the loop
            LOG.exception("on_refusal callback failed for %s", peer)

    @staticmethod
    def _hand_over(on_connection: ConnectionCallback, kind: int) -> None:
        try:
            on_connection(kind)
        except Exception:  # noqa: BLE001 - a callback never kills the loop
            LOG.exception("on_connection callback failed (event %d)", kind)

    def _read_monitor(self, pair: zmq.Socket,
                      on_connection: ConnectionCallback | None = None) -> bool:
        """Handle queued monitor events; False once the socket is gone."""
        for _ in range(_MAX_BATCH):
            try:
                event = recv_monitor_message(pair, zmq.NOBLOCK)
            except zmq.Again:
                return True
            except (ValueError, IndexError, zmq.ZMQError) as exc:
                LOG.error("unreadable monitor event dropped: %s", exc)
                continue
            kind, value = int(event["event"]), int(event["value"])
            endpoint = event["endpoint"].decode("utf-8", "replace")
            if kind == zmq.EVENT_MONITOR_STOPPED:
                return False
            if kind & CONNECTION_EVENTS:
                if on_connection is not None:
                    self._hand_over(on_connection, kind)
                continue
            if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                    reason, why = MECHANISM_MISMATCH, (
                        "a sender without CURVE (rpc_zmq_curve off there?) "
                        "or with another mechanism")
                elif value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
                    reason, why = BAD_HANDSHAKE, (
                        "a sender uses a wrong server key for this host: its "
                        "keys dir holds an old or foreign <host>.key")
                else:
                    reason, why = PROTOCOL_ERROR, "ZMTP error 0x%x" % value
                self._count_refusal(reason)
                self._warn_now_and_then(endpoint, reason, why)
                self._notify(Decision(False, "400", reason, detail=why),
                             endpoint)
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                # Also what a bare TCP probe produces: debug, not warning.
                self._count_refusal(HANDSHAKE_ABORTED)
                LOG.debug("handshake aborted on %s (errno %d)", endpoint,
                          value)
        return True



class NativeZapAuthenticator(ZapAuthenticator):
    """A ``ZapAuthenticator`` whose loop is a real OS thread, also in a
    monkey-patched process: it blocks in ``zmq_poll``, which would stop
    every green thread if it ran on the hub. Its lock and stop flag are
    the unpatched ones, since the loop thread uses them. For the CURVE
    servers of service and caller processes (the oslo.messaging driver's
    sockets, the legacy driver's direct path)."""

    def __init__(self, context: zmq.Context, allow_list: AllowList,
                 handler: concurrency.Handler) -> None:
        super().__init__(context, allow_list)
        real = concurrency.original("threading")
        self._lock = real.Lock()
        self._stop = real.Event()
        self._handler = handler

    def _start_thread(self) -> Any:
        """The loop's thread: a real OS thread, also when monkey-patched."""
        return self._handler.spawn_native(self._run)
