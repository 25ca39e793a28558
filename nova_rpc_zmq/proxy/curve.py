"""CURVE on a proxy's sockets (``[oslo_messaging_zmq] rpc_zmq_curve =
true`` in the proxy's file): the same key options as the services.

* ``rpc_zmq_curve_key_file``: the proxy's key pair;
  ``rpc_zmq_curve_keys_dir``: one public certificate ``<host>.key`` per
  host that may connect, as for a service's inbound sockets.
* The frontend, the backend and the publisher of a router proxy, and the
  PUB socket of a local publisher, are CURVE servers with the proxy's key
  pair. One ZAP authenticator on the proxy's context admits exactly the
  keys of the keys dir (``AllowList``: it follows the directory, so a key
  added there is let in without a restart). What it refuses is logged
  with the peer's address (the ZAP loop's words) and counted by reason:
  ``nova_rpc_zmq_proxy_curve_refused_total{reason}``, the shape of the
  receiver's family.
* A local publisher's SUB socket to each central publisher is a CURVE
  client of that publisher: its server key is ``<keys_dir>/<host>.key``,
  ``host`` being the name that publisher announces in the matchmaker.

Services find the proxy's certificate the same way: a proxy announcing
``--host node-1`` (or ``[zmq_proxy_opts] host``, default its
``rpc_zmq_host``) is ``<keys_dir>/node-1.key`` on every service host; one
announcing an IP address is ``<keys_dir>/<that address>.key``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import zmq

from nova_rpc_zmq.errors import ConfigurationError
from nova_rpc_zmq.metrics import Family, metric_name
from nova_rpc_zmq.receiver.exposition import CURVE_REFUSALS
from nova_rpc_zmq.security import (AllowList, KeyPair, ZapAuthenticator,
                                   configure_client, configure_server,
                                   curve_keypair, server_key_for)

LOG = logging.getLogger(__name__)

#: Seconds ``close`` waits for the ZAP and handshake loops to end.
STOP_WAIT = 2.0


class ProxyCurveError(Exception):
    """The proxy's CURVE settings cannot be used (one line with the fix)."""


class ProxyCurve:
    """The CURVE set-up of one proxy process: its key pair, the allow list
    of its keys dir and its ZAP authenticator.

    Used by the proxy's loop thread only (``serve`` and ``before_connect``
    before the sockets bind or connect); the counters are read from the health
    thread. ``close`` after the sockets are closed, before the context is
    terminated.
    """

    def __init__(self, keypair: KeyPair, keys_dir: str, host: str) -> None:
        self.keypair = keypair
        self.keys_dir = keys_dir
        self.host = host
        # raises ConfigurationError naming the keys dir
        self.allow_list = AllowList(keys_dir)
        self._auth: ZapAuthenticator | None = None

    @classmethod
    def from_options(cls, zconf: Any, host: str) -> "ProxyCurve | None":
        """The set-up ``zconf`` (``[oslo_messaging_zmq]``, a mapping or
        an option group) asks for, None with CURVE off. ``host`` is the
        name the proxy announces. Raises ProxyCurveError naming the
        option and the file."""
        if not zconf["rpc_zmq_curve"]:
            return None
        try:
            keypair = curve_keypair(zconf["rpc_zmq_curve_key_file"])
        except ConfigurationError as exc:
            raise ProxyCurveError("[oslo_messaging_zmq] %s" % exc) from None
        try:
            return cls(keypair, zconf["rpc_zmq_curve_keys_dir"], host)
        except ConfigurationError as exc:
            raise ProxyCurveError("[oslo_messaging_zmq] "
                                  "rpc_zmq_curve_keys_dir: %s" % exc) \
                from None

    def serve(self, ctx: Any, sock: Any,
              on_connection: Callable[[int], None] | None = None) -> None:
        """Make ``sock``, an unbound socket of ``ctx``, a CURVE server that
        admits the keys of the keys dir. Takes over its monitor:
        ``on_connection(event)`` gets its ACCEPTED and DISCONNECTED
        events (in the ZAP thread)."""
        if self._auth is None:
            self._auth = ZapAuthenticator(ctx, self.allow_list)
            self._auth.start()
        configure_server(sock, self.keypair)
        self._auth.watch_server(sock, on_connection=on_connection)

    def before_connect(self, sock: Any, host: str) -> None:
        """Make ``sock`` a CURVE client of ``host`` for its next
        ``connect`` (the server key is taken at each connect, so one SUB
        may reach several publishers). Raises ConfigurationError naming
        ``<keys_dir>/<host>.key`` when it is missing or malformed."""
        server_key = server_key_for(host, self.keys_dir)
        if not sock.getsockopt(zmq.LAST_ENDPOINT):
            configure_client(sock, self.keypair, server_key)
        else:
            sock.curve_serverkey = server_key

    @property
    def accepted(self) -> int:
        return self._auth.accepted if self._auth is not None else 0

    @property
    def refused(self) -> dict[str, int]:
        """Handshakes refused so far, by reason (every reason shown)."""
        counts = dict.fromkeys(CURVE_REFUSALS, 0)
        if self._auth is not None:
            for reason, n in self._auth.refused.items():
                key = reason.replace(" ", "_")
                counts[key] = counts.get(key, 0) + n
        return counts

    def families(self) -> list[Family]:
        """``curve_accepted_total`` and ``curve_refused_total{reason}``."""
        refused = Family(metric_name("proxy", "curve_refused_total"),
                         "counter", "CURVE handshakes refused, by reason.")
        for reason, n in sorted(self.refused.items()):
            refused.add(n, reason=reason)
        return [Family(metric_name("proxy", "curve_accepted_total"),
                       "counter", "CURVE handshakes accepted.")
                .add(self.accepted), refused]

    def close(self) -> None:
        """Stop the ZAP loop (servers refuse every handshake afterwards)."""
        if self._auth is not None:
            self._auth.stop(STOP_WAIT)
