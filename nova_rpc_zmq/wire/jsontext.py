"""JSON text of the wire: the coders, the bounded parse, the compact dump.

Pure: no socket, clock or config. Parsing raises
``errors.RemoteProtocolError`` (``bad_json``, ``too_deep``); dumping raises
``errors.LocalError`` naming the first value JSON cannot carry.
"""

from __future__ import annotations

import enum
import json
import uuid
from typing import Any

from nova_rpc_zmq import errors
from nova_rpc_zmq.wire.names import Limits, _error, _snippet

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
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) \
        else text
    mapped = raw.translate(_NUMBER_MAP)
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
