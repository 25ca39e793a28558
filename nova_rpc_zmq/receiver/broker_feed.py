"""The broker's fanout into a receiver (``rpc_zmq_matchmaker = broker``).

The Nova-era broker (``nova-rpc-zmq-proxy --legacy-broker``) publishes
every fanout it gets on ``tcp://<rpc_zmq_broker_ip>:<rpc_zmq_start_port +
2>`` (9502). Each receiver subscribes there and hands what arrives to its
own inbound socket, through an in-process endpoint that socket also binds,
so a fanout from the broker is read, checked (``wire.decode``, hostile
input) and routed exactly as one that came over the receiver's TCP port:
the routing loop does not know the difference.

A thread of its own runs libzmq's steerable proxy (SUB -> PUSH, no Python
per message); ``close`` terminates it through the control socket.

With ``rpc_zmq_curve = true`` (``settings``) the SUB is a CURVE client of
the broker's publisher: this host's key pair, and the broker's certificate
``<rpc_zmq_curve_keys_dir>/<rpc_zmq_broker_ip>.key``, as callers name it.
A missing certificate fails the receiver's start naming that file; a
refused handshake is logged by a handshake watcher with the file to fix
(the receiver subscribes again when it restarts).
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import Any

import zmq

from nova_rpc_zmq import netaddr
from nova_rpc_zmq.concurrency import get_handler
from nova_rpc_zmq.security import (HandshakeWatcher, KeyPair,
                                   configure_client, server_key_for)

LOG = logging.getLogger(__name__)

_SEQ = itertools.count()
#: High-water mark of the subscription (messages held before the broker's
#: PUB drops for this receiver).
SUB_HWM = 10000


class BrokerFeed:
    """SUB to the broker's publisher, PUSH into ``inbound``."""

    def __init__(self, ctx: Any, inbound: Any, broker: str, port: int,
                 max_msg_size: int, settings: Any = None) -> None:
        self.endpoint = netaddr.tcp_endpoint(broker, port)
        self._watcher: HandshakeWatcher | None = None
        # before anything is bound: a missing certificate leaks nothing
        keys = _curve_keys(settings, broker)
        name = "inproc://nova-rpc-zmq-broker-feed-%d" % next(_SEQ)
        inbound.bind(name)
        self._sub = ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.RCVHWM, SUB_HWM)
        self._sub.setsockopt(zmq.MAXMSGSIZE, max_msg_size)
        self._sub.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        if self.endpoint.startswith("tcp://["):
            self._sub.setsockopt(zmq.IPV6, 1)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        if keys is not None:
            configure_client(self._sub, *keys)
            self._watcher = HandshakeWatcher.from_settings(
                settings, get_handler("threading"))
            self._watcher.watch(self._sub, broker)
        self._push = ctx.socket(zmq.PUSH)
        self._push.setsockopt(zmq.LINGER, 0)
        self._push.connect(name)
        control = "inproc://nova-rpc-zmq-broker-feed-control-%d" % next(_SEQ)
        self._control_in = ctx.socket(zmq.PAIR)
        self._control_in.bind(control)
        self._control = ctx.socket(zmq.PAIR)
        self._control.setsockopt(zmq.LINGER, 0)
        self._control.connect(control)
        self._sub.connect(self.endpoint)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="broker-feed")
        self._thread.start()
        LOG.info("subscribed to the broker's fanout at %s", self.endpoint)

    def _run(self) -> None:
        try:
            zmq.proxy_steerable(self._sub, self._push, None, self._control_in)
        except zmq.ZMQError as exc:
            if exc.errno not in (zmq.ETERM, zmq.ENOTSOCK):
                LOG.error("the broker feed stopped: %s", exc)

    def close(self) -> None:
        """End the proxy thread and close its sockets."""
        try:
            self._control.send(b"TERMINATE")
        except zmq.ZMQError:
            pass
        self._thread.join(5.0)
        for sock in (self._sub, self._push, self._control_in, self._control):
            sock.close(0)
        if self._watcher is not None:
            self._watcher.stop()


def _curve_keys(settings: Any, broker: str) -> tuple[KeyPair, bytes] | None:
    """Our key pair and the broker's public key with CURVE on, else None.
    Raises ConfigurationError naming the file."""
    if settings is None or not settings.rpc_zmq_curve:
        return None
    return (KeyPair.from_settings(settings),
            server_key_for(broker, settings.rpc_zmq_curve_keys_dir))
