"""Messages -> frames: ``encode``, probes, and the bodies of a call
request and of a reply. Raises ``errors.LocalError`` for our caller's
mistakes (a value that is not JSON, a bad topic or msg_id)."""

from __future__ import annotations

from typing import Any, Iterable

from nova_rpc_zmq import errors
from nova_rpc_zmq.wire import jsontext as _jsontext
from nova_rpc_zmq.wire import names as _names
from nova_rpc_zmq.wire.jsontext import _json_bytes, _json_text
from nova_rpc_zmq.wire.names import (
    _ENVELOPE_MESSAGE_KEY_B, _ENVELOPE_VERSION_B, _ENVELOPE_VERSION_KEY_B,
    _TOPIC_CHARSET, _snippet, ARGS_KEY, DIRECT_CALL_MARK, DIRECT_REPLY_MARK,
    Limits, MAX_MSG_ID_LENGTH,
    METHOD_KEY, MORE_KEY, MSG_ID_KEY, NOTIFICATION_PRIORITIES, NO_MSG_ID,
    PROCESS_REPLY_METHOD, REPLY_METHOD, REPLY_MSG_KEY, REPLY_TOPIC_KEY,
    RESPONSE_KEY, SEQ_KEY, STYLE_LEGACY, STYLE_PROBE, STYLE_V2)
from nova_rpc_zmq.wire.reader import _check_body
from nova_rpc_zmq.wire.topics import _local_topic, is_notification_topic

# Objects whose methods run per message are bound by assignment, not by
# ``from ... import``: CPython 3.11 compiles a method call on an imported
# name as an attribute look-up plus a bound-method call, which is slower.
_ID_RE = _names._ID_RE
_ASCII_ENCODER = _jsontext._ASCII_ENCODER


def _local_msg_id(msg_id: str | bytes | None) -> bytes:
    if msg_id is None or msg_id == "" or msg_id == b"":
        return NO_MSG_ID
    raw = msg_id.encode("ascii", "replace") if type(msg_id) is str else msg_id
    if (type(raw) is not bytes or len(raw) > MAX_MSG_ID_LENGTH
            or _ID_RE.fullmatch(raw) is None):
        raise errors.LocalError("msg_id %s must be 1-%d characters of %s"
                                % (_snippet(msg_id), MAX_MSG_ID_LENGTH,
                                   _TOPIC_CHARSET))
    return raw


def _local_body(body: Any, what: str = "message body",
                notification: bool = False) -> None:
    """Our caller's body must be one that a peer's decode would accept."""
    if notification:
        if type(body) is not dict:
            raise errors.LocalError("cannot send: a notification must be a "
                                    "dict, got %s" % type(body).__name__)
        return
    try:
        _check_body(body, what)
    except errors.RemoteProtocolError as exc:
        raise errors.LocalError("cannot send: %s; a body is {'method': "
                                "non-empty str, 'args': dict, ...}"
                                % exc.detail) from None
    for key in body.get(ARGS_KEY, {}):
        if type(key) is not str:
            raise errors.LocalError("cannot send %s: argument names must be "
                                    "str, got %s" % (body[METHOD_KEY],
                                                     _snippet(key)))


def encode(msg_id: str | bytes | None, topic: str, context: dict, body: dict,
           envelope: bool = False, limits: Limits | None = None,
           notification: bool = False) -> list[bytes]:
    """Frames for one message: legacy style, or v2 when ``envelope``.

    ``notification``: ``body`` is a notification (``event_type``,
    ``payload``..., no ``method``) for a notification topic.

    ``msg_id`` None or empty means ``NO_MSG_ID``.  The context is always
    written as a JSON string (as old nodes expect).  When ``limits`` is
    given, a message over ``limits.max_msg_size`` is refused.  Raises
    ``errors.LocalError`` for a bad topic, msg_id, body or non-JSON value.
    """
    raw_id = _local_msg_id(msg_id)
    raw_topic = _local_topic(topic)
    if type(context) is not dict:
        raise errors.LocalError("cannot send: the context must be a dict, "
                                "got %s" % type(context).__name__)
    if notification and not is_notification_topic(topic):
        raise errors.LocalError(
            "cannot send a notification to %r: notification topics end in "
            "-<priority> (%s), e.g. notifications-info"
            % (topic, ", ".join(NOTIFICATION_PRIORITIES)))
    _local_body(body, notification=notification)
    ctx_text = _json_text(context, "context")
    if envelope:
        try:
            raw_ctx = ctx_text.encode("utf-8")
        except UnicodeEncodeError:
            raw_ctx = _ASCII_ENCODER.encode(context).encode("ascii")
        frames = [raw_id, raw_topic, STYLE_V2, raw_ctx,
                  _ENVELOPE_VERSION_KEY_B, _ENVELOPE_VERSION_B,
                  _ENVELOPE_MESSAGE_KEY_B, _json_bytes(body, "message body")]
    else:
        frames = [raw_id, raw_topic, STYLE_LEGACY,
                  _json_bytes([ctx_text, body], "message body")]
    if limits is not None:
        size = sum(len(frame) for frame in frames)
        if size > limits.max_msg_size:
            raise errors.LocalError(
                "cannot send a message of %d bytes to %s: the limit is %d "
                "bytes (rpc message size limit); send less data per call"
                % (size, topic, limits.max_msg_size))
    return frames


