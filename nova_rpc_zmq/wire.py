"""Frames <-> messages: the byte layout of the Grizzly/Havana ``impl_zmq`` wire.

This module is pure (sans-IO): it takes ZeroMQ multipart frames and returns
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

``decode`` raises ``errors.RemoteProtocolError(reason, detail)`` and nothing
else for any input; ``reason`` is one of ``REASONS`` and is meant to be used
as a counter name.  The encoding side raises ``errors.LocalError`` for our
caller's mistakes (a value that is not JSON, a bad topic).
"""

from __future__ import annotations

import enum
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from nova_rpc_zmq import errors

# -- frame indexes -----------------------------------------------------------
MSG_ID, TOPIC, STYLE = 0, 1, 2
LEGACY_PAYLOAD = 3
V2_CONTEXT = 3
V2_ENVELOPE_START = 4
LEGACY_FRAMES = 4          # a legacy message has exactly this many frames
PROBE_FRAMES = 3           # and a probe this many
MIN_FRAMES = 3

# -- style markers (frame 2) and frame-0 values --------------------------------
STYLE_LEGACY = b"cast"
STYLE_V2 = b"impl_zmq_v2"
STYLE_PROBE = b"nova_rpc_zmq_probe"
NO_MSG_ID = b"0"
CALLER_STREAMS = b"stream"
MAX_MSG_ID_LENGTH = 255

# -- topics -------------------------------------------------------------------
FANOUT_PREFIX = "fanout~"
REPLIES_PREFIX = "zmq_replies"
TOPIC_SEPARATOR = "."
ROUTE_PUB = "pub"
ROUTE_PUSH = "push"

# -- message bodies -------------------------------------------------------------
REPLY_METHOD = "-reply"
#: Last part of a notification topic (``notifications-info``): its messages
#: are notifications (``event_type``, ``payload``...), with no ``method``.
NOTIFICATION_PRIORITIES = ("debug", "info", "warn", "warning", "error",
                           "critical", "audit", "sample")
NOTIFICATION_SEPARATOR = "-"
PROCESS_REPLY_METHOD = "-process_reply"
METHOD_KEY = "method"
ARGS_KEY = "args"
VERSION_KEY = "version"
NAMESPACE_KEY = "namespace"
MSG_ID_KEY = "msg_id"          # in the args of -reply and -process_reply
REPLY_TOPIC_KEY = "topic"      # in the args of -reply
REPLY_MSG_KEY = "msg"          # in the args of -reply: [context json, msg]
RESPONSE_KEY = "response"      # in the args of -process_reply
MORE_KEY = "more"              # ours: more streamed parts follow
SEQ_KEY = "seq"                # ours: a streamed part's position (0, 1, ...)
MAX_SEQ = 1 << 31
EXC_KEY = "exc"                # a response element carrying a remote error

# -- oslo envelope --------------------------------------------------------------
ENVELOPE_VERSION_KEY = "oslo.version"
ENVELOPE_MESSAGE_KEY = "oslo.message"
ENVELOPE_VERSION = "2.0"
ENVELOPE_MAJOR = "2"

#: Every ``RemoteProtocolError.reason`` that ``decode``/``peek`` can raise.
#: ``bad_frame`` is only for objects that are not byte frames at all (a bug
#: of the code that called us, never seen from a real socket).
REASONS = ("too_few_frames", "too_many_frames", "too_large", "bad_frame",
           "bad_msg_id", "bad_topic", "unknown_style", "bad_json", "too_deep",
           "bad_context", "bad_body", "bad_envelope", "bad_envelope_version")

_TOPIC_CHARSET = "[A-Za-z0-9_.~:@-]"        # also the charset of msg ids
_ID_PATTERN = _TOPIC_CHARSET + "+"
# Every topic rule in one match: dot-separated non-empty parts (so no
# leading, trailing or double '.'), and a fanout prefix followed by a name.
_TOPIC_PATTERN = (r"(?!%s(?:\.|\Z))[A-Za-z0-9_~:@-]+(?:\.[A-Za-z0-9_~:@-]+)*"
                  % re.escape(FANOUT_PREFIX))
