"""The Nova-era broker: ``nova-rpc-zmq-proxy --legacy-broker``.

With ``rpc_zmq_matchmaker = broker`` and ``rpc_zmq_broker_ip`` (the
Folsom deployment guide's optional broker), callers send bare topics and
fanout here instead of to a host (``matchmaker/broker.py``):

* front end: PULL on ``rpc_zmq_bind_address:rpc_zmq_start_port`` (9500),
  the Nova-era frames of any caller, checked as hostile input
  (``wire.decode`` with the configured limits);
* a bare topic (``compute``) goes, frames unchanged, to one host of the
  broker's ring file (round robin, liveness when configured) through that
  host's receiver (``rpc_zmq_port``), whose consumers of ``compute`` take
  it; a directed topic or a reply goes to its host the same way;
* a fanout (``fanout~compute``) is published, frames unchanged, on the PUB
  socket at ``rpc_zmq_start_port + 2`` (9502), to which every receiver
  with the broker matchmaker subscribes (``receiver/broker_feed.py``).

With ``rpc_zmq_curve = true`` in the broker's nova.conf (its
``rpc_zmq_curve_key_file`` and ``rpc_zmq_curve_keys_dir``), the front end
and the publisher are CURVE servers admitting exactly the keys of the
keys dir (``proxy/curve.py``: ZAP, following the directory), and the
sockets to the ring hosts' receivers are CURVE clients with each host's
certificate, as any Nova-era sender (``impl_zmq/curve.py``). Callers and
receivers find the broker's certificate as
``<keys_dir>/<rpc_zmq_broker_ip>.key``, named as nova.conf names the
broker.

The broker keeps no message: what a receiver cannot take within a
millisecond, or what names no host, is counted, logged (once per 10 s and
reason) and dropped, and the loop goes on. Replies never pass here: the
service answers the caller's receiver directly.

Counters (``/metrics`` with ``--health-port``):
``nova_rpc_zmq_proxy_received_total``, ``..._forwarded_total``,
``..._published_total``, ``..._dropped_total{reason}``; with CURVE
``..._curve_accepted_total`` and ``..._curve_refused_total{reason}``.
"""

from __future__ import annotations

import logging
import time

import zmq

from nova_rpc_zmq import config, frames, metrics, netaddr, wire, zmqio
from nova_rpc_zmq.concurrency import get_handler
from nova_rpc_zmq.errors import (AuthenticationError, ConfigurationError,
                                 NoHostsError, RemoteProtocolError,
                                 RPCException)
from nova_rpc_zmq.impl_zmq.curve import ClientSecurity
from nova_rpc_zmq.impl_zmq.sockets import Outbound
from nova_rpc_zmq.matchmaker.ring import RingMatchMaker
from nova_rpc_zmq.proxy.curve import ProxyCurve, ProxyCurveError
from nova_rpc_zmq.receiver.droplog import DropLog

LOG = logging.getLogger(__name__)

#: Milliseconds a receive waits before the stop flag is looked at.
WAKE_MS = 200
#: Seconds a receiver's queue may stay full before a message to it drops.
SEND_WAIT = 0.001
#: High-water mark of the front end and the publisher.
HWM = 10000
DROP_REASONS = ("bad_message", "no_host", "host_full", "publish_full",
                "internal_error", "host_refused", "no_host_key")


