"""The sender side of CURVE: keys on every outbound socket, and refusals
turned into errors that name the host and the reason.

A receiver that refuses our key makes libzmq give up on that socket for
good, so the next send to that host replaces the socket (the operator may
have fixed the keys meanwhile); a caller waiting for a reply from a host
that refused us gets the ``AuthenticationError`` at once instead of a
Timeout.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from nova_rpc_zmq.errors import AuthenticationError

LOG = logging.getLogger(__name__)


class ClientSecurity:
    """CURVE client set-up and refusal tracking for one driver."""

    def __init__(self, settings: Any, handler: Any) -> None:
        from nova_rpc_zmq.security import HandshakeWatcher, KeyPair
        # with CURVE off we still watch handshakes: a receiver that
        # requires CURVE is then reported as a mechanism mismatch
        self.curve = bool(settings.rpc_zmq_curve)
        self.keypair = KeyPair.from_settings(settings) if self.curve else None
        self.keys_dir = settings.rpc_zmq_curve_keys_dir
        self.watcher = HandshakeWatcher.from_settings(
            settings, handler, on_failure=self._on_failure)
        self.forget: Callable[[str], None] = lambda host: None
        self.on_refusal: Callable[[str, AuthenticationError], None] = \
            lambda host, error: None
        self.refusals = 0

    @classmethod
    def from_settings(cls, settings: Any, handler: Any) -> "ClientSecurity":
        return cls(settings, handler)

    def configure(self, sock: Any, host: str) -> None:
        """Set our key pair and ``host``'s server key on a new socket.

        Raises ConfigurationError when ``host`` has no public key file.
        """
        if self.curve:
            from nova_rpc_zmq.security import configure_client, server_key_for
            configure_client(sock, self.keypair,
                             server_key_for(host, self.keys_dir))
        self.watcher.watch(sock, host)

    def _on_failure(self, host: str, error: AuthenticationError) -> None:
        self.refusals += 1
        LOG.error("%s", error)
        self.on_refusal(host, error)

    def check(self, host: str) -> None:
        """Before sending to ``host``: replace a socket it refused."""
        if self.watcher.failure(host) is not None:
            self.forget(host)
            self.watcher.clear(host)

    def failure(self, host: str) -> AuthenticationError | None:
        return self.watcher.failure(host)

    def close(self) -> None:
        self.watcher.stop()