_ID_RE = re.compile(_ID_PATTERN.encode("ascii"))
_ID_STR_RE = re.compile(_ID_PATTERN, re.ASCII)
_TOPIC_RE = re.compile(_TOPIC_PATTERN.encode("ascii"))
_TOPIC_STR_RE = re.compile(_TOPIC_PATTERN, re.ASCII)
_DOT = ord(".")
_EMPTY_ARGS: dict = {}         # never mutated; stands for absent args
_REPLIES_DOT = REPLIES_PREFIX + TOPIC_SEPARATOR
_STREAMS = CALLER_STREAMS.decode("ascii")
_STREAMS_DOT = _STREAMS + TOPIC_SEPARATOR
_FANOUT_PREFIX_B = FANOUT_PREFIX.encode("ascii")
_ENVELOPE_VERSION_KEY_B = ENVELOPE_VERSION_KEY.encode("ascii")
_ENVELOPE_VERSION_B = ENVELOPE_VERSION.encode("ascii")
_ENVELOPE_MESSAGE_KEY_B = ENVELOPE_MESSAGE_KEY.encode("ascii")

# Module-level coders: json.dumps/loads with keyword arguments build a new
# coder per call, which costs more than the encoding of a small message.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False,
                            default=lambda value: _plain(value))
_ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True,
                                  default=lambda value: _plain(value))
_DECODER = json.JSONDecoder()
# Where a JSON number can start (after '[', ':', ',' or white space), the
# bytes of a text map to ':', digits to '0': a number of 19 digits or more
# shows as ':' and 19 zeros, with '-' between for a negative one.
_NUMBER_MAP = bytes(ord("0") if chr(c).isdigit() and c < 128 else
                    ord(":") if chr(c) in ":,[ \t\n\r" else c
                    for c in range(256))
_LONG_NUMBER = b":" + b"0" * 19
_LONG_NEGATIVE = b":-" + b"0" * 19
try:
    import orjson as _orjson
    _fast_loads: Any = _orjson.loads
    _FastError: Any = _orjson.JSONDecodeError
    # orjson writes datetimes, dataclasses and subclasses of the JSON types
    # its own way: those go to the standard encoder (which refuses the
    # first two), so that both write the same values
    _fast_dumps: Any = _orjson.dumps
    _FAST_DUMPS_OPTIONS = (_orjson.OPT_PASSTHROUGH_DATETIME
                           | _orjson.OPT_PASSTHROUGH_DATACLASS
                           | _orjson.OPT_PASSTHROUGH_SUBCLASS)
except ImportError:  # optional: the standard coders alone give the same results
    _fast_loads = None
    _fast_dumps = None

    class _FastError(Exception):  # type: ignore[no-redef]
        pass


@dataclass(frozen=True)
class Limits:
    """Bounds a received message must stay within (all must be positive).

    Raises ``errors.ConfigurationError`` when a value is not a positive int.
    """

    max_msg_size: int = 16 * 1024 * 1024
    max_frames: int = 64
    max_topic_length: int = 255
    max_json_depth: int = 64

    def __post_init__(self) -> None:
        for name in ("max_msg_size", "max_frames", "max_topic_length",
                     "max_json_depth"):
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                raise errors.ConfigurationError(
                    "wire limit %s must be a positive integer, got %r"
                    % (name, value))


DEFAULT_LIMITS = Limits()


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
    """

    __slots__ = ("msg_id", "topic", "style", "context", "body", "envelope")

    msg_id: str
    topic: str
    style: bytes
    context: dict
    body: dict
    envelope: bool

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
    carry no flag and are complete (``more`` False).
    """

    __slots__ = ("msg_id", "response", "more")

    msg_id: str
    response: list
    more: bool


def _error(reason: str, detail: str) -> errors.RemoteProtocolError:
    return errors.RemoteProtocolError(reason, detail)


def _snippet(value: Any, limit: int = 60) -> str:
    """A short printable view of a bad value, safe to log."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


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


def _msg_id_of(raw: bytes) -> str:
    if not 0 < len(raw) <= MAX_MSG_ID_LENGTH or _ID_RE.fullmatch(raw) is None:
        raise _error("bad_msg_id", "frame 0 must be 1-%d characters of %s, "
                     "got %s" % (MAX_MSG_ID_LENGTH, _TOPIC_CHARSET,
                                 _snippet(raw)))
    return raw.decode("ascii")


def _topic_problem(raw: bytes, limits: Limits) -> str:
    """Why a topic failed the one-regex check (only run on failure)."""
    size = len(raw)
    if size == 0:
        return "empty topic"
    if size > limits.max_topic_length:
        return "topic of %d characters, the limit is %d" % (
            size, limits.max_topic_length)
    if _ID_RE.fullmatch(raw) is None:
        why = "characters outside %s" % _TOPIC_CHARSET
    elif raw[0] == _DOT or raw[-1] == _DOT:
        why = "leading or trailing '.'"
    elif b".." in raw:
        why = "'..' in topic"
    else:
        why = "fanout topic without a topic name"
    return "%s: %s" % (why, _snippet(raw))


def _topic_of(raw: bytes, limits: Limits) -> str:
    if (0 < len(raw) <= limits.max_topic_length
            and _TOPIC_RE.fullmatch(raw) is not None):
        return raw.decode("ascii")
    raise _error("bad_topic", _topic_problem(raw, limits))


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


# -- JSON ----------------------------------------------------------------------

def _check_depth(value: Any, limit: int, what: str) -> None:
    """Iterative nesting check (a recursive one could be made to overflow)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise _error("too_deep", "%s nests deeper than %d" % (what, limit))
        for child in (node.values() if type(node) is dict else node):
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))


