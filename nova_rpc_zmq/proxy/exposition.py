"""The proxy's ``GET /metrics`` page (Prometheus text format 0.0.4) and
its health status.

Counters (``nova_rpc_zmq_proxy_*_total``): messages received on each side
(``received_frontend``, ``received_backend``), forwarded to each side
(``forwarded_backend``: callers to servers; ``forwarded_frontend``),
dropped by reason, unroutable notices sent back to senders
(``notices_sent``, ``notices_lost``). Gauge ``nova_rpc_zmq_proxy_peers`` by side: peers
connected now. A publisher adds ``published`` (fanouts published) and
its drop reasons, and the ``publisher`` side (subscribers connected); a
local publisher shows ``received_central``, ``published`` and the sides
``publisher`` and ``central``. Gauge ``nova_rpc_zmq_proxy_registered``: 1 while the
matchmaker holds our registration as far as we know. With CURVE:
``nova_rpc_zmq_proxy_curve_accepted_total`` and
``nova_rpc_zmq_proxy_curve_refused_total{reason}`` (the receiver's
reasons). Read from the health
thread without locks (plain attributes, single C calls).
"""

from __future__ import annotations

from typing import Any

from nova_rpc_zmq import metrics
from nova_rpc_zmq.metrics import Family

#: Seconds without a turn of the loop before /health says STUCK.
STUCK_AFTER = 2.0

HELPS = {
    "received_frontend": "Messages read from callers (the frontend).",
    "received_backend": "Messages read from servers (the backend).",
    "forwarded_backend": "Messages handed to a server, listener or reply "
                         "socket (the backend).",
    "forwarded_frontend": "Messages handed back to a caller (the frontend).",
    "notices_sent": "Senders told that their destination is not connected "
                    "here (unroutable).",
    "notices_lost": "Unroutable notices not sent (the sender gone or "
                    "full).",
    "published": "Fanout messages published on the PUB socket (once "
                 "each, to every subscriber of their topic).",
    "received_central": "Messages a local publisher read from the central "
                        "publishers.",
    "dropped": "Messages dropped, by reason (also logged, once per interval "
               "and reason).",
}


def families(proxy: Any, announcer: Any = None) -> list[Family]:
    """Every family of ``proxy`` (a ``RouterProxy`` or a
    ``LocalPublisher``), read at once."""
    out = metrics.counter_families(proxy.counters, HELPS,
                                   proxy.counter_names())
    peers = Family(metrics.metric_name("proxy", "peers"), "gauge",
                   "Peers connected now, by side (frontend: callers' "
                   "sockets; backend: servers', listeners' and reply "
                   "sockets; publisher: subscribers; central: central "
                   "publishers a local publisher reads).")
    for side, count in list(proxy.peers.items()):
        peers.add(count, side=side)
    out.append(peers)
    curve = getattr(proxy, "curve", None)
    if curve is not None:
        out += curve.families()
    if announcer is not None:
        out.append(Family(metrics.metric_name("proxy", "registered"), "gauge",
                          "1 while the last registration in the matchmaker "
                          "succeeded.").add(1 if announcer.ok else 0))
    return out + metrics.process_families()


def render(proxy: Any, announcer: Any = None) -> str:
    """The text of ``GET /metrics``."""
    return metrics.render(families(proxy, announcer))


def status(proxy: Any, clock: Any) -> str | None:
    """Why the proxy should get no traffic now (one line), or None."""
    if proxy.stopping:
        return "STOPPING"
    idle = clock() - proxy.turned
    if idle > STUCK_AFTER:
        return "STUCK: the forwarding loop has not turned for %.1f s" % idle
    return None
