"""Coverage-guided fuzzing of ``nova_rpc_zmq.wire.decode`` with atheris.

Run it by hand for as long as you like::

    .venv/bin/python tests/fuzz/fuzz_wire.py CORPUS_DIR -max_total_time=600

The input bytes become a list of frames (see ``frames_from_bytes``); any
exception other than ``RemoteProtocolError`` is a crash, and so is a message
that decodes but does not survive encode -> decode unchanged.  The same
check runs in-process under hypothesis (tests/fuzz/test_wire_fuzz.py), which
also runs this file for a bounded time.

``wire`` is imported only inside ``main`` so that atheris can instrument it.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

#: Splits the input into frames; never part of UTF-8 text, so JSON frames
#: of a seed never contain it by accident.
SEPARATOR = b"\xfe\xff"
#: At most this many splits: more frames than any limit allows.
MAX_SPLIT = 80

# Hand-written header frames as a Havana node sends them (not taken from
# wire.py, so a wrong constant there shows up as a failure here).
_MSG_IDS = (b"0", b"stream", b"0123456789abcdef0123456789abcdef")
_TOPICS = (b"compute", b"compute.host-1.example.com", b"fanout~compute",
           b"zmq_replies.host-1", b"compute.fe80::1")
_STYLES = (b"cast", b"impl_zmq_v2", b"nova_rpc_zmq_probe")

#: Set to "1" to make one known input crash: proves crashes are reported.
SELFTEST_ENV = "NOVA_RPC_ZMQ_FUZZ_SELFTEST"
SELFTEST_INPUT = b"\xffselftest-crash"


def frames_from_bytes(data: bytes) -> tuple[list[bytes], int]:
    """Frames and a limits index (0-3) for one fuzz input.

    Byte 0 picks the shape: bits 0-1 the frame layout, bits 2-3 the limits,
    bits 4-7 the header frames of the structured layouts.
    """
    if not data:
        return [], 0
    mode, rest = data[0], data[1:]
    layout, limits_index, pick = mode & 3, (mode >> 2) & 3, mode >> 4
    header = [_MSG_IDS[pick % 3], _TOPICS[pick % 5]]
    if layout == 0:       # anything at all
        frames = rest.split(SEPARATOR, MAX_SPLIT)
    elif layout == 1:     # a legacy message with a fuzzed payload
        frames = header + [b"cast", rest]
    elif layout == 2:     # a v2 message with fuzzed context/envelope frames
        frames = header + [b"impl_zmq_v2"] + rest.split(SEPARATOR, MAX_SPLIT)
    else:                 # a valid header with any style and any tail
        frames = (header + [_STYLES[pick % 3]]
                  + rest.split(SEPARATOR, MAX_SPLIT)[:8])
    return frames, limits_index


def seed_inputs(wire: ModuleType) -> list[bytes]:
    """A few valid inputs to start the corpus from (one per layout)."""
    ctx = {"user_id": "u1", "project_id": "p1", "roles": ["admin"],
           "is_admin": True, "remote_address": None}
    body = {"method": "ping", "args": {"n": 1, "l": [1.5, {"k": "v\u00e9"}]},
            "version": "1.1", "namespace": None}
    request = wire.call_request("a" * 32, "zmq_replies.caller", ctx, body)
    reply = wire.reply_body("a" * 32, [{"exc": "{}"}, 3], more=False)
    seeds = []
    for msg in (body, request, reply):
        legacy = wire.encode("0", "compute.h1", ctx, msg)
        seeds.append(bytes([1]) + legacy[3])
        seeds.append(bytes([0]) + SEPARATOR.join(legacy))
        v2 = wire.encode("stream", "compute.h1", ctx, msg, envelope=True)
        seeds.append(bytes([2]) + SEPARATOR.join(v2[3:]))
        seeds.append(bytes([0x13]) + SEPARATOR.join(v2[3:]))
    seeds.append(bytes([3]))
    return seeds


_LIMITS: dict[int, Any] = {}


def _limits(wire: ModuleType, index: int) -> Any:
    if not _LIMITS:
        _LIMITS.update({
            0: wire.DEFAULT_LIMITS,
            1: wire.Limits(max_json_depth=4),
            2: wire.Limits(max_msg_size=256, max_frames=8, max_topic_length=16),
            3: wire.Limits(max_json_depth=1, max_frames=6),
        })
    return _LIMITS[index]


def check_input(data: bytes, wire: ModuleType, errors: ModuleType) -> None:
    """Decode one input; raise (a crash) if wire breaks its promises."""
    if data == SELFTEST_INPUT and os.environ.get(SELFTEST_ENV) == "1":
        raise RuntimeError("self-test crash")
    frames, limits_index = frames_from_bytes(data)
    limits = _limits(wire, limits_index)
    try:
        result = wire.decode(frames, limits)
    except errors.RemoteProtocolError as exc:
        if exc.reason not in wire.REASONS:
            raise AssertionError("unknown reason %r" % exc.reason) from exc
        return
    # What decode accepted, peek accepts too and sees alike.
    topic, style = wire.peek(frames, limits)
    if isinstance(result, wire.Probe):
        if (topic, style) != (result.topic, wire.STYLE_PROBE):
            raise AssertionError("peek disagrees with decode on a probe")
        again = wire.decode(wire.encode_probe(result.probe_id, result.topic))
        if again != result:
            raise AssertionError("probe round trip: %r != %r" % (again, result))
        return
    if (topic, style) != (result.topic, result.style):
        raise AssertionError("peek disagrees with decode")
    if not isinstance(result.body, dict) or not isinstance(result.method, str):
        raise AssertionError("decode returned an unchecked body")
    again = wire.decode(wire.encode(result.msg_id, result.topic, result.context,
                                    result.body, envelope=result.envelope))
    # Compare as JSON so that NaN (accepted from old peers) compares equal.
    if (again.msg_id, again.topic, again.envelope) != (
            result.msg_id, result.topic, result.envelope) or (
            wire.dumps(again.context) != wire.dumps(result.context)) or (
            wire.dumps(again.body) != wire.dumps(result.body)):
        raise AssertionError("round trip changed the message: %r -> %r"
                             % (result, again))


def main() -> None:
    """Instrument wire.py and hand control to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["nova_rpc_zmq"]):
        from nova_rpc_zmq import errors, wire

    def test_one_input(data: bytes) -> None:
        check_input(data, wire, errors)

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