def _slow_parse(text: str, what: str) -> Any:
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise _error("too_deep", "%s nests too deeply to parse" % what) from None
    except (ValueError, OverflowError) as exc:
        raise _error("bad_json", "%s: %s" % (what, _snippet(str(exc), 120))) \
            from None


def _may_hold_long_number(text: str | bytes) -> bool:
    """True when ``text`` may hold a JSON number of 19 digits or more.

    Never False for such a number; True also for some strings (those
    with ':' or ',' before 19 digits), which only costs the slower parse.
    About four times cheaper than a regular expression.
    """
    if type(text) is str:
        text = text.encode("utf-8", "surrogatepass")
    mapped = text.translate(_NUMBER_MAP)
    return (_LONG_NUMBER in mapped or _LONG_NEGATIVE in mapped
            or mapped.startswith(_LONG_NUMBER[1:])
            or mapped.startswith(_LONG_NEGATIVE[1:]))


def _parse(text: str, bound: int, limits: Limits, what: str,
           raw: bytes | None = None) -> Any:
    """Parse JSON text; ``bound`` is an upper bound of its nesting depth;
    ``raw`` is the text's UTF-8 bytes when the caller has them."""
    try:
        # orjson parses valid JSON three times faster; anything it refuses
        # (NaN from old nodes, errors) goes to the standard parser, which
        # has the last word and the error message. orjson turns integers
        # beyond 64 bits into floats without a word, so text that may hold
        # a number of 19 digits or more goes to the standard parser too.
        if _fast_loads is not None and not _may_hold_long_number(
                text if raw is None else raw):
            value = _fast_loads(text)
        else:
            value = _DECODER.decode(text)
    except _FastError:
        value = _slow_parse(text, what)
    except RecursionError:
        raise _error("too_deep", "%s nests too deeply to parse" % what) from None
    except (ValueError, OverflowError) as exc:
        raise _error("bad_json", "%s: %s" % (what, _snippet(str(exc), 120))) \
            from None
    # Brackets counted in the text (strings included) bound the depth, so
    # the walk is needed only for large messages.
    if bound > limits.max_json_depth and (type(value) is dict
                                          or type(value) is list):
        _check_depth(value, limits.max_json_depth, what)
    return value


def _loads_bytes(raw: bytes, limits: Limits, what: str) -> Any:
    try:
        # Decode ourselves: json.loads(bytes) would also accept UTF-16/32.
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _error("bad_json", "%s is not UTF-8: %s" % (what, exc)) from None
    return _parse(text, raw.count(b"[") + raw.count(b"{"), limits, what, raw)


def _loads_text(text: str, limits: Limits, what: str) -> Any:
    return _parse(text, text.count("[") + text.count("{"), limits, what)


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
    return Reply(msg_id, response, more)


def _check_message_body(body: Any, topic: str = "") -> dict:
    if type(body) is dict and METHOD_KEY not in body and topic \
            and is_notification_topic(topic):
        return body
    body = _check_body(body)
    method = body[METHOD_KEY]
    if method == REPLY_METHOD:
        _call_request_of(body.get(ARGS_KEY, {}))
    elif method == PROCESS_REPLY_METHOD:
        _reply_of(body.get(ARGS_KEY, {}))
    return body


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
                   ) -> tuple[dict, dict, bool]:
    payload = _loads_bytes(raw, limits, "legacy payload")
    if type(payload) is not list or len(payload) != 2:
        raise _error("bad_body", "legacy payload must be the JSON list "
                     "[context, message]")
    context = _context_of(payload[0], limits)
    msg, envelope = _unwrap_legacy(payload[1], limits)
    return context, _check_message_body(msg, topic), envelope


