"""Tell a sender *why* a receiver refused it, instead of a silent timeout.

A CURVE handshake that fails leaves a PUSH socket queueing messages that
will never leave.  ``HandshakeWatcher`` reads the socket monitor of every
watched sender socket and turns handshake events into an
``AuthenticationError`` naming the host and the reason, available from
``failure(host)`` and pushed to ``on_failure(host, error)`` so the driver
can wake the callers waiting on that host at once.

What the CLIENT side sees, measured with libzmq 4.3.5 / pyzmq 27 on
loopback (PUSH->PULL and DEALER->ROUTER behave alike):

* key listed on the receiver: HANDSHAKE_SUCCEEDED.
* client key not in the receiver's keys dir: HANDSHAKE_FAILED_AUTH with
  value 400 (the ZAP status code), then DISCONNECTED.  libzmq does not
  reconnect that socket, not even once the key is added.
* wrong server key (a stale or foreign ``<keys_dir>/H.key``):
  HANDSHAKE_FAILED_NO_DETAIL, value 32 (EPIPE).  The server cannot decrypt
  the client's HELLO and hangs up (it sees HANDSHAKE_FAILED_PROTOCOL
  0x11000001, cryptographic); libzmq reconnects and fails again about
  every 100 ms.  No ZAP request is made.
* receiver without its ZAP handler (ZAP_ENFORCE_DOMAIN set): the same
  repeating NO_DETAIL 32, so the same words, naming this cause too.
* NULL or PLAIN client against a CURVE receiver, and CURVE client against
  a NULL receiver: the two greetings cross, and whichever side reads the
  other's first reports HANDSHAKE_FAILED_PROTOCOL 0x11000002 (mechanism
  mismatch) while the other sees NO_DETAIL 32 (EPIPE).  Over 20 runs each
  side won about half of the races on an idle machine, but on a loaded
  one the receiver can win every retry.  A client that saw the mismatch
  stops for good; one that saw NO_DETAIL reconnects and may never see it.
  So a NULL client's NO_DETAIL is reported as 'mechanism mismatch', and
  a CURVE client's NO_DETAIL is settled by reading the receiver's
  greeting (``greeting.probe_mechanism``): NULL or PLAIN there means
  'mechanism mismatch', CURVE means 'wrong server key' (or no
  authenticator), and no answer leaves 'wrong server key' naming every
  cause.  The probe runs once per host every ``PROBE_EVERY`` seconds at
  most, however often libzmq retries.
* receiver down: no handshake event at all (only CONNECT_RETRIED): not a
  failure here; the liveness layer's job.

Two consequences for the driver: after an AUTH or mismatch failure the
socket is dead for good (close it and make a new one after fixing the
keys; call ``clear(host)`` then), and a NO_DETAIL failure keeps retrying
on its own, so a later HANDSHAKE_SUCCEEDED clears the failure.  Revoking
a key on the receiver does not cut connections already established.

The loop runs through the concurrency seam: a green thread polling without
blocking the hub, or a native thread blocking in ``zmq.Poller.poll``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any, Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from nova_rpc_zmq import concurrency, zmqio
from nova_rpc_zmq.errors import AuthenticationError, LocalError
from nova_rpc_zmq.security.greeting import probe_mechanism

if TYPE_CHECKING:
    from nova_rpc_zmq import config

LOG = logging.getLogger(__name__)

#: Short labels, the first words of every reason and the counter names.
NO_MATCHING_KEY = "no matching key"
MECHANISM_MISMATCH = "mechanism mismatch"
WRONG_SERVER_KEY = "wrong server key"
AUTHENTICATOR_FAILED = "authenticator failed"
TEMPORARY_REFUSAL = "temporary refusal"
PROTOCOL_ERROR = "protocol error"
HANDSHAKE_FAILED = "handshake failed"

WATCHED_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED
                  | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                  | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                  | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                  | zmq.EVENT_MONITOR_STOPPED)
_MAX_BATCH = 100
#: Seconds between two greeting probes of one host (see ``_record``).
PROBE_EVERY = 10.0

FailureCallback = Callable[[str, AuthenticationError], None]


class HandshakeFailure(AuthenticationError):
    """A handshake with ``host`` failed; ``label`` is the short reason,
    ``event`` / ``value`` the libzmq monitor event that told us."""

    def __init__(self, host: str, label: str, reason: str, event: int,
                 value: int) -> None:
        self.label = label
        self.event = event
        self.value = value
        super().__init__(host, reason)


def explain(event: int, value: int, host: str, mechanism: int,
            keys_dir: str | None = None, local_host: str | None = None,
            peer_mechanism: str | None = None) -> tuple[str, str] | None:
    """``(label, plain-words reason)`` for a client-side monitor event, or
    None when the event is no failure.  ``mechanism`` is the client
    socket's ``zmq.MECHANISM`` (zmq.NULL, zmq.PLAIN, zmq.CURVE);
    ``peer_mechanism`` what the receiver greets with, when a probe learnt
    it (``probe_mechanism``).  Pure."""
    me = local_host or "this host"
    cert = os.path.join(keys_dir or "<rpc_zmq_curve_keys_dir>",
                        host + ".key")
    curve = mechanism == zmq.CURVE
    sender_off = ("%s: %s requires CURVE but this sender has rpc_zmq_curve "
                  "off; set rpc_zmq_curve = true here" % (MECHANISM_MISMATCH,
                                                          host))
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        if not curve:
            return MECHANISM_MISMATCH, sender_off
        if value == 400:
            return NO_MATCHING_KEY, (
                "%s: the receiver on %s does not list %s's public key in its "
                "keys dir; copy the output of `nova-rpc-zmq keys show` on %s "
                "into %s's rpc_zmq_curve_keys_dir as %s.key"
                % (NO_MATCHING_KEY, host, me, me, host,
                   local_host or "<this host>"))
        if value == 300:
            return TEMPORARY_REFUSAL, ("%s: %s's authenticator asked to try "
                                       "again later (ZAP 300)"
                                       % (TEMPORARY_REFUSAL, host))
        return AUTHENTICATOR_FAILED, (
            "%s: %s's authenticator could not decide (ZAP %d), e.g. its keys "
            "dir is unreadable; see the receiver log on %s"
            % (AUTHENTICATOR_FAILED, host, value, host))
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            if not curve:
                return MECHANISM_MISMATCH, sender_off
            return MECHANISM_MISMATCH, (
                "%s: this sender uses CURVE but %s does not (rpc_zmq_curve is "
                "off on %s); turn it on there or off here"
                % (MECHANISM_MISMATCH, host, host))
        if value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
            return WRONG_SERVER_KEY, _wrong_key(host, cert)
        return PROTOCOL_ERROR, ("%s in the handshake with %s (ZMTP error "
                                "0x%x)" % (PROTOCOL_ERROR, host, value))
    if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        # The peer hung up mid-handshake.  A NULL/PLAIN handshake only
        # fails that way against a CURVE receiver; a CURVE one mostly
        # because our server key is wrong (see the table above).
        if curve and peer_mechanism not in (None, "CURVE"):
            return MECHANISM_MISMATCH, (
                "%s: this sender uses CURVE but %s does not (it greets "
                "with %s: rpc_zmq_curve is off on %s); turn it on there or "
                "off here" % (MECHANISM_MISMATCH, host, peer_mechanism, host))
        if curve:
            return WRONG_SERVER_KEY, _wrong_key(
                host, cert, hung_up=True,
                peer_curve=peer_mechanism == "CURVE")
        if mechanism in (zmq.NULL, zmq.PLAIN):
            return MECHANISM_MISMATCH, (
                "%s: %s hung up during the handshake, as a receiver that "
                "requires CURVE does when this sender has rpc_zmq_curve off; "
                "set rpc_zmq_curve = true here" % (MECHANISM_MISMATCH, host))
        return HANDSHAKE_FAILED, ("%s: %s hung up during the handshake "
                                  "(errno %d)" % (HANDSHAKE_FAILED, host,
                                                  value))
    return None


def _wrong_key(host: str, cert: str, hung_up: bool = False,
               peer_curve: bool = False) -> str:
    also = ""
    if hung_up:
        also = (" (%s hung up during the handshake; less likely causes: its "
                "receiver runs without its authenticator%s)"
                % (host, "" if peer_curve else ", or without CURVE"))
    return ("%s for %s: the key in %s does not match %s's key pair%s; copy "
            "%s's current `nova-rpc-zmq keys show` output to %s"
            % (WRONG_SERVER_KEY, host, cert, host, also, host, cert))


class _Watched:
    """One monitored socket: its monitor PAIR, host and mechanism."""

    __slots__ = ("pair", "host", "mechanism")

    def __init__(self, pair: Any, host: str, mechanism: int) -> None:
        self.pair = pair
        self.host = host
        self.mechanism = mechanism


class HandshakeWatcher:
    """Watches sender sockets' handshakes and remembers failures per host.

    ``handler`` is a concurrency handler (``concurrency.get_handler()`` by
    default) runs the loop: with a green one it polls without blocking and
    pauses in the hub.  Monitor sockets are made on each watched socket's
    context.  ``on_failure(host, error)`` runs in
    the loop for each new failure (not for repeats of the same one); its
    exceptions are logged.  All methods are safe from any thread or green
    thread.
    """

    def __init__(self, handler: concurrency.Handler | None = None,
                 keys_dir: str | None = None,
                 on_failure: FailureCallback | None = None,
                 local_host: str | None = None,
                 poll_interval: float = 0.05,
                 probe_timeout: float = 1.0) -> None:
        self.handler = handler or concurrency.get_handler()
        self.keys_dir = keys_dir
        self.on_failure = on_failure
        self.local_host = local_host
        self.poll_interval = poll_interval
        self.probe_timeout = probe_timeout
        self._green = self.handler.green
        self._lock = self.handler.Lock()
        self._pending: list[_Watched] = []
        self._failures: dict[str, HandshakeFailure] = {}
        self._counts: dict[str, int] = {}
        self._probed: dict[str, float] = {}
        self._serial = 0
        self._stop = self.handler.Event()
        self._stopped = self.handler.Event()
        self._started = False

    @classmethod
    def from_settings(cls, settings: config.Settings,
                      handler: concurrency.Handler | None = None,
                      on_failure: FailureCallback | None = None
                      ) -> "HandshakeWatcher":
        """A watcher whose messages name the settings' keys dir and host."""
        return cls(handler, keys_dir=settings.rpc_zmq_curve_keys_dir,
                   on_failure=on_failure, local_host=settings.rpc_zmq_host)

    # ------------------------------------------------------------- public --
    def watch(self, sock: Any, host: str) -> None:
        """Watch the handshakes of ``sock``, a sender socket to ``host``.

        Call from the thread that owns ``sock``, after its CURVE options
        are set and before ``connect`` (so no event is missed).  Takes over
        the socket's monitor; closing the socket ends the watch.  Raises
        LocalError after ``stop``.
        """
        if self._stop.is_set():
            raise LocalError("this HandshakeWatcher was stopped; make a new "
                             "one")
        with self._lock:
            self._serial += 1
            addr = "inproc://nova-rpc-zmq.handshake.%d.%d" % (id(self),
                                                              self._serial)
            start = not self._started
            self._started = True
        mechanism = sock.getsockopt(zmq.MECHANISM)
        sock.monitor(addr, WATCHED_EVENTS)
        pair = zmqio.make_socket(sock.context, zmq.PAIR, linger=0)
        pair.connect(addr)
        with self._lock:
            self._pending.append(_Watched(pair, host, mechanism))
        if start:
            self.handler.spawn(self._run)

    def failure(self, host: str) -> AuthenticationError | None:
        """The latest handshake failure with ``host`` since its last
        success, or None."""
        with self._lock:
            return self._failures.get(host)

    def failures(self) -> dict[str, AuthenticationError]:
        """Every host's current failure (a copy)."""
        with self._lock:
            return dict(self._failures)

    def clear(self, host: str) -> None:
        """Forget ``host``'s failure (e.g. after replacing its socket)."""
        with self._lock:
            self._failures.pop(host, None)
            self._probed.pop(host, None)

    @property
    def counts(self) -> dict[str, int]:
        """Handshake failure events seen, by label (a copy; repeats count)."""
        with self._lock:
            return dict(self._counts)

    def stop(self, timeout: float = 2.0) -> None:
        """End the loop and close the monitor sockets, waiting at most
        ``timeout`` seconds."""
        self._stop.set()
        with self._lock:
            started = self._started
        if started and not self._stopped.wait(timeout):
            LOG.error("handshake watcher did not stop within %.1fs", timeout)

    # --------------------------------------------------------------- loop --
    def _run(self) -> None:
        poller = zmq.Poller()
        watched: dict[Any, _Watched] = {}
        wait_ms = 0 if self._green else max(1, int(self.poll_interval * 1000))
        try:
            while not self._stop.is_set():
                with self._lock:
                    fresh, self._pending = self._pending, []
                for item in fresh:
                    poller.register(item.pair, zmq.POLLIN)
                    watched[item.pair] = item
                ready = dict(poller.poll(wait_ms)) if watched else {}
                for pair in [p for p in watched if p in ready]:
                    if not self._drain(watched[pair]):
                        poller.unregister(pair)
                        del watched[pair]
                        pair.close()
                if not ready and (self._green or not watched):
                    # Green: yield to the hub; native: nothing to poll yet.
                    self.handler.sleep(self.poll_interval)
        except zmq.ContextTerminated:
            LOG.info("handshake watcher stops: its context was terminated")
        except Exception:  # noqa: BLE001 - the loop must say why it died
            LOG.exception("handshake watcher loop failed; handshake "
                          "failures will go unreported")
        finally:
            with self._lock:
                leftovers = [w.pair for w in self._pending]
                self._pending = []
            for pair in list(watched) + leftovers:
                pair.close(linger=0)
            self._stopped.set()

    def _drain(self, item: _Watched) -> bool:
        """Handle queued events of one socket; False once it is closed."""
        for _ in range(_MAX_BATCH):
            try:
                event = recv_monitor_message(item.pair, zmq.NOBLOCK)
            except zmq.Again:
                return True
            except (ValueError, IndexError) as exc:
                LOG.error("unreadable monitor event for %s dropped: %s",
                          item.host, exc)
                continue
            kind, value = int(event["event"]), int(event["value"])
            if kind == zmq.EVENT_MONITOR_STOPPED:
                return False
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                with self._lock:
                    self._failures.pop(item.host, None)
                    self._probed.pop(item.host, None)
                continue
            self._record(item, kind, value,
                         event["endpoint"].decode("utf-8", "replace"))
        return True

    def _record(self, item: _Watched, kind: int, value: int,
                endpoint: str = "") -> None:
        curve_hang_up = (kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                         and item.mechanism == zmq.CURVE)
        now = time.monotonic()
        with self._lock:
            previous = self._failures.get(item.host)
            if curve_hang_up and previous is not None \
                    and previous.event == kind \
                    and item.host in self._probed \
                    and now - self._probed[item.host] < PROBE_EVERY:
                # A retry of a hang-up explained (and probed) just now.
                self._counts[previous.label] += 1
                return
        peer = None
        if curve_hang_up and endpoint:
            # Our monitor cannot tell a wrong server key from a receiver
            # without CURVE (see greeting.py); its greeting can.
            peer = probe_mechanism(endpoint, self.handler.sleep,
                                   self.probe_timeout)
            with self._lock:
                self._probed[item.host] = time.monotonic()
        found = explain(kind, value, item.host, item.mechanism,
                        self.keys_dir, self.local_host, peer_mechanism=peer)
        if found is None:
            return
        label, reason = found
        error = HandshakeFailure(item.host, label, reason, kind, value)
        with self._lock:
            self._counts[label] = self._counts.get(label, 0) + 1
            self._failures[item.host] = error
        if previous is not None and previous.label == label:
            return  # a retry of the same failure: already reported
        LOG.error("handshake with %s failed: %s", item.host, reason)
        if self.on_failure is not None:
            try:
                self.on_failure(item.host, error)
            except Exception:  # noqa: BLE001 - never kill the loop
                LOG.exception("on_failure callback failed for %s", item.host)
