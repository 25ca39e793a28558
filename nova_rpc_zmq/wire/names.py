"""The names of the ``impl_zmq`` wire: frame indexes, markers, keys, limits.

Every frame index, style marker, topic prefix and envelope key of the wire
is defined here once; the rest of ``wire`` (and of the package) refers to
these names. (The IPC file names and the path limit are ``ipcdir``'s.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

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
PROBE_MARK = "probe"       # ours: probe ids are <16 hex token>probe<n>
CALLER_STREAMS = b"stream"
#: First bytes of a direct reply: one part, ``DIRECT_REPLY_MARK`` then the
#: JSON list ``[msg_id, response, more, seq]`` (seq -1: unnumbered). Ours
#: only, on the direct TCP path to a caller that asked for it
#: (``impl_zmq/remote.py``); distinct from ``frames.PACKED_MARK``.
DIRECT_REPLY_MARK = b"\x00nrzr1"
#: First bytes of a direct call: one part, ``DIRECT_CALL_MARK`` then the
#: JSON list ``[frame 0, topic, msg_id, reply topic, context, message]``.
#: Ours only, on the direct TCP path to consumers that said they take it.
DIRECT_CALL_MARK = b"\x00nrzc1"
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

def _error(reason: str, detail: str) -> errors.RemoteProtocolError:
    return errors.RemoteProtocolError(reason, detail)


def _snippet(value: Any, limit: int = 60) -> str:
    """A short printable view of a bad value, safe to log."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