def _decode_v2(frames: list | tuple, limits: Limits, topic: str = ""
               ) -> tuple[dict, dict]:
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
    return context, _check_message_body(body, topic)


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
    """Turn received frames into a ``Message`` or a ``Probe``.

    Frames may be bytes, bytearray, memoryview or zmq.Frame-like objects
    (with ``.bytes``).  Raises ``errors.RemoteProtocolError(reason, detail)``
    and nothing else, whatever the input; ``reason`` is one of ``REASONS``.
    """
    try:
        frames = _checked_frames(frames, limits)
        msg_id, topic, style = _header(frames, limits)
        if style is STYLE_LEGACY:
            context, body, envelope = _decode_legacy(
                _frame_bytes(frames[LEGACY_PAYLOAD]), limits, topic)
            return Message(msg_id, topic, style, context, body, envelope)
        if style is STYLE_V2:
            context, body = _decode_v2(frames, limits, topic)
            return Message(msg_id, topic, style, context, body, True)
        return Probe(msg_id, topic)
    except RecursionError:
        # Only reachable with a limits.max_json_depth larger than the
        # interpreter's own stack allows.
        raise _error("too_deep", "message nests too deeply") from None


# -- topics --------------------------------------------------------------------

def check_topic(topic: str | bytes | bytearray | memoryview,
                limits: Limits = DEFAULT_LIMITS) -> str:
    """The topic as str if it is safe (charset, length, no '..').

    Raises ``RemoteProtocolError("bad_topic", why)``.
    """
    if type(topic) is str:
        if (0 < len(topic) <= limits.max_topic_length
                and _TOPIC_STR_RE.fullmatch(topic) is not None):
            return topic
        if not topic.isascii():
            raise _error("bad_topic", "non-ASCII topic %s" % _snippet(topic))
        raise _error("bad_topic", _topic_problem(topic.encode("ascii"), limits))
    if isinstance(topic, (bytes, bytearray, memoryview)):
        return _topic_of(bytes(topic), limits)
    raise _error("bad_topic", "topic must be text, got %s"
                 % type(topic).__name__)


def _local_topic(topic: str, what: str = "topic") -> bytes:
    """A topic we are about to send, or LocalError naming the mistake."""
    if (type(topic) is str and len(topic) <= DEFAULT_LIMITS.max_topic_length
            and _TOPIC_STR_RE.fullmatch(topic) is not None):
        return topic.encode("ascii")
    try:
        return check_topic(topic).encode("ascii")
    except errors.RemoteProtocolError as exc:
        raise errors.LocalError(
            "cannot send to %s %r: %s; topics and host names may use only %s, "
            "at most %d characters, no '..' and no leading or trailing '.'"
            % (what, topic, exc.detail, _TOPIC_CHARSET,
               DEFAULT_LIMITS.max_topic_length)) from None


def is_fanout(topic: str | bytes) -> bool:
    """True for ``fanout~...`` topics."""
    if isinstance(topic, str):
        return topic.startswith(FANOUT_PREFIX)
    return bytes(topic).startswith(_FANOUT_PREFIX_B)


def is_reply_topic(topic: str | bytes) -> bool:
    """True for ``zmq_replies`` and ``zmq_replies.<host>``."""
    if not isinstance(topic, str):
        topic = bytes(topic).decode("ascii", "replace")
    return topic == REPLIES_PREFIX or topic.startswith(_REPLIES_DOT)


def route(topic: str) -> tuple[str, str]:
    """Where a receiver forwards a checked topic: (local topic, kind).

    Fanout topics go to the PUB of their bare fanout topic (a directed
    fanout ``fanout~compute.h1`` as well); replies go to a PUB; everything
    else to a PUSH of the topic itself.  ``kind`` is ROUTE_PUB/ROUTE_PUSH.
    """
    if topic.startswith(FANOUT_PREFIX):
        return topic.split(TOPIC_SEPARATOR, 1)[0], ROUTE_PUB
    if is_reply_topic(topic):
        return topic, ROUTE_PUB
    return topic, ROUTE_PUSH


def is_notification_topic(topic: str) -> bool:
    """True for ``notifications-info`` and the like (bare, directed or
    fanout): a topic whose last ``-`` part is a priority of
    ``NOTIFICATION_PRIORITIES``."""
    head, sep, priority = bare_topic(topic).rpartition(NOTIFICATION_SEPARATOR)
    return bool(sep and head) and priority in NOTIFICATION_PRIORITIES


