"""Frames -> messages: ``decode`` and ``peek``, for hostile input.

``decode`` raises ``errors.RemoteProtocolError(reason, detail)`` and
nothing else for any input; ``reason`` is one of ``REASONS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from nova_rpc_zmq.wire import names as _names
from nova_rpc_zmq.wire.jsontext import _loads_bytes, _loads_text
from nova_rpc_zmq.wire.names import (
    _EMPTY_ARGS, _ENVELOPE_MESSAGE_KEY_B, _ENVELOPE_VERSION_B,
    _ENVELOPE_VERSION_KEY_B, _STREAMS, _STREAMS_DOT, _TOPIC_CHARSET, _error,
    _snippet, ARGS_KEY, DEFAULT_LIMITS, DIRECT_CALL_MARK, DIRECT_REPLY_MARK,
    ENVELOPE_MAJOR,
    ENVELOPE_MESSAGE_KEY, ENVELOPE_VERSION, ENVELOPE_VERSION_KEY,
    LEGACY_FRAMES, LEGACY_PAYLOAD,
    Limits, MAX_MSG_ID_LENGTH, MAX_SEQ, METHOD_KEY, MIN_FRAMES, MORE_KEY,
    MSG_ID, MSG_ID_KEY, NAMESPACE_KEY, PROBE_FRAMES, PROCESS_REPLY_METHOD,
    SEQ_KEY, REPLIES_PREFIX, REPLY_METHOD, REPLY_MSG_KEY, REPLY_TOPIC_KEY,
    RESPONSE_KEY, STYLE, STYLE_LEGACY, STYLE_PROBE, STYLE_V2, TOPIC,
    V2_CONTEXT, V2_ENVELOPE_START, VERSION_KEY)
from nova_rpc_zmq.wire.topics import (
    _msg_id_of, _topic_of, is_notification_topic, is_reply_topic)

# Objects whose methods run per message are bound by assignment, not by
# ``from ... import``: CPython 3.11 compiles a method call on an imported
# name as an attribute look-up plus a bound-method call, which is slower.
_ID_STR_RE = _names._ID_STR_RE
_TOPIC_STR_RE = _names._TOPIC_STR_RE


# __slots__ by hand, not dataclass(slots=True): that needs Python 3.10 and
# we promise 3.9; with no field defaults the two are the same class.
@dataclass
class Message:
    """A decoded RPC message.

    ``style`` is ``STYLE_LEGACY`` or ``STYLE_V2``; ``envelope`` is True when
    the body came in an oslo envelope (always for v2).  ``body`` has been
    checked: ``method`` is a non-empty str, ``args`` (if present) a dict;
    or, on a notification topic only, a notification with no ``method``
    (``is_notification``).

    ``part`` is what the body holds, parsed once here: a ``CallRequest``
    for a call (``-reply``), a ``Reply`` for a reply (``-process_reply``),
    None for a cast or a notification.
    """

    __slots__ = ("msg_id", "topic", "style", "context", "body", "envelope",
                 "part")

    msg_id: str
    topic: str
    style: bytes
    context: dict
    body: dict
    envelope: bool
    part: CallRequest | Reply | None

    @property
    def method(self) -> str:
        """The method name of the body."""
        return self.body[METHOD_KEY]

    @property
    def args(self) -> dict:
        """The keyword arguments of the body ({} when absent)."""
        return self.body.get(ARGS_KEY, {})

    @property
    def is_notification(self) -> bool:
        """True for a notification (a body with no ``method``, which decode
        accepts on notification topics only)."""
        return METHOD_KEY not in self.body

    @property
    def caller_streams(self) -> bool:
        """True when frame 0 (``stream`` or ``stream.<token>``) says the
        caller accepts streamed replies."""
        return self.msg_id == _STREAMS or self.msg_id.startswith(_STREAMS_DOT)

    @property
    def call(self) -> CallRequest | None:
        """The call request of a ``-reply`` body, else None."""
        part = self.part
        return part if type(part) is CallRequest else None

    @property
    def reply(self) -> Reply | None:
        """The reply of a ``-process_reply`` body, else None."""
        part = self.part
        return part if type(part) is Reply else None


@dataclass
class Probe:
    """A path check of our own nodes; old nodes drop it as an unknown style."""

    __slots__ = ("probe_id", "topic")

    probe_id: str
    topic: str


@dataclass
class CallRequest:
    """The parts of a curried ``-reply`` body (see ``parse_call_request``)."""

    __slots__ = ("msg_id", "reply_topic", "msg")

    msg_id: str
    reply_topic: str
    msg: dict


@dataclass
class Reply:
    """The parts of a ``-process_reply`` body (see ``parse_reply``).

    ``more`` is True when further streamed parts follow; legacy replies
    carry no flag and are complete (``more`` False).  ``seq`` numbers a
    streamed part (0, 1, ...); None for an unnumbered (complete) reply,
    and for a number out of range.
    """

    __slots__ = ("msg_id", "response", "more", "seq")

    msg_id: str
    response: list
    more: bool
    seq: int | None


# -- frames --------------------------------------------------------------------

def _as_list(frames: Any) -> list | tuple:
    if type(frames) is list or type(frames) is tuple:
        return frames
    try:
        return list(frames)
    except Exception as exc:  # any non-iterable: not a frame list at all
        raise _error("bad_frame", "frames must be a sequence of byte frames, "
                     "got %s (%s)" % (type(frames).__name__, exc)) from None


def _frame_bytes(frame: Any) -> bytes:
    """One frame as bytes; accepts bytes, bytearray, memoryview, zmq.Frame."""
    if type(frame) is bytes:
        return frame
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return bytes(frame)
    try:
        data = frame.bytes
    except Exception:
        data = None
    if type(data) is not bytes:
        raise _error("bad_frame", "a frame must be bytes-like, got %s"
                     % type(frame).__name__)
    return data


def _frame_size(frame: Any) -> int:
    if type(frame) is bytes or type(frame) is bytearray:
        return len(frame)
    if type(frame) is memoryview:
        return frame.nbytes
    try:
        # zmq.Frame exports a buffer: its size without copying the payload.
        with memoryview(frame) as view:
            return view.nbytes
    except Exception:
        return len(_frame_bytes(frame))


def _checked_frames(frames: Any, limits: Limits) -> list | tuple:
    """Frame count and total size, before anything is parsed."""
    frames = _as_list(frames)
    count = len(frames)
    if count < MIN_FRAMES:
        raise _error("too_few_frames", "%d frame(s), at least %d needed"
                     % (count, MIN_FRAMES))
    if count > limits.max_frames:
        raise _error("too_many_frames", "%d frames, the limit is %d"
                     % (count, limits.max_frames))
    total = 0
    for frame in frames:
        total += _frame_size(frame)
    if total > limits.max_msg_size:
        raise _error("too_large", "%d bytes, the limit is %d"
                     % (total, limits.max_msg_size))
    return frames


def _header(frames: list | tuple, limits: Limits) -> tuple[str, str, bytes]:
    """msg_id, topic and style after the cheap checks (no JSON parse)."""
    msg_id = _msg_id_of(_frame_bytes(frames[MSG_ID]))
    topic = _topic_of(_frame_bytes(frames[TOPIC]), limits)
    raw_style = _frame_bytes(frames[STYLE])
    count = len(frames)
    if raw_style == STYLE_LEGACY:
        style = STYLE_LEGACY
        if count < LEGACY_FRAMES:
            raise _error("too_few_frames", "legacy style needs %d frames, "
                         "got %d" % (LEGACY_FRAMES, count))
        if count > LEGACY_FRAMES:
            raise _error("too_many_frames", "legacy style has %d frames, "
                         "got %d" % (LEGACY_FRAMES, count))
    elif raw_style == STYLE_V2:
        style = STYLE_V2
        if count <= V2_CONTEXT:
            raise _error("too_few_frames", "v2 style needs a context frame")
        if (count - V2_ENVELOPE_START) % 2:
            raise _error("bad_envelope", "odd number of envelope frames: %d"
                         % (count - V2_ENVELOPE_START))
    elif raw_style == STYLE_PROBE:
        style = STYLE_PROBE
        if count > PROBE_FRAMES:
            raise _error("too_many_frames", "a probe has %d frames, got %d"
                         % (PROBE_FRAMES, count))
    else:
        raise _error("unknown_style", "frame 2 is %s" % _snippet(raw_style))
    return msg_id, topic, style


# -- bodies --------------------------------------------------------------------

def _check_body(body: Any, what: str = "message body") -> dict:
    if type(body) is not dict:
        raise _error("bad_body", "%s must be a JSON object, got %s"
                     % (what, type(body).__name__))
    method = body.get(METHOD_KEY)
    if type(method) is not str or not method:
        raise _error("bad_body", "%s needs a non-empty string 'method', got %s"
                     % (what, _snippet(method)))
    if type(body.get(ARGS_KEY, _EMPTY_ARGS)) is not dict:
        raise _error("bad_body", "'args' of %s must be an object" % method)
    version = body.get(VERSION_KEY)
    namespace = body.get(NAMESPACE_KEY)
    if (version is not None and type(version) is not str) or (
            namespace is not None and type(namespace) is not str):
        raise _error("bad_body", "'version' and 'namespace' of %s must be "
                     "strings or null" % method)
    return body


def _args_msg_id(args: dict, method: str) -> str:
    msg_id = args.get(MSG_ID_KEY)
    if (type(msg_id) is not str or not 0 < len(msg_id) <= MAX_MSG_ID_LENGTH
            or _ID_STR_RE.fullmatch(msg_id) is None):
        raise _error("bad_body", "%s needs a msg_id of %s, got %s"
                     % (method, _TOPIC_CHARSET, _snippet(msg_id)))
    return msg_id


def parse_call_request(body: dict) -> CallRequest:
    """The parts of a curried ``-reply`` body (call request).

    The caller's context is the context of the outer message; the copy in
    ``args.msg[0]`` is legacy redundancy and is not read.  Raises
    ``RemoteProtocolError("bad_body")``.
    """
    return _call_request_of(_check_body(body).get(ARGS_KEY, {}))


def _call_request_of(args: dict) -> CallRequest:
    msg_id = _args_msg_id(args, REPLY_METHOD)
    topic = args.get(REPLY_TOPIC_KEY)
    if (type(topic) is not str or not is_reply_topic(topic)
            or len(topic) > DEFAULT_LIMITS.max_topic_length
            or _TOPIC_STR_RE.fullmatch(topic) is None):
        raise _error("bad_body", "-reply needs a safe %s.<host> topic, got %s"
                     % (REPLIES_PREFIX, _snippet(topic)))
    inner = args.get(REPLY_MSG_KEY)
    if type(inner) is list and inner:
        # Havana sends [context json, msg]; Folsom sent msg alone.
        inner = inner[-1]
    return CallRequest(msg_id, topic, _check_body(inner, "-reply msg"))


def parse_reply(body: dict) -> Reply:
    """The parts of a ``-process_reply`` body.

    Raises ``RemoteProtocolError("bad_body")``.
    """
    return _reply_of(_check_body(body).get(ARGS_KEY, {}))


def _reply_of(args: dict) -> Reply:
    msg_id = _args_msg_id(args, PROCESS_REPLY_METHOD)
    response = args.get(RESPONSE_KEY)
    if type(response) is not list:
        raise _error("bad_body", "-process_reply needs a response list, got %s"
                     % type(response).__name__)
    more = args.get(MORE_KEY, False)
    if type(more) is not bool:
        raise _error("bad_body", "'more' must be true or false, got %s"
                     % _snippet(more))
    seq = args.get(SEQ_KEY)  # None: unnumbered, one complete reply
    if seq is not None and (type(seq) is not int or not 0 <= seq < MAX_SEQ):
        seq = None  # out of range: read as unnumbered, as before
    return Reply(msg_id, response, more, seq)


def _message_part(body: Any, topic: str = "") -> CallRequest | Reply | None:
    """Check ``body`` (a dict then) and return its part (``Message.part``)."""
    if type(body) is dict and METHOD_KEY not in body and topic \
            and is_notification_topic(topic):
        return None
    method = _check_body(body)[METHOD_KEY]
    if method == REPLY_METHOD:
        return _call_request_of(body.get(ARGS_KEY, _EMPTY_ARGS))
    if method == PROCESS_REPLY_METHOD:
        return _reply_of(body.get(ARGS_KEY, _EMPTY_ARGS))
    return None


def _context_of(value: Any, limits: Limits) -> dict:
    if type(value) is str:
        value = _loads_text(value, limits, "context")
    if type(value) is not dict:
        raise _error("bad_context", "context must be a JSON object, got %s"
                     % type(value).__name__)
    return value


def _check_envelope_version(version: Any) -> None:
    if type(version) is not str or version.split(".", 1)[0] != ENVELOPE_MAJOR:
        raise _error("bad_envelope_version", "envelope version %s, major %s "
                     "expected" % (_snippet(version), ENVELOPE_MAJOR))


def _unwrap_legacy(msg: Any, limits: Limits) -> tuple[Any, bool]:
    if type(msg) is not dict or (ENVELOPE_MESSAGE_KEY not in msg
                                 and ENVELOPE_VERSION_KEY not in msg):
        return msg, False
    inner = msg.get(ENVELOPE_MESSAGE_KEY)
    if type(inner) is not str:
        raise _error("bad_envelope", "envelope needs a JSON string %r"
                     % ENVELOPE_MESSAGE_KEY)
    _check_envelope_version(msg.get(ENVELOPE_VERSION_KEY))
    return _loads_text(inner, limits, "enveloped message"), True


def _decode_legacy(raw: bytes, limits: Limits, topic: str = ""
                   ) -> tuple[dict, dict, Any, bool]:
    payload = _loads_bytes(raw, limits, "legacy payload")
    if type(payload) is not list or len(payload) != 2:
        raise _error("bad_body", "legacy payload must be the JSON list "
                     "[context, message]")
    context = _context_of(payload[0], limits)
    msg, envelope = _unwrap_legacy(payload[1], limits)
    return context, msg, _message_part(msg, topic), envelope


def _decode_v2(frames: list | tuple, limits: Limits, topic: str = ""
               ) -> tuple[dict, dict, Any]:
    context = _context_of(
        _loads_bytes(_frame_bytes(frames[V2_CONTEXT]), limits, "context"),
        limits)
    pairs: dict[bytes, bytes] = {}
    for index in range(V2_ENVELOPE_START, len(frames), 2):
        key = _frame_bytes(frames[index])
        if key in pairs:
            raise _error("bad_envelope", "envelope key %s given twice"
                         % _snippet(key))
        pairs[key] = _frame_bytes(frames[index + 1])
    raw_msg = pairs.get(_ENVELOPE_MESSAGE_KEY_B)
    if raw_msg is None:
        raise _error("bad_envelope", "no %r frame" % ENVELOPE_MESSAGE_KEY)
    raw_version = pairs.get(_ENVELOPE_VERSION_KEY_B)
    if raw_version is not None:
        if raw_version == _ENVELOPE_VERSION_B:
            version: Any = ENVELOPE_VERSION
        else:
            version = raw_version.decode("ascii", "replace")
    else:
        version = None
    _check_envelope_version(version)
    body = _loads_bytes(raw_msg, limits, "enveloped message")
    return context, body, _message_part(body, topic)


# -- decoding ------------------------------------------------------------------

def peek(frames: Sequence[Any], limits: Limits = DEFAULT_LIMITS
         ) -> tuple[str, bytes]:
    """(topic, style) after the cheap checks only, for a forwarding hop.

    Checks frame count, total size, msg_id, topic and a known style; parses
    no JSON and copies only the first three frames.  Raises
    ``RemoteProtocolError`` and nothing else.
    """
    frames = _checked_frames(frames, limits)
    _, topic, style = _header(frames, limits)
    return topic, style


def decode(frames: Sequence[Any], limits: Limits = DEFAULT_LIMITS
           ) -> Message | Probe:
    """Turn received frames into a ``Message`` (its ``part`` a call
    request, a reply or None for a cast) or a ``Probe``.

    Frames may be bytes, bytearray, memoryview or zmq.Frame-like objects
    (with ``.bytes``).  Raises ``errors.RemoteProtocolError(reason, detail)``
    and nothing else, whatever the input; ``reason`` is one of ``REASONS``.
    """
    try:
        frames = _checked_frames(frames, limits)
        msg_id, topic, style = _header(frames, limits)
        if style is STYLE_LEGACY:
            context, body, part, envelope = _decode_legacy(
                _frame_bytes(frames[LEGACY_PAYLOAD]), limits, topic)
            return Message(msg_id, topic, style, context, body, envelope,
                           part)
        if style is STYLE_V2:
            context, body, part = _decode_v2(frames, limits, topic)
            return Message(msg_id, topic, style, context, body, True, part)
        return Probe(msg_id, topic)
    except RecursionError:
        # Only reachable with a limits.max_json_depth larger than the
        # interpreter's own stack allows.
        raise _error("too_deep", "message nests too deeply") from None


def _direct_json(data: Any, limits: Limits, mark: bytes, what: str) -> Any:
    """The JSON after ``mark`` of a one-part direct message, its size
    checked first."""
    raw = _frame_bytes(data)
    if len(raw) > limits.max_msg_size:
        raise _error("too_large", "%d bytes, the limit is %d"
                     % (len(raw), limits.max_msg_size))
    if not raw.startswith(mark):
        raise _error("unknown_style", "not a %s: %s" % (what,
                                                      _snippet(raw[:16])))
    try:
        return _loads_bytes(raw[len(mark):], limits, what)
    except RecursionError:
        raise _error("too_deep", "%s nests too deeply" % what) from None


def decode_direct_reply(data: Any, limits: Limits = DEFAULT_LIMITS) -> Reply:
    """The ``Reply`` of a one-part direct reply (``encode_direct_reply``).

    Checks as ``decode`` does for a ``-process_reply``: the size, the JSON,
    a msg_id of the safe characters, a response list, ``more`` a bool; a
    ``seq`` out of range reads as unnumbered. Raises
    ``errors.RemoteProtocolError`` and nothing else, whatever the input.
    """
    value = _direct_json(data, limits, DIRECT_REPLY_MARK, "direct reply")
    if type(value) is not list or len(value) != 4:
        raise _error("bad_body", "a direct reply is the JSON list [msg_id, "
                     "response, more, seq]")
    msg_id, response, more, seq = value
    if (type(msg_id) is not str or not 0 < len(msg_id) <= MAX_MSG_ID_LENGTH
            or _ID_STR_RE.fullmatch(msg_id) is None):
        raise _error("bad_body", "a direct reply needs a msg_id of %s, got %s"
                     % (_TOPIC_CHARSET, _snippet(msg_id)))
    if type(response) is not list:
        raise _error("bad_body", "a direct reply needs a response list, got "
                     "%s" % type(response).__name__)
    if type(more) is not bool:
        raise _error("bad_body", "'more' must be true or false, got %s"
                     % _snippet(more))
    if type(seq) is not int or not 0 <= seq < MAX_SEQ:
        seq = None  # -1: unnumbered; out of range: read as unnumbered
    return Reply(msg_id, response, more, seq)


def decode_direct_call(data: Any, limits: Limits = DEFAULT_LIMITS
                       ) -> Message:
    """The ``Message`` of a one-part direct call (``encode_direct_call``):
    the one ``decode`` gives for the call in the wire's form (its ``body``
    the ``-reply`` body without the context copy).

    Checks as ``decode`` does: the size, the JSON, frame 0, the topic,
    the context, the call request. Raises ``errors.RemoteProtocolError``
    and nothing else, whatever the input.
    """
    value = _direct_json(data, limits, DIRECT_CALL_MARK, "direct call")
    try:
        if type(value) is not list or len(value) != 6:
            raise _error("bad_body", "a direct call is the JSON list [frame "
                         "0, topic, msg_id, reply topic, context, message]")
        mark, topic, msg_id, reply_topic, context, msg = value
        if type(mark) is not str or type(topic) is not str:
            raise _error("bad_frame", "frame 0 and the topic of a direct "
                         "call must be strings")
        mark = _msg_id_of(mark.encode("utf-8", "surrogatepass"))
        topic = _topic_of(topic.encode("utf-8", "surrogatepass"), limits)
        args = {MSG_ID_KEY: msg_id, REPLY_TOPIC_KEY: reply_topic,
                REPLY_MSG_KEY: msg}
        request = _call_request_of(args)
        if type(context) is not dict:
            raise _error("bad_context", "the context of a direct call must "
                         "be a JSON object, got %s" % type(context).__name__)
    except RecursionError:
        raise _error("too_deep", "direct call nests too deeply") from None
    return Message(mark, topic, STYLE_LEGACY, context,
                   {METHOD_KEY: REPLY_METHOD, ARGS_KEY: args}, False, request)