class LegacyBroker:
    """Binds at construction (``zmq.ZMQError`` when a port is taken);
    ``run()`` until ``stop()``."""

    def __init__(self, settings: config.Settings, debug: bool = False) -> None:
        self.settings = settings
        self.debug = debug
        self.limits = settings.limits
        self.counters = metrics.Counters("proxy")
        self.peers: dict[str, int] = {}
        self.drops = DropLog(logger=LOG)
        self.turned = time.monotonic()
        self.stopping = False
        handler = get_handler("threading")
        self._ctx = zmqio.context(handler)
        self.curve = self._curve(settings)
        self._security: ClientSecurity | None = None
        bind = netaddr.resolve_bind_address(settings.rpc_zmq_bind_address)
        self.front_port = settings.rpc_zmq_start_port
        self.publisher_port = settings.rpc_zmq_start_port + 2
        self._front = zmqio.make_socket(
            self._ctx, zmq.PULL, linger=0, rcvhwm=HWM, rcvtimeo=WAKE_MS,
            maxmsgsize=self.limits.max_msg_size)
        self._pub = zmqio.make_socket(self._ctx, zmq.PUB, linger=0,
                                      sndhwm=HWM)
        if self.curve is not None:
            self.curve.serve(self._ctx, self._front)
            self.curve.serve(self._ctx, self._pub)
            self._security = ClientSecurity(settings, handler)
        # the ring decides where bare topics go, whatever rpc_zmq_matchmaker
        # the shared nova.conf names (broker, for its callers)
        self._ring = RingMatchMaker.from_settings(settings)
        # a receiver that cannot take a message at once must not hold up
        # every other host: wait a millisecond, then drop and count
        fast = config.load_settings(settings, rpc_cast_timeout=SEND_WAIT)
        self._out = Outbound(handler, self._ctx, fast,
                             configure=self._security.configure
                             if self._security is not None else None)
        if self._security is not None:
            self._security.forget = self._out.forget
            self._security.reopen = self._out.reopen
        try:
            self._front.bind(netaddr.tcp_endpoint(bind, self.front_port))
            self._pub.bind(netaddr.tcp_endpoint(bind, self.publisher_port))
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _curve(settings: config.Settings) -> ProxyCurve | None:
        """The CURVE set-up of ``settings`` (None with CURVE off). Raises
        ConfigurationError naming the option and the file."""
        try:
            return ProxyCurve.from_options({
                "rpc_zmq_curve": settings.rpc_zmq_curve,
                "rpc_zmq_curve_key_file": settings.rpc_zmq_curve_key_file,
                "rpc_zmq_curve_keys_dir": settings.rpc_zmq_curve_keys_dir},
                settings.rpc_zmq_host)
        except ProxyCurveError as exc:
            raise ConfigurationError(
                str(exc).replace("[oslo_messaging_zmq] ", "")) from None

    def counter_names(self) -> list[str]:
        return ["received", "forwarded", "published"] + \
            ["dropped." + reason for reason in DROP_REASONS]

    def stop(self) -> None:
        """End ``run()`` within ``WAKE_MS`` (any thread, signal handlers)."""
        self.stopping = True

    def run(self) -> None:
        try:
            while not self.stopping:
                now = self.turned = time.monotonic()
                if now >= self.drops.due:
                    self.drops.flush(now)
                try:
                    parts = frames.recv(self._front)
                except zmq.Again:
                    continue
                try:
                    self._handle(parts)
                except Exception as exc:  # noqa: BLE001 - one message only
                    self._drop("internal_error", parts, str(exc))
        finally:
            self.drops.flush(time.monotonic(), force=True)
            self.close()

    def _handle(self, parts: list) -> None:
        self.counters.incr("received")
        try:
            msg = wire.decode(parts, self.limits)
        except RemoteProtocolError as exc:
            self._drop("bad_message", parts, "%s: %s" % (exc.reason,
                                                         exc.detail))
            return
        topic = msg.topic
        if topic.startswith(wire.FANOUT_PREFIX):
            try:
                frames.send(self._pub, parts, frames.NOBLOCK)
            except zmq.Again:
                self._drop("publish_full", parts, "the publisher is full")
                return
            self.counters.incr("published")
            if self.debug:
                LOG.debug("published %s", topic)
            return
        try:
            pairs = self._ring.queues(topic)
        except (NoHostsError, RPCException) as exc:
            self._drop("no_host", parts, str(exc))
            return
        for _queue, host in pairs:
            try:
                if self._security is not None:
                    self._security.check(host)
                self._out.send(host, parts, topic)
            except AuthenticationError as exc:
                self._drop("host_refused", parts, str(exc))
                continue
            except ConfigurationError as exc:
                self._drop("no_host_key", parts, str(exc))
                continue
            except RPCException as exc:
                self._drop("host_full", parts, str(exc))
                continue
            self.counters.incr("forwarded")
            if self.debug:
                LOG.debug("forwarded %s to %s", topic, host)

    def _drop(self, reason: str, parts: list, detail: str) -> None:
        self.counters.incr("dropped." + reason)
        topic = None
        if len(parts) > 1 and len(parts[1]) <= 300:
            topic = parts[1].decode("utf-8", "replace")
        self.drops.record(reason, topic, "a caller", detail, time.monotonic())

    def close(self) -> None:
        self._out.close(0)
        self._ring.close()
        self._front.close(0)
        self._pub.close(0)
        if self._security is not None:
            self._security.close()
        if self.curve is not None:
            self.curve.close()
        self._ctx.term()
