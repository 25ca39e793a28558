"""Frames <-> messages: the byte layout of the Grizzly/Havana ``impl_zmq`` wire.

This package is pure (sans-IO): it takes ZeroMQ multipart frames and returns
objects, or takes objects and returns frames.  It never touches a socket, a
clock, config or a logger, and it is the only place that knows the layout:

* legacy style ``[msg_id, topic, b"cast", payload]`` where ``payload`` is the
  JSON list ``[context, message]``; old nodes write ``context`` as a JSON
  *string* of the context dict (double-encoded), which we always write and
  which we read as well as a plain JSON object.  ``message`` may be an oslo
  envelope ``{"oslo.version": "2.0", "oslo.message": "<json>"}``.
* v2 style ``[msg_id, topic, b"impl_zmq_v2", context_json, k1, v1, ...]``,
  the key/value frames flattening the oslo envelope dict.
* probe style ``[probe_id, topic, b"nova_rpc_zmq_probe"]`` (ours only).
* a direct reply, one part ``DIRECT_REPLY_MARK`` + JSON ``[msg_id,
  response, more, seq]`` (ours only: the direct TCP path to a caller that
  asked for it; ``encode_direct_reply`` / ``decode_direct_reply``), and a
  direct call, ``DIRECT_CALL_MARK`` + JSON ``[frame 0, topic, msg_id,
  reply topic, context, message]`` (to consumers that said they take it;
  ``encode_direct_call`` / ``decode_direct_call``).

``decode`` raises ``errors.RemoteProtocolError(reason, detail)`` and nothing
else for any input; ``reason`` is one of ``REASONS`` and is meant to be used
as a counter name.  A decoded ``Message`` carries its typed ``part``: the
``CallRequest`` of a call, the ``Reply`` of a reply, None for a cast.  The
encoding side raises ``errors.LocalError`` for our caller's mistakes (a
value that is not JSON, a bad topic).

Modules: ``names`` (frame indexes, markers, keys, limits),
``jsontext`` (JSON parse and dump), ``topics``, ``reader`` (``decode``,
``peek``) and ``writer`` (``encode`` and the bodies of calls and replies).
Every public name is importable from ``nova_rpc_zmq.wire`` itself.
"""

from __future__ import annotations

from nova_rpc_zmq.wire.jsontext import (  # noqa: F401 - tests reach these
    _may_hold_long_number, _stdlib_bytes, dumps)
from nova_rpc_zmq.wire.names import (
    ARGS_KEY, CALLER_STREAMS, DEFAULT_LIMITS, DIRECT_CALL_MARK,
    DIRECT_REPLY_MARK, ENVELOPE_MAJOR,
    ENVELOPE_MESSAGE_KEY, ENVELOPE_VERSION, ENVELOPE_VERSION_KEY, EXC_KEY,
    FANOUT_PREFIX, LEGACY_FRAMES, LEGACY_PAYLOAD, MAX_MSG_ID_LENGTH, MAX_SEQ, METHOD_KEY,
    MIN_FRAMES, MORE_KEY, MSG_ID, MSG_ID_KEY, NAMESPACE_KEY, NO_MSG_ID,
    NOTIFICATION_PRIORITIES, NOTIFICATION_SEPARATOR, PROBE_FRAMES, PROBE_MARK,
    PROCESS_REPLY_METHOD, REASONS, REPLIES_PREFIX, REPLY_METHOD,
    REPLY_MSG_KEY, REPLY_TOPIC_KEY, RESPONSE_KEY, ROUTE_PUB, ROUTE_PUSH,
    SEQ_KEY, STYLE, STYLE_LEGACY, STYLE_PROBE, STYLE_V2, TOPIC,
    TOPIC_SEPARATOR, V2_CONTEXT, V2_ENVELOPE_START, VERSION_KEY, Limits)
from nova_rpc_zmq.wire.reader import (
    CallRequest, Message, Probe, Reply, decode, decode_direct_call,
    decode_direct_reply, parse_call_request, parse_reply, peek)
from nova_rpc_zmq.wire.topics import (
    bare_topic, check_topic, directed_topic, fanout_topic, is_fanout,
    is_notification_topic, is_reply_topic, notification_topic, reply_topic,
    route)
from nova_rpc_zmq.wire.writer import (
    call_request, encode, encode_call, encode_direct_call,
    encode_direct_reply, encode_probe, reply_body)

__all__ = [
    "ARGS_KEY", "CALLER_STREAMS", "DEFAULT_LIMITS", "DIRECT_CALL_MARK",
    "DIRECT_REPLY_MARK",
    "ENVELOPE_MAJOR",
    "ENVELOPE_MESSAGE_KEY", "ENVELOPE_VERSION", "ENVELOPE_VERSION_KEY",
    "EXC_KEY", "FANOUT_PREFIX", "LEGACY_FRAMES", "LEGACY_PAYLOAD",
    "MAX_MSG_ID_LENGTH", "MAX_SEQ", "METHOD_KEY", "MIN_FRAMES", "MORE_KEY",
    "MSG_ID", "MSG_ID_KEY", "NAMESPACE_KEY", "NO_MSG_ID",
    "NOTIFICATION_PRIORITIES", "NOTIFICATION_SEPARATOR", "PROBE_FRAMES", "PROBE_MARK",
    "PROCESS_REPLY_METHOD", "REASONS", "REPLIES_PREFIX", "REPLY_METHOD",
    "REPLY_MSG_KEY", "REPLY_TOPIC_KEY", "RESPONSE_KEY", "ROUTE_PUB",
    "ROUTE_PUSH", "SEQ_KEY", "STYLE", "STYLE_LEGACY", "STYLE_PROBE",
    "STYLE_V2", "TOPIC", "TOPIC_SEPARATOR", "V2_CONTEXT",
    "V2_ENVELOPE_START", "VERSION_KEY", "CallRequest", "Limits", "Message",
    "Probe", "Reply", "bare_topic", "call_request", "check_topic",
    "decode", "decode_direct_call", "decode_direct_reply", "directed_topic",
    "dumps", "encode", "encode_call", "encode_direct_call", "encode_direct_reply",
    "encode_probe",
    "fanout_topic", "is_fanout", "is_notification_topic", "is_reply_topic",
    "notification_topic", "parse_call_request", "parse_reply", "peek",
    "reply_body", "reply_topic", "route",
]
