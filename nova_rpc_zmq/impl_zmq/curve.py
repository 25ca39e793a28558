"""The sender side of CURVE: keys on every outbound socket, and refusals
turned into errors that name the host and the reason.

Once a host's refusal is known, every call *and cast* to it raises that
``AuthenticationError`` at once (a cast used to be queued on a dead socket
and reported as sent); a caller waiting for a reply from a host that
refused us gets it at once instead of a Timeout. At most every
``RETRY_REFUSED`` seconds such a send also replaces the host's socket by an
empty one (libzmq gives up on a refused socket for good): its own
handshake tells whether the operator fixed the keys, and a success clears
the refusal, so sends resume without a restart.

Budget: with CURVE on, each peer socket has a handshake monitor (two more
sockets). With CURVE off there is nothing to authenticate; only the first
``PLAINTEXT_WATCHED_HOSTS`` peers are watched, so that a sender whose
``rpc_zmq_curve`` is off still learns at once that a receiver requires it,
without tripling the sockets of a controller that talks to thousands.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from nova_rpc_zmq.concurrency import Handler
from nova_rpc_zmq.errors import AuthenticationError
from nova_rpc_zmq.matchmaker.broker import BROKER

if TYPE_CHECKING:
    from nova_rpc_zmq.config import Settings

LOG = logging.getLogger(__name__)

#: Seconds between two fresh sockets to a host that refused us.
RETRY_REFUSED = 5.0
#: Peers watched with CURVE off (mechanism-mismatch diagnosis only).
PLAINTEXT_WATCHED_HOSTS = 32


class ClientSecurity:
    """CURVE client set-up and refusal tracking for one driver."""

    def __init__(self, settings: Settings, handler: Handler) -> None:
        from nova_rpc_zmq.security import HandshakeWatcher, KeyPair
        # with CURVE off a few peers are still watched: a receiver that
        # requires CURVE is then reported as a mechanism mismatch
        self.curve = bool(settings.rpc_zmq_curve)
        self.keypair = KeyPair.from_settings(settings) if self.curve else None
        self.keys_dir = settings.rpc_zmq_curve_keys_dir
        self.broker = settings.rpc_zmq_broker_ip
        self.watcher = HandshakeWatcher.from_settings(
            settings, handler, on_failure=self._on_failure)
        self.forget: Callable[[str], None] = lambda host: None
        #: replaces a host's socket by a new, empty one (Outbound.reopen)
        self.reopen: Callable[[str], None] | None = None
        self._watched_plain: set[str] = set()
        self._retry_at: dict[str, float] = {}
        self.on_refusal: Callable[[str, AuthenticationError], None] = \
            lambda host, error: None
        self.refusals = 0

    @classmethod
    def from_settings(cls, settings: Settings, handler: Handler
                      ) -> "ClientSecurity":
        return cls(settings, handler)

    def cert_name(self, host: str) -> str:
        """The name ``host``'s certificate is filed under: the broker's
        front end (``broker.BROKER``) is ``rpc_zmq_broker_ip``, as
        written in nova.conf (``<keys_dir>/<rpc_zmq_broker_ip>.key``)."""
        if host == BROKER and self.broker:
            return str(self.broker)
        return host

    def configure(self, sock: Any, host: str) -> None:
        """Set our key pair and ``host``'s server key on a new socket.

        Raises ConfigurationError when ``host`` has no public key file.
        """
        host = self.cert_name(host)
        if self.keypair is not None:  # CURVE on
            from nova_rpc_zmq.security import configure_client, server_key_for
            configure_client(sock, self.keypair,
                             server_key_for(host, self.keys_dir))
        elif host not in self._watched_plain:
            if len(self._watched_plain) >= PLAINTEXT_WATCHED_HOSTS:
                return   # one socket per peer: the budget of big fanouts
            self._watched_plain.add(host)
        self.watcher.watch(sock, host)

    def _on_failure(self, host: str, error: AuthenticationError) -> None:
        self.refusals += 1
        LOG.error("%s", error)
        self.on_refusal(host, error)
        if self.broker and host == self.broker:
            # calls sent through the broker wait on its front end
            self.on_refusal(BROKER, error)

    def check(self, host: str) -> None:
        """Before sending to ``host``: raise the AuthenticationError it
        refused us with, if any (see the module docstring for retries)."""
        failure = self.watcher.failure(self.cert_name(host))
        if failure is None:
            return
        if self.reopen is None:
            # no way to retry in the background: the old behaviour, a
            # fresh socket for this message
            self.forget(host)
            self.watcher.clear(self.cert_name(host))
            return
        now = time.monotonic()
        if now >= self._retry_at.get(host, 0.0):
            self._retry_at[host] = now + RETRY_REFUSED
            try:
                self.reopen(host)
            except Exception:  # noqa: BLE001 - the refusal is what we report
                LOG.exception("could not open a new socket to %s to retry "
                              "after its refusal", host)
        raise _fresh(failure)

    def failure(self, host: str) -> AuthenticationError | None:
        return self.watcher.failure(self.cert_name(host))

    def close(self) -> None:
        self.watcher.stop()


class DirectSecurity:
    """CURVE on the direct path (``remote.py``): its TCP sockets bypass
    the receivers, so they carry the receivers' protection themselves.

    * The direct PULL of a consumer and a caller's direct reply PULL are
      CURVE servers with this host's key pair (``serve``, before their TCP
      bind), checked by one ZAP handler in this process (started with the
      first, a real OS thread also in a green process) that admits the
      keys of ``rpc_zmq_curve_keys_dir``, as the receiver does. libzmq
      takes a socket's options when it binds or connects an endpoint, so
      a consumer socket's IPC endpoints, made before, stay as they were.
    * Each PUSH to a direct peer is a CURVE client with our key pair and
      the peer host's certificate as server key (``client``), the file a
      receiver of that host is reached with.

    A peer that refuses our handshake, or one we have no certificate of,
    never gets a pipe (``ZMQ_IMMEDIATE``): its messages take the
    receivers' path, where a refusal is reported as ever.
    """

    def __init__(self, settings: Settings, handler: Handler, ctx: Any,
                 client: ClientSecurity) -> None:
        from nova_rpc_zmq.security import AllowList
        if client.keypair is None:
            raise ValueError("DirectSecurity needs rpc_zmq_curve on")
        self.handler = handler
        self.ctx = ctx
        self.keypair = client.keypair
        self.keys_dir = client.keys_dir
        self.cert_name = client.cert_name
        # raises ConfigurationError naming rpc_zmq_curve_keys_dir
        self.allow_list = AllowList.from_settings(settings)
        self._lock = handler.Lock()
        self._auth: Any = None

    def serve(self, sock: Any) -> None:
        """Make ``sock`` a CURVE server for the endpoints it binds from
        now on. Call from the thread that owns ``sock``."""
        from nova_rpc_zmq.security import (NativeZapAuthenticator,
                                           configure_server)
        with self._lock:
            if self._auth is None:
                self._auth = NativeZapAuthenticator(self.ctx, self.allow_list,
                                                    self.handler)
                self._auth.start()
            auth = self._auth
        # a consumer's socket has its IPC endpoints already: they stay
        configure_server(sock, self.keypair, later_endpoints=True)
        # counts and logs what ZAP never sees (a stale copy of our key)
        auth.watch_server(sock)

    def client(self, sock: Any, host: str) -> None:
        """Make ``sock``, an unconnected PUSH, a CURVE client of ``host``.

        Raises ConfigurationError when the keys dir has no usable
        certificate of ``host``.
        """
        from nova_rpc_zmq.security import configure_client, server_key_for
        configure_client(sock, self.keypair,
                         server_key_for(self.cert_name(host), self.keys_dir))

    @property
    def refused(self) -> dict[str, int]:
        """Handshakes our direct sockets refused so far, by reason."""
        auth = self._auth
        return auth.refused if auth is not None else {}

    def close(self) -> None:
        """Stop the ZAP handler (after the sockets it serves are closed)."""
        with self._lock:
            auth, self._auth = self._auth, None
        if auth is not None:
            auth.stop()


def _fresh(failure: AuthenticationError) -> AuthenticationError:
    """A new exception like ``failure``: raising one stored instance again
    and again would grow its traceback with every send."""
    from nova_rpc_zmq.security.monitor import HandshakeFailure
    if isinstance(failure, HandshakeFailure):
        return HandshakeFailure(failure.host, failure.label, failure.reason,
                                failure.event, failure.value)
    return AuthenticationError(failure.host, failure.reason)
