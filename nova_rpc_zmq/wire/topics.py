"""Topics and msg ids: the checks a received one must pass, and the
topics we build (directed, fanout, reply, notification)."""

from __future__ import annotations

from nova_rpc_zmq import errors
from nova_rpc_zmq.wire import names as _names
from nova_rpc_zmq.wire.names import (
    _DOT, _FANOUT_PREFIX_B, _REPLIES_DOT, _TOPIC_CHARSET, DEFAULT_LIMITS,
    FANOUT_PREFIX, MAX_MSG_ID_LENGTH, NOTIFICATION_PRIORITIES,
    NOTIFICATION_SEPARATOR, REPLIES_PREFIX, ROUTE_PUB, ROUTE_PUSH,
    TOPIC_SEPARATOR, Limits, _error, _snippet)

# Objects whose methods run per message are bound by assignment, not by
# ``from ... import``: CPython 3.11 compiles a method call on an imported
# name as an attribute look-up plus a bound-method call, which is slower.
_ID_RE = _names._ID_RE
_TOPIC_RE = _names._TOPIC_RE
_TOPIC_STR_RE = _names._TOPIC_STR_RE


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