def encode_probe(probe_id: str, topic: str) -> list[bytes]:
    """Frames of a probe; raises ``errors.LocalError`` for a bad id/topic."""
    if not probe_id:
        raise errors.LocalError("a probe needs a non-empty probe_id")
    return [_local_msg_id(probe_id), _local_topic(topic), STYLE_PROBE]


def call_request(msg_id: str, reply_topic: str, context: dict, msg: dict
                 ) -> dict:
    """The curried ``-reply`` body of a call (the old protocol).

    The server runs ``msg`` and casts the answer to ``reply_topic`` with
    ``msg_id`` in frame 0.  Raises ``errors.LocalError``.
    """
    _local_msg_id(msg_id)
    _local_topic(reply_topic, "reply topic")
    _local_body(msg)
    return {METHOD_KEY: REPLY_METHOD,
            ARGS_KEY: {MSG_ID_KEY: msg_id,
                       REPLY_TOPIC_KEY: reply_topic,
                       REPLY_MSG_KEY: [_json_text(context, "context"), msg]}}


def reply_body(msg_id: str, response: Iterable[Any],
               more: bool | None = None, seq: int | None = None) -> dict:
    """The ``-process_reply`` body answering call ``msg_id``.

    ``more`` None writes no flag (a complete legacy reply); True/False mark
    a streamed part and the last one; ``seq`` numbers streamed parts from 0
    (parts may take different paths and arrive out of order).
    """
    args: dict[str, Any] = {MSG_ID_KEY: msg_id, RESPONSE_KEY: list(response)}
    if more is not None:
        args[MORE_KEY] = bool(more)
    if seq is not None:
        args[SEQ_KEY] = int(seq)
    return {METHOD_KEY: PROCESS_REPLY_METHOD, ARGS_KEY: args}


def encode_direct_reply(msg_id: str, response: Iterable[Any],
                        more: bool | None = None, seq: int | None = None
                        ) -> list[bytes]:
    """The one-part message of a reply on the direct path to a caller of
    ours that takes it (``DIRECT_REPLY_MARK``): what ``reply_body`` says,
    without the context and the nesting a receiver needs. ``more`` and
    ``seq`` as there. Raises ``errors.LocalError`` as ``encode`` does."""
    _local_msg_id(msg_id)
    return [DIRECT_REPLY_MARK + _json_bytes(
        [msg_id, list(response), bool(more), -1 if seq is None else int(seq)],
        "reply")]


def encode_call(caller_mark: str | bytes, topic: str, msg_id: str,
                reply_topic: str, context: dict, msg: dict,
                envelope: bool = False) -> list[bytes]:
    """The frames of a call in the wire's form: ``encode`` of the
    ``call_request`` body, frame 0 ``caller_mark``. Raises
    ``errors.LocalError`` as those do."""
    return encode(caller_mark, topic, context,
                  call_request(msg_id, reply_topic, context, msg), envelope)


def encode_direct_call(caller_mark: bytes, topic: str, msg_id: str,
                       reply_topic: str, context: dict, msg: dict
                       ) -> list[bytes]:
    """The one-part message of a call on the direct path to consumers of
    ours that take it (``DIRECT_CALL_MARK``): what ``encode_call`` says,
    with the context once and no nesting.
    Raises ``errors.LocalError`` as those do."""
    _local_msg_id(caller_mark)
    _local_topic(topic)
    _local_msg_id(msg_id)
    _local_topic(reply_topic, "reply topic")
    if type(context) is not dict:
        raise errors.LocalError("cannot send: the context must be a dict, "
                                "got %s" % type(context).__name__)
    _local_body(msg)
    return [DIRECT_CALL_MARK + _json_bytes(
        [caller_mark.decode("ascii"), topic, msg_id, reply_topic, context,
         msg], "message body")]
