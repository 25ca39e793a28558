"""The receiver's ``GET /metrics`` page, in the Prometheus text format 0.0.4.

Counters (``nova_rpc_zmq_receiver_*_total``): messages received,
forwarded, fanout subscribers cut off, dropped by reason, CURVE handshakes
accepted and refused by reason, TCP connections closed. Gauges: open
topic sockets by kind, what the backlogs hold, TCP peers connected. Plus ``process_start_time_seconds`` and
``nova_rpc_zmq_build_info``. Every known reason is shown from the start,
at 0, so that a rate or an alert works before the first drop.

Called from the health thread while the loop runs: it only reads plain
attributes and copies containers in single C calls, never locks the loop.
"""

from __future__ import annotations

from typing import Any

from nova_rpc_zmq import metrics, wire
from nova_rpc_zmq.metrics import Family

#: Drop reasons of the receiver: the wire's, the receiver's own, and
#: consumers' (``FLOW_REASONS`` of the daemon).
DROP_REASONS = (
    "bad_body", "bad_context", "bad_envelope", "bad_envelope_version",
    "bad_frame", "bad_json", "bad_msg_id", "bad_topic", "too_deep",
    "too_few_frames", "too_large", "too_many_frames", "unknown_style",
    "internal_error", "no_consumer", "backlog_full", "subscriber_full",
    "too_many_topics", "ipc_bind_failed", "topic_too_long_for_ipc")
#: Reasons a CURVE handshake is refused (security.policy labels, spaces as _).
CURVE_REFUSALS = ("no_matching_key", "mechanism_mismatch",
                  "malformed_credentials", "keys_dir_unreadable")

HELPS = {
    "received": "Messages read from the TCP port.",
    "forwarded": "Messages handed to a local consumer's IPC socket.",
    "fanout_cut_off": "Fanout subscribers that took nothing, cut off until "
                      "they read again.",
    "connections_closed": "TCP connections to the receiver's port closed "
                          "(by the peer, a failed handshake, or a frame over "
                          "twice rpc_zmq_max_msg_size).",
    "dropped": "Messages dropped, by reason (also logged, once per interval "
               "and reason).",
}


def families(receiver: Any) -> list[Family]:
    """Every family of ``receiver`` (a ``Receiver``), read at once."""
    connections = receiver.connections
    always = ["received", "forwarded", "fanout_cut_off"]
    if connections is not None:
        always.append("connections_closed")
    always += ["dropped." + r for r in DROP_REASONS]
    out = metrics.counter_families(receiver.counters, HELPS, always)
    kinds = {wire.ROUTE_PUSH: 0, wire.ROUTE_PUB: 0}
    for topic in list(receiver.topics.values()):
        kinds[topic.kind] = kinds.get(topic.kind, 0) + 1
    topics = Family(metrics.metric_name("receiver", "topics"), "gauge",
                    "Open topic sockets, by kind (push: one consumer gets "
                    "each message; pub: fanout and replies).")
    for kind, n in sorted(kinds.items()):
        topics.add(n, kind=kind)
    out += [
        topics,
        Family(metrics.metric_name("receiver", "backlog_messages"), "gauge",
               "Messages waiting in topic backlogs.").add(receiver.backlogged),
        Family(metrics.metric_name("receiver", "backlog_bytes"), "gauge",
               "Bytes of the messages waiting in topic backlogs."
               ).add(receiver.backlogged_bytes),
        Family(metrics.metric_name("receiver", "backlog_topics"), "gauge",
               "Topics with a non-empty backlog.").add(len(receiver.waiting)),
    ]
    if connections is not None:  # None before start() and once closed
        out.append(Family(
            metrics.metric_name("receiver", "connections_open"), "gauge",
            "TCP peers connected to the receiver's port, in their handshake "
            "or past it (at most a fraction of a second old).").add(connections.open))
    auth = receiver.authenticator
    accepted = auth.accepted if auth is not None else 0
    refused = dict.fromkeys(CURVE_REFUSALS, 0)
    if auth is not None:
        for reason, n in auth.refused.items():
            refused[reason.replace(" ", "_")] = n
    out.append(Family(metrics.metric_name("receiver", "curve_accepted_total"),
                      "counter", "CURVE handshakes accepted (0 with "
                      "rpc_zmq_curve off).").add(accepted))
    fam = Family(metrics.metric_name("receiver", "curve_refused_total"),
                 "counter", "CURVE handshakes refused, by reason.")
    for reason, n in sorted(refused.items()):
        fam.add(n, reason=reason)
    out.append(fam)
    return out + metrics.process_families()


def render(receiver: Any) -> str:
    """The text of ``GET /metrics``."""
    return metrics.render(families(receiver))
