"""CURVE encryption and authentication of the TCP hop between hosts.

Off unless ``rpc_zmq_curve = true``.  Then every host has:

* ``rpc_zmq_curve_key_file``: its own key pair (mode 0600), made by
  ``nova-rpc-zmq keys generate``;
* ``rpc_zmq_curve_keys_dir``: one public certificate ``<host>.key`` per
  host it talks to (``nova-rpc-zmq keys show`` output of that host).  The
  receiver allows exactly these keys; a sender reaching host H uses
  ``<keys_dir>/H.key`` as H's server key.

Who does what:

* receiver: ``ZapAuthenticator(ctx, AllowList(keys_dir)).start()`` before
  ``configure_server(sock, KeyPair.from_settings(s))`` and ``bind``;
  ``auth.watch_server(sock, on_connection=...)`` to count mechanism and
  key mismatches too, and to hand the socket's connection events to the
  receiver's connection count (the socket's one monitor; see ``zap``);
* sender: ``configure_client(sock, my_pair, server_key_for(H, keys_dir))``
  and ``watcher.watch(sock, H)`` before ``connect``; ``watcher.failure(H)``
  or ``on_failure`` say why H refused us (see ``monitor``).

Modules: ``keys`` (files), ``policy`` (the allow list, no sockets),
``zap`` (the ZAP loop and socket set-up), ``monitor`` (sender side).
"""

from nova_rpc_zmq.security.keys import (KeyPair, curve_keypair, generate,
                                        load_keypair, load_public,
                                        server_key_for, write_keypair,
                                        write_public)
from nova_rpc_zmq.security.monitor import HandshakeFailure, HandshakeWatcher
from nova_rpc_zmq.security.policy import AllowList, Decision
from nova_rpc_zmq.security.zap import (DEFAULT_DOMAIN, NativeZapAuthenticator,
                                       ZapAuthenticator, configure_client,
                                       configure_server)

__all__ = [
    "AllowList", "DEFAULT_DOMAIN", "Decision", "HandshakeFailure",
    "HandshakeWatcher", "KeyPair", "NativeZapAuthenticator",
    "ZapAuthenticator", "configure_client",
    "configure_server", "curve_keypair", "generate", "load_keypair",
    "load_public", "server_key_for", "write_keypair", "write_public",
]
