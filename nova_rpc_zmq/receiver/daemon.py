"""The receiver: the only TCP listener of a host.

It reads every inbound message on ``tcp://<bind>:<rpc_zmq_port>``, checks it
as hostile input, and forwards the frames unchanged to
``ipc://<rpc_zmq_ipc_dir>/zmq_topic_<topic>``. This module starts and stops
it; the parts it is made of each do one job:

- ``loop.py``: the routing loop (one native thread, one poll loop; TCP input
  is never paused), and drain/reload acted on in the loop's thread;
- ``topics.py``: the topic sockets and their bounded backlogs, fanout
  cut-offs, drops (counted, logged as summaries by ``droplog.py``);
- ``connections.py``: the TCP peers connected, from a socket monitor;
- ``health.py``, ``exposition.py``: the health page and ``/metrics``.

The loop notes when it last turned; the health page says 503 when it has
not for ``rpc_zmq_health_stuck_after`` seconds. ``drain()`` (SIGTERM) stops
accepting, hands what the receiver holds to the local consumers for at
most ``rpc_zmq_drain_timeout`` seconds, then ends ``run()``;
``request_reload()`` (SIGHUP) runs ``on_reload`` (or ``reload()``) in the
loop's own thread at its next turn. A lock file in ``rpc_zmq_ipc_dir``,
held while the receiver runs, keeps a second receiver from taking over the
first one's sockets.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Callable

import zmq

from nova_rpc_zmq import netaddr, zmqio
from nova_rpc_zmq.concurrency import get_handler
from nova_rpc_zmq.errors import ConfigurationError
from nova_rpc_zmq.ipcdir import (  # noqa: F401 - also this module's names
    IPC_PATH_MAX, LOCK_NAME, IpcDirError, ipc_path, lock_ipc_dir, prepare_ipc_dir)
from nova_rpc_zmq.metrics import Counters
from nova_rpc_zmq.receiver.broker_feed import BrokerFeed
from nova_rpc_zmq.receiver.connections import ConnectionCount
from nova_rpc_zmq.receiver.droplog import DropLog
from nova_rpc_zmq.receiver.loop import (  # noqa: F401 - also this module's names
    BATCH, IDLE_WAIT_MS, RoutingLoop)
from nova_rpc_zmq.receiver.topics import (  # noqa: F401 - also this module's names
    FANOUT_STALL, FLOW_REASONS, JOIN_GRACE, LINGER_MS, MAX_TOPICS, TOPIC_HWM,
    TOTAL_FACTOR, Topic)

if TYPE_CHECKING:
    from nova_rpc_zmq.config import Settings

LOG = logging.getLogger(__name__)

#: Milliseconds a TCP peer has to complete the ZMTP (and CURVE) handshake.
HANDSHAKE_MS = 5000
#: The inbound socket's MAXMSGSIZE is this many times rpc_zmq_max_msg_size:
#: a frame over the limit but under this arrives and is dropped as
#: ``too_large`` (counted, logged with its peer); libzmq cuts the
#: connection of a larger one before the receiver sees it, and reports that
#: exactly like a peer that went away, so that one is not counted.
OVERSIZE_MARGIN = 2


class ReceiverError(ConfigurationError):
    """The receiver cannot start; the message says what and how to fix it."""


class Receiver(RoutingLoop):
    """The per-host routing daemon. ``start()`` then ``run()``; ``stop()``
    from any thread or a signal handler ends ``run()`` within ~0.2 s."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ipc_dir = settings.rpc_zmq_ipc_dir
        self.limits = settings.limits
        self.backlog_limit = settings.rpc_zmq_topic_backlog
        self.backlog_bytes_limit = settings.rpc_zmq_topic_backlog_bytes
        self.total_limit = TOTAL_FACTOR * self.backlog_limit
        self.total_bytes_limit = TOTAL_FACTOR * self.backlog_bytes_limit
        self.stuck_after = float(settings.rpc_zmq_health_stuck_after)
        self.drain_timeout = float(settings.rpc_zmq_drain_timeout)
        #: True from drain() on: the health page says DRAINING
        self.draining = False
        #: run in the loop's thread after request_reload(); default reload()
        self.on_reload: Callable[[], None] | None = None
        # set from signal handlers, acted on by the loop (one read per turn)
        self._signalled = False
        self._drain_requested = False
        self._reload_requested = False
        #: linger of the topic sockets at shutdown (drain: the time left)
        self._close_linger_ms: int | None = None
        self.counters = Counters("receiver")
        self.droplog = DropLog()
        self.ctx: zmq.Context | None = None
        self.inbound: zmq.Socket | None = None
        self.topics: dict[str, Topic] = {}
        self.waiting: dict[str, Topic] = {}  # topics with a backlog
        self.backlogged = 0
        self.backlogged_bytes = 0
        #: when the loop last turned (monotonic); read by the health thread
        self.turned = time.monotonic()
        self._lock_fd: int | None = None
        self._stopping = False
        self._peer_frame: Any = None
        self.curve = bool(settings.rpc_zmq_curve)
        self.authenticator: Any = None
        self.servicegroup: Any = None
        self.endpoint = ""
        #: TCP peers connected to the inbound socket (from start() until
        #: the socket closes; with rpc_zmq_curve fed by the authenticator,
        #: which owns the socket's monitor)
        self.connections: ConnectionCount | None = None
        #: the broker's fanout (rpc_zmq_matchmaker = broker), from start()
        self.broker_feed: BrokerFeed | None = None

    # -- start-up ---------------------------------------------------------
    def start(self) -> None:
        """Check the IPC directory, bind TCP. Raises ReceiverError."""
        prepare_ipc_dir(self.ipc_dir)
        bind = netaddr.resolve_bind_address(self.settings.rpc_zmq_bind_address)
        self.endpoint = netaddr.tcp_endpoint(bind, self.settings.rpc_zmq_port)
        keypair = None
        if self.curve:
            from nova_rpc_zmq.security import KeyPair
            keypair = KeyPair.from_settings(self.settings)  # ConfigurationError
        self.ctx = zmqio.context(get_handler("threading"),
                                 self.settings.rpc_zmq_contexts,
                                 self.settings.rpc_zmq_io_batch)
        if self.curve:
            # ZAP must answer before the first peer connects: without a
            # handler a CURVE server lets every key in.
            from nova_rpc_zmq.security import ZapAuthenticator
            self.authenticator = ZapAuthenticator.from_settings(self.ctx,
                                                                self.settings)
            self.authenticator.start()
        # MAXMSGSIZE is not the limit itself: libzmq would cut the
        # connection of a frame over it before we see the message, and the
        # drop would go uncounted and unlogged; frames up to the margin
        # reach _read_batch, which drops and counts them (too_large);
        # libzmq still bounds the memory. A peer that does not finish the
        # ZMTP handshake is cut off soon (HANDSHAKE_IVL).
        options: dict[int, Any] = {zmq.HANDSHAKE_IVL: HANDSHAKE_MS}
        if ":" in bind:
            options[zmq.IPV6] = 1
        sock = zmqio.make_socket(
            self.ctx, zmq.PULL, linger=0,
            maxmsgsize=self.limits.max_msg_size * OVERSIZE_MARGIN,
            rcvhwm=TOPIC_HWM, rcvtimeo=IDLE_WAIT_MS, options=options)
        # before the bind: peers waiting to reconnect come at once
        self.connections = ConnectionCount(self.counters)
        if keypair is not None:
            from nova_rpc_zmq.security import configure_server
            configure_server(sock, keypair)
            # a socket has one monitor: the authenticator's (refused
            # handshakes), which hands the count its connection events
            self.authenticator.watch_server(
                sock, on_connection=self.connections.event)
        self.inbound = sock
        try:
            if keypair is None:
                self.connections.watch(self.ctx, sock)
            sock.bind(self.endpoint)
        except zmq.ZMQError as exc:
            self._close_inbound()
            self._close_context()
            if exc.errno == errno.EADDRINUSE:
                raise ReceiverError(
                    "port %d is in use on %s: another nova-rpc-zmq-receiver "
                    "(or another program) is already listening; stop it, or "
                    "set rpc_zmq_port to a free port in the reserved range"
                    % (self.settings.rpc_zmq_port, bind)) from exc
            raise ReceiverError(
                "cannot listen on %s: %s; check rpc_zmq_bind_address and "
                "rpc_zmq_port" % (self.endpoint, exc)) from exc
        try:
            # after the bind, so that a second receiver on the same conf is
            # told about the port; before any topic socket is touched
            self._lock_fd = lock_ipc_dir(self.ipc_dir)
        except IpcDirError:
            self._close_inbound()
            self._close_context()
            raise
        if self.settings.rpc_zmq_matchmaker == "broker":
            # the broker publishes fanout; it enters the loop as if it came
            # over TCP (broker_feed.py)
            self.broker_feed = BrokerFeed(
                self.ctx, sock, str(self.settings.rpc_zmq_broker_ip),
                self.settings.rpc_zmq_start_port + 2,
                self.limits.max_msg_size * OVERSIZE_MARGIN,
                settings=self.settings)
        LOG.info("receiver listening on %s, routing to %s", self.endpoint,
                 self.ipc_dir)
        if self.settings.servicegroup_enabled:
            self._join_servicegroup()

    def _join_servicegroup(self) -> None:
        """Senders skip hosts whose receiver is down: be seen alive."""
        from nova_rpc_zmq.concurrency import get_handler
        from nova_rpc_zmq.servicegroup import API
        try:
            self.servicegroup = API(self.settings,
                                    handler=get_handler("threading"))
            self.servicegroup.join(self.settings.rpc_zmq_host,
                                   self.settings.rpc_zmq_receiver_group,
                                   {"endpoint": self.endpoint})
        except Exception:
            self._close_inbound()
            self._close_context()
            self._unlock()
            raise

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _close_context(self) -> None:
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None
        if self.ctx is not None:
            self.ctx.term()
            self.ctx = None

    def stuck(self) -> str | None:
        """Why the receiver is not routing (for the health page), or None.

        Thread-safe: reads attributes the loop writes. The health page uses
        ``health.ReceiverHealth``, which adds the drain file and ZAP.
        """
        if self.draining:
            return "DRAINING"
        if self._stopping:
            return "STOPPING"
        idle = time.monotonic() - self.turned
        if idle > self.stuck_after:
            return ("STUCK: the routing loop has not turned for %.1f s "
                    "(rpc_zmq_health_stuck_after = %g)" % (idle, self.stuck_after))
        return None

    def metrics(self) -> str:
        """``GET /metrics``: the Prometheus text format 0.0.4
        (``exposition``). Thread-safe: reads, never locks the loop."""
        from nova_rpc_zmq.receiver import exposition
        return exposition.render(self)

    def stop(self) -> None:
        """Ask ``run()`` to return at once, dropping what the backlogs hold
        (a drain in progress is cut short); safe from signal handlers and
        threads."""
        self._stopping = True

    def drain(self) -> None:
        """Ask ``run()`` to stop accepting, hand what it holds to the local
        consumers for at most ``rpc_zmq_drain_timeout`` seconds, then
        return. Safe from signal handlers and threads; seen within
        ``IDLE_WAIT_MS``."""
        self.draining = True
        self._drain_requested = True
        self._signalled = True

    def request_reload(self) -> None:
        """Ask the loop to run ``on_reload`` (default ``reload()``) at its
        next turn, in its own thread. Safe from signal handlers."""
        self._reload_requested = True
        self._signalled = True

    def reload(self) -> list[str]:
        """Re-read what can change without a restart: the CURVE keys dir
        now (it is also re-read within a second of a change). Returns what
        was re-read, for the log. Call from the loop's thread."""
        done = []
        auth = self.authenticator
        if auth is not None:
            auth.allow_list.refresh(force=True)
            done.append("CURVE keys dir %s" % auth.allow_list.keys_dir)
        return done

    def _shutdown(self) -> None:
        lost = sum(len(t.backlog) for t in self.topics.values())
        if lost:
            LOG.warning("stopping with %d undelivered messages in backlogs",
                        lost)
        if self.broker_feed is not None:
            self.broker_feed.close()
            self.broker_feed = None
        self._close_inbound()
        linger = self._close_linger_ms
        for t in self.topics.values():
            if linger is not None:  # drained: the pipes get the time left
                t.sock.close(linger)
            else:
                t.sock.close(0 if t.backlog else LINGER_MS)
        self.topics.clear()
        self.waiting.clear()
        self.droplog.flush(time.monotonic(), force=True)
        if self.servicegroup is not None:
            self.servicegroup.stop(leave=True)  # an orderly stop: seen at once
            self.servicegroup = None
        self._close_context()
        self._unlock()
        LOG.info("receiver stopped")
