"""``BrokerMatchMaker``: bare topics and fanout through the Nova-era broker.

``rpc_zmq_matchmaker = broker`` with ``rpc_zmq_broker_ip``: a bare topic
(``compute``) and a fanout (``fanout~compute``) go, unchanged, to the
broker (``nova-rpc-zmq-proxy --legacy-broker``), which picks a host of
its ring for the first and publishes the second to every receiver
subscribed to it. Directed topics (``compute.host1``) and replies
(``zmq_replies.host1``) still go straight to their host's receiver.

The broker is named by ``BROKER``, a host no host name can be (it starts
with '@'): the driver's sockets send it to
``tcp://<rpc_zmq_broker_ip>:<rpc_zmq_start_port>`` (9500), not to a
receiver port (``impl_zmq/sockets.py``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from nova_rpc_zmq import errors
from nova_rpc_zmq.matchmaker.base import (FANOUT_PREFIX, TOPIC_SEPARATOR,
                                          Liveness, MatchMaker)

if TYPE_CHECKING:
    from nova_rpc_zmq import config

#: The host the driver's sockets read as "the broker's front end".
BROKER = "@broker"


class BrokerMatchMaker(MatchMaker):
    """Bare and fanout topics to ``BROKER``, the rest to their host."""

    def __init__(self, host: str, broker: str,
                 ring: MatchMaker | None = None) -> None:
        self.host = host
        self.broker = broker
        self._ring = ring
        self.source = "the broker matchmaker (rpc_zmq_broker_ip = %s)" % broker

    @classmethod
    def from_settings(cls, settings: config.Settings,
                      liveness: Liveness | None = None) -> "BrokerMatchMaker":
        if not settings.rpc_zmq_broker_ip:
            raise errors.ConfigurationError(
                "rpc_zmq_matchmaker = broker needs rpc_zmq_broker_ip (the "
                "host of nova-rpc-zmq-proxy --legacy-broker)")
        ring = None
        if settings.matchmaker_ringfile and \
                os.path.exists(settings.matchmaker_ringfile):
            # the broker's ring, when this host has it too: the hosts that
            # may be answered (see knows_host)
            from nova_rpc_zmq.matchmaker.ring import RingMatchMaker
            ring = RingMatchMaker.from_settings(settings, liveness)
        return cls(settings.rpc_zmq_host, settings.rpc_zmq_broker_ip, ring)

    def queues(self, topic: str) -> list[tuple[str, str]]:
        if topic.startswith(FANOUT_PREFIX):
            return [(topic, BROKER)]
        head, sep, host = topic.partition(TOPIC_SEPARATOR)
        if not sep:
            return [(topic, BROKER)]
        if not host:
            raise errors.LocalError(
                "topic %r names no host after the '.'; write TOPIC.HOST or "
                "the bare topic" % (topic,))
        return [(topic, host)]

    def knows_host(self, host: str) -> bool:
        """This host, and the hosts of the ring file when this host has the
        broker's ring (``[matchmaker_ring] ringfile``); callers elsewhere go
        in ``rpc_zmq_reply_hosts`` (see ``impl_zmq/reply_policy.py``)."""
        if host == self.host:
            return True
        return self._ring is not None and self._ring.knows_host(host)

    def close(self) -> None:
        if self._ring is not None:
            self._ring.close()