def notification_topic(topic: str) -> str:
    """Where a notification for ``topic`` goes: ``notifications.info`` ->
    ``notifications-info`` (a dot would direct it to a host named info)."""
    return topic.replace(TOPIC_SEPARATOR, NOTIFICATION_SEPARATOR)


def bare_topic(topic: str) -> str:
    """``compute.h1`` -> ``compute``; ``fanout~compute.h`` -> ``compute``."""
    if topic.startswith(FANOUT_PREFIX):
        topic = topic[len(FANOUT_PREFIX):]
    return topic.split(TOPIC_SEPARATOR, 1)[0]


def directed_topic(topic: str, host: str) -> str:
    """``("compute", "h1")`` -> ``"compute.h1"``; LocalError if unsafe."""
    if not host:
        raise errors.LocalError("cannot direct topic %r to an empty host name"
                                % (topic,))
    directed = topic + TOPIC_SEPARATOR + host
    _local_topic(directed, "directed topic")
    return directed


def fanout_topic(topic: str) -> str:
    """``"compute"`` -> ``"fanout~compute"`` (unchanged if already fanout)."""
    if topic.startswith(FANOUT_PREFIX):
        return topic
    fanout = FANOUT_PREFIX + topic
    _local_topic(fanout, "fanout topic")
    return fanout


def reply_topic(host: str) -> str:
    """``"zmq_replies.<host>"``, where replies to ``host``'s calls go."""
    topic = REPLIES_PREFIX + TOPIC_SEPARATOR + host
    _local_topic(topic, "reply topic of host")
    return topic


# -- encoding ------------------------------------------------------------------

def _plain(value: Any) -> Any:
    """UUIDs and enum members as JSON has them (their text, their value)."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError("Object of type %s is not JSON serializable"
                    % type(value).__name__)


def _unserialisable_at(obj: Any) -> str | None:
    """Path of the first value json cannot encode (only run on failure)."""
    stack: list[tuple[str, Any]] = [("", obj)]
    seen: set[int] = set()
    while stack:
        path, value = stack.pop()
        if value is None or isinstance(value, (str, int, float, uuid.UUID)):
            continue
        if isinstance(value, enum.Enum):
            stack.append((path, value.value))
            continue
        if isinstance(value, (dict, list, tuple)):
            if id(value) in seen:
                continue
            seen.add(id(value))
            if isinstance(value, dict):
                for key, item in value.items():
                    if key is not None and not isinstance(key, (str, int,
                                                                float)):
                        return "key %s of %s" % (_snippet(key), path or "it")
                    stack.append(("%s[%r]" % (path, key), item))
            else:
                stack.extend(("%s[%d]" % (path, i), item)
                             for i, item in enumerate(value))
            continue
        return "%s is a %s" % (path or "it", type(value).__name__)
    return None


def _stdlib_bytes(obj: Any, what: str) -> bytes:
    try:
        text = _ENCODER.encode(obj)
    except RecursionError:
        raise errors.LocalError("cannot send the %s as JSON: it nests too "
                                "deeply (or refers to itself)" % what) from None
    except (TypeError, ValueError, OverflowError) as exc:
        where = _unserialisable_at(obj)
        raise errors.LocalError(
            "cannot send the %s as JSON: %s; send only dicts, lists, str, "
            "int, float, bool and None (convert other values first, e.g. a "
            "datetime to an ISO 8601 string)" % (what, where or exc)) from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates cannot be UTF-8; escaped they are valid JSON.
        return _ASCII_ENCODER.encode(obj).encode("ascii")


def _json_bytes(obj: Any, what: str) -> bytes:
    if _fast_dumps is not None:
        try:
            raw = _fast_dumps(obj, option=_FAST_DUMPS_OPTIONS)
        except TypeError:
            # a type orjson leaves to us (datetime, subclasses), an integer
            # beyond 64 bits, a key that is not str, a lone surrogate: the
            # standard encoder has the last word and the error message
            pass
        else:
            # orjson writes NaN and the infinities as null; the standard
            # encoder writes them as old nodes do (NaN, Infinity)
            if b"null" not in raw:
                return raw
    return _stdlib_bytes(obj, what)


def _json_text(obj: Any, what: str) -> str:
    return _json_bytes(obj, what).decode("utf-8")


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON of ``obj`` (never pickle).

    Raises ``errors.LocalError`` naming the first value that is not JSON.
    """
    return _json_bytes(obj, "value")


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
