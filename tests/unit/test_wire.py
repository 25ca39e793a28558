"""wire.py: golden Havana frames, round trips, every error reason, limits.

Golden frames are written out by hand as a Havana ``impl_zmq`` node puts
them on the wire (Python 2 ``json.dumps``: ", " and ": " separators,
``\\uXXXX`` escapes, the context double-encoded), so that a change of our
byte layout breaks these tests rather than a rolling upgrade.
"""

from __future__ import annotations

import collections
import datetime
import enum
import json
import uuid

import pytest
import zmq

from nova_rpc_zmq import errors, wire

HEX_ID = "9f2c6e0b8a3d4f51b7e2c1d0a9f8e7d6"
CTX = {"user_id": "admin", "project_id": "demo", "is_admin": True,
       "roles": ["admin"], "request_id": "req-42"}
CTX_JSON = (b'"{\\"user_id\\": \\"admin\\", \\"project_id\\": \\"demo\\", '
            b'\\"is_admin\\": true, \\"roles\\": [\\"admin\\"], '
            b'\\"request_id\\": \\"req-42\\"}"')
BODY = {"method": "get_host_uptime", "args": {"host": "node-1"},
        "version": "2.0", "namespace": None}
BODY_JSON = (b'{"method": "get_host_uptime", "args": {"host": "node-1"}, '
             b'"version": "2.0", "namespace": null}')

# A Havana cast: [b"0", topic, b"cast", json.dumps([marshal(ctx), msg])].
HAVANA_CAST = [b"0", b"compute.node-1", b"cast",
               b"[" + CTX_JSON + b", " + BODY_JSON + b"]"]

# A Havana call: the request curried into "-reply"; frame 0 stays "0".
HAVANA_CALL = [b"0", b"compute.node-1", b"cast",
               b"[" + CTX_JSON + b', {"method": "-reply", "args": {"msg_id": "'
               + HEX_ID.encode() + b'", "topic": "zmq_replies.caller-1", '
               b'"msg": [' + CTX_JSON + b", " + BODY_JSON + b"]}}]"]

# A Havana v2 cast: the envelope dict flattened, in dict order (any order).
V2_CTX = (b'{"user_id": "admin", "project_id": "demo", "is_admin": true, '
          b'"roles": ["admin"], "request_id": "req-42"}')
HAVANA_V2 = [b"0", b"compute.node-1", b"impl_zmq_v2", V2_CTX,
             b"oslo.message", BODY_JSON, b"oslo.version", b"2.0"]
HAVANA_V2_SWAPPED = HAVANA_V2[:4] + HAVANA_V2[6:8] + HAVANA_V2[4:6]

# A legacy frame whose message is an oslo envelope (message JSON in a string).
ENVELOPED_LEGACY = [b"0", b"compute", b"cast",
                    b"[" + CTX_JSON + b', {"oslo.version": "2.0", '
                    b'"oslo.message": "{\\"method\\": \\"ping\\", '
                    b'\\"args\\": {\\"x\\": \\"caf\\\\u00e9\\"}}"}]']

EXC_JSON = ('{"class": "ValueError", "module": "exceptions", "message": "boom",'
            ' "tb": ["Traceback ...\\n"], "args": ["boom"], "kwargs": {}}')
# A Havana reply: frame 0 is the call's msg_id, the caller's SUB filter.
HAVANA_REPLY_EXC = [HEX_ID.encode(), b"zmq_replies.caller-1", b"cast",
                    b"[" + CTX_JSON + b', {"method": "-process_reply", '
                    b'"args": {"msg_id": "' + HEX_ID.encode() + b'", '
                    b'"response": [{"exc": ' + json.dumps(EXC_JSON).encode()
                    + b"}]}}]"]


def message(frames: object, limits: wire.Limits = wire.DEFAULT_LIMITS
            ) -> wire.Message:
    """decode, for frames that must give a Message."""
    result = wire.decode(frames, limits)  # type: ignore[arg-type]
    assert isinstance(result, wire.Message)
    return result


def reason_of(frames: object, limits: wire.Limits = wire.DEFAULT_LIMITS
              ) -> str:
    with pytest.raises(errors.RemoteProtocolError) as info:
        wire.decode(frames, limits)  # type: ignore[arg-type]
    return info.value.reason


def legacy(payload: object, topic: bytes = b"compute") -> list[bytes]:
    return [b"0", topic, b"cast", json.dumps(payload).encode()]


def v2(*pairs: bytes, ctx: bytes = b"{}") -> list[bytes]:
    return [b"0", b"compute", b"impl_zmq_v2", ctx, *pairs]


# -- golden frames from old nodes --------------------------------------------

def test_havana_legacy_cast_decodes() -> None:
    msg = message(HAVANA_CAST)
    assert msg == wire.Message("0", "compute.node-1", wire.STYLE_LEGACY, CTX,
                               BODY, False, None)
    assert msg.call is None and msg.reply is None
    assert msg.method == "get_host_uptime"
    assert msg.args == {"host": "node-1"}
    assert not msg.caller_streams


def test_havana_call_request_decodes_and_unpacks() -> None:
    msg = message(HAVANA_CALL)
    assert msg.method == wire.REPLY_METHOD
    request = wire.parse_call_request(msg.body)
    assert request == wire.CallRequest(HEX_ID, "zmq_replies.caller-1", BODY)
    # decode parsed it already: the driver reads msg.call, not the body
    assert msg.call == request and msg.part is msg.call
    assert msg.reply is None


@pytest.mark.parametrize("frames", [HAVANA_V2, HAVANA_V2_SWAPPED],
                         ids=["message-first", "version-first"])
def test_havana_v2_decodes_in_any_pair_order(frames: list[bytes]) -> None:
    msg = message(frames)
    assert msg == wire.Message("0", "compute.node-1", wire.STYLE_V2, CTX, BODY,
                               True, None)


def test_streamed_reply_part_carries_its_seq() -> None:
    frames = wire.encode(HEX_ID, "zmq_replies.caller-1", {},
                         wire.reply_body(HEX_ID, [1], more=True, seq=3))
    assert message(frames).reply == wire.Reply(HEX_ID, [1], True, 3)


@pytest.mark.parametrize("seq", [-1, 1 << 31, "3", 1.0, None])
def test_reply_seq_out_of_range_reads_as_unnumbered(seq: object) -> None:
    body = {"method": "-process_reply",
            "args": {"msg_id": HEX_ID, "response": [1], "seq": seq}}
    frames = wire.encode(HEX_ID, "zmq_replies.caller-1", {}, body)
    reply = message(frames).reply
    assert reply is not None and reply.seq is None and reply.more is False


def test_enveloped_call_request_inside_reply_is_refused() -> None:
    # old nodes envelope the outer -reply body, never the inner msg: decode
    # refuses an enveloped inner msg (the driver no longer unwraps one)
    inner = {"oslo.version": "2.0", "oslo.message": json.dumps(BODY)}
    body = {"method": "-reply", "args": {"msg_id": HEX_ID,
                                         "topic": "zmq_replies.caller-1",
                                         "msg": ["{}", inner]}}
    assert reason_of(legacy(["{}", body])) == "bad_body"


def test_enveloped_legacy_message_is_unwrapped() -> None:
    msg = message(ENVELOPED_LEGACY)
    assert msg.envelope is True
    assert msg.style == wire.STYLE_LEGACY
    assert msg.body == {"method": "ping", "args": {"x": "caf\u00e9"}}
    assert msg.context == CTX


def test_legacy_context_given_as_object_is_accepted() -> None:
    msg = message(legacy([CTX, BODY]))
    assert msg.context == CTX and msg.body == BODY


def test_havana_reply_with_remote_exception() -> None:
    msg = message(HAVANA_REPLY_EXC)
    assert msg.msg_id == HEX_ID and msg.topic == "zmq_replies.caller-1"
    reply = wire.parse_reply(msg.body)
    assert reply.msg_id == HEX_ID and reply.more is False
    assert json.loads(reply.response[0][wire.EXC_KEY])["class"] == "ValueError"


def test_streamed_reply_parts_carry_more() -> None:
    parts = [wire.reply_body(HEX_ID, [1], more=True),
             wire.reply_body(HEX_ID, [2], more=False)]
    decoded = [wire.parse_reply(message(
        wire.encode(HEX_ID, "zmq_replies.c", {}, part)).body) for part in parts]
    assert [(r.response, r.more) for r in decoded] == [([1], True), ([2], False)]


def test_probe_round_trip_and_golden() -> None:
    frames = wire.encode_probe("p-1", "compute.h1")
    assert frames == [b"p-1", b"compute.h1", b"nova_rpc_zmq_probe"]
    assert wire.decode(frames) == wire.Probe("p-1", "compute.h1")


# -- what an old node reads from us ---------------------------------------

def havana_consume(frames: list[bytes]) -> tuple[dict, dict]:
    """The reading steps of a Havana consumer, re-done with plain json."""
    if frames[2] == b"cast":
        ctx, msg = json.loads(frames[3])
        assert isinstance(ctx, str), "old nodes unmarshal a context string"
        return json.loads(ctx), msg
    assert frames[2] == b"impl_zmq_v2"
    envelope = dict(zip(frames[4::2], frames[5::2]))
    assert envelope[b"oslo.version"] == b"2.0"
    return json.loads(frames[3]), json.loads(envelope[b"oslo.message"])


@pytest.mark.parametrize("envelope", [False, True])
def test_old_node_reads_our_frames(envelope: bool) -> None:
    frames = wire.encode("0", "compute.node-1", CTX, BODY, envelope=envelope)
    assert frames[:3] == [b"0", b"compute.node-1",
                          b"impl_zmq_v2" if envelope else b"cast"]
    assert all(type(frame) is bytes for frame in frames)
    assert havana_consume(frames) == (CTX, BODY)


def test_call_request_is_the_old_curried_reply() -> None:
    body = wire.call_request(HEX_ID, "zmq_replies.me", CTX, BODY)
    assert body["method"] == "-reply"
    assert body["args"]["msg_id"] == HEX_ID
    assert body["args"]["topic"] == "zmq_replies.me"
    ctx_text, inner = body["args"]["msg"]
    assert json.loads(ctx_text) == CTX and inner == BODY
    frames = wire.encode(wire.CALLER_STREAMS, "compute.h1", CTX, body)
    assert frames[0] == b"stream"
    msg = message(frames)
    assert msg.caller_streams
    for mark, streams in (("stream.0123456789abcdef", True), ("0", False),
                          ("streamer", False)):
        assert message(wire.encode(mark, "compute", CTX, body)
                           ).caller_streams is streams
    assert wire.parse_call_request(msg.body).msg == BODY


def test_reply_body_legacy_has_no_more_key() -> None:
    assert wire.reply_body(HEX_ID, (1, 2)) == {
        "method": "-process_reply", "args": {"msg_id": HEX_ID,
                                             "response": [1, 2]}}
    assert wire.reply_body(HEX_ID, [], more=True)["args"]["more"] is True


# -- round trips ------------------------------------------------------------

@pytest.mark.parametrize("envelope", [False, True])
def test_round_trip_with_unicode_and_numbers(envelope: bool) -> None:
    ctx = {"user": "\u00e9\u4e2d\U0001f600", "n": None, "f": 1.5}
    body = {"method": "m", "args": {"big": 2 ** 70, "neg": -1, "l": [[], {}],
                                    "s": "quote\" back\\ nl\n"}}
    msg = message(wire.encode(b"0", "compute", ctx, body, envelope=envelope))
    assert (msg.context, msg.body, msg.envelope) == (ctx, body, envelope)


def test_lone_surrogates_are_escaped_and_survive() -> None:
    body = {"method": "m", "args": {"s": "a\ud800b"}}
    frames = wire.encode("0", "compute", {"c": "\udfff"}, body)
    frames[3].decode("ascii")   # escaped, hence plain ASCII
    msg = message(frames)
    assert msg.body == body and msg.context == {"c": "\udfff"}


def test_absent_msg_id_means_zero() -> None:
    assert wire.encode(None, "compute", {}, {"method": "m"})[0] == b"0"
    assert wire.encode("", "compute", {}, {"method": "m"})[0] == wire.NO_MSG_ID


@pytest.mark.parametrize("kind", ["bytearray", "memoryview", "zmq.Frame",
                                  "tuple"])
def test_frame_types_accepted(kind: str) -> None:
    convert = {"bytearray": bytearray, "memoryview": memoryview,
               "zmq.Frame": zmq.Frame, "tuple": bytes}[kind]
    frames: list | tuple = [convert(frame) for frame in HAVANA_V2]
    if kind == "tuple":
        frames = tuple(frames)
    assert message(frames) == message(HAVANA_V2)
    assert wire.peek(frames) == ("compute.node-1", wire.STYLE_V2)


def test_memoryview_with_wide_items_counts_bytes() -> None:
    wide = memoryview(bytearray(b"x" * 40)).cast("I")   # 10 items, 40 bytes
    frames = [b"0", b"compute", b"cast", wide]
    assert reason_of(frames, wire.Limits(max_msg_size=50)) == "too_large"


def test_peek_parses_no_json() -> None:
    frames = [b"0", b"fanout~compute", b"cast", b"{not json"]
    assert wire.peek(frames) == ("fanout~compute", wire.STYLE_LEGACY)
    assert reason_of(frames) == "bad_json"


# -- every error reason -----------------------------------------------------

BAD = [
    ("too_few_frames", []),
    ("too_few_frames", [b"0", b"compute"]),
    ("too_few_frames", [b"0", b"compute", b"cast"]),
    ("too_few_frames", [b"0", b"compute", b"impl_zmq_v2"]),
    ("too_many_frames", [b"0", b"compute", b"cast"] + [b"x"] * 62),
    ("too_many_frames", HAVANA_CAST + [b"extra"]),
    ("too_many_frames", [b"p", b"compute", b"nova_rpc_zmq_probe", b"x"]),
    ("bad_frame", None),
    ("bad_frame", 42),
    ("bad_frame", [b"0", "compute", b"cast", b"[]"]),
    ("bad_frame", [b"0", b"compute", b"cast", object()]),
    ("bad_msg_id", [b"", b"compute", b"cast", b"[]"]),
    ("bad_msg_id", [b"a b", b"compute", b"cast", b"[]"]),
    ("bad_msg_id", [b"\xff", b"compute", b"cast", b"[]"]),
    ("bad_msg_id", [b"a" * 256, b"compute", b"cast", b"[]"]),
    ("unknown_style", [b"0", b"compute", b"CAST", b"[]"]),
    ("unknown_style", [b"0", b"compute", b"", b"[]"]),
    ("unknown_style", [b"0", b"compute", b"impl_zmq_v3", b"{}"]),
    ("bad_json", [b"0", b"compute", b"cast", b"{not json"]),
    ("bad_json", [b"0", b"compute", b"cast", b"[{}, {}] trailing"]),
    ("bad_json", [b"0", b"compute", b"cast", b""]),
    ("bad_json", [b"0", b"compute", b"cast", b'["\xff", {}]']),
    ("bad_json", [b"0", b"compute", b"cast", '[{}, {}]'.encode("utf-16")]),
    ("bad_json", [b"0", b"compute", b"cast", b"\xef\xbb\xbf[{}, {}]"]),
    ("bad_json", [b"0", b"compute", b"cast", b"[" + b"9" * 5000 + b"]"]),
    ("bad_json", legacy(["{oops", {"method": "m"}])),
    ("bad_json", v2(b"oslo.message", b"{", b"oslo.version", b"2.0")),
    ("too_deep", [b"0", b"compute", b"cast", b"[" * 100 + b"]" * 100]),
    ("too_deep", [b"0", b"compute", b"cast", b"[" * 200000]),
    ("bad_context", legacy([5, {"method": "m"}])),
    ("bad_context", legacy(["[1, 2]", {"method": "m"}])),
    ("bad_context", legacy([None, {"method": "m"}])),
    ("bad_context", v2(b"oslo.message", b'{"method": "m"}', b"oslo.version",
                       b"2.0", ctx=b"[]")),
    ("bad_body", legacy({"method": "m"})),
    ("bad_body", legacy([{}])),
    ("bad_body", legacy([{}, {}, {}])),
    ("bad_body", legacy([{}, ["m"]])),
    ("bad_body", legacy([{}, {"args": {}}])),
    ("bad_body", legacy([{}, {"method": ""}])),
    ("bad_body", legacy([{}, {"method": 7}])),
    ("bad_body", legacy([{}, {"method": "m", "args": []}])),
    ("bad_body", legacy([{}, {"method": "m", "args": None}])),
    ("bad_body", legacy([{}, {"method": "m", "version": 2}])),
    ("bad_body", legacy([{}, {"method": "m", "namespace": {}}])),
    ("bad_body", legacy([{}, {"method": "-reply", "args": {
        "topic": "zmq_replies.c", "msg": ["{}", {"method": "m"}]}}])),
    ("bad_body", legacy([{}, {"method": "-reply", "args": {
        "msg_id": HEX_ID, "topic": "compute.c", "msg": ["{}", {"method": "m"}]}}])),
    ("bad_body", legacy([{}, {"method": "-reply", "args": {
        "msg_id": HEX_ID, "topic": "zmq_replies..c", "msg": [{"method": "m"}]}}])),
    ("bad_body", legacy([{}, {"method": "-reply", "args": {
        "msg_id": HEX_ID, "topic": "zmq_replies.c", "msg": ["{}", {"x": 1}]}}])),
    ("bad_body", legacy([{}, {"method": "-reply", "args": {
        "msg_id": "a b", "topic": "zmq_replies.c", "msg": [{"method": "m"}]}}])),
    ("bad_body", legacy([{}, {"method": "-process_reply", "args": {
        "msg_id": HEX_ID, "response": {"a": 1}}}])),
    ("bad_body", legacy([{}, {"method": "-process_reply", "args": {
        "msg_id": HEX_ID, "response": [], "more": "yes"}}])),
    ("bad_body", legacy([{}, {"method": "-process_reply", "args": {
        "response": []}}])),
    ("bad_body", v2(b"oslo.message", b'"just a string"', b"oslo.version",
                    b"2.0")),
    ("bad_envelope", v2()),
    ("bad_envelope", v2(b"oslo.version", b"2.0")),
    ("bad_envelope", v2(b"oslo.message", b'{"method": "m"}', b"oslo.version")),
    ("bad_envelope", v2(b"oslo.message", b'{"method": "m"}', b"oslo.message",
                        b'{"method": "n"}', b"oslo.version", b"2.0")),
    ("bad_envelope", legacy([{}, {"oslo.version": "2.0"}])),
    ("bad_envelope", legacy([{}, {"oslo.version": "2.0",
                                  "oslo.message": {"method": "m"}}])),
    ("bad_envelope_version", v2(b"oslo.message", b'{"method": "m"}')),
    ("bad_envelope_version", v2(b"oslo.message", b'{"method": "m"}',
                                b"oslo.version", b"1.0")),
    ("bad_envelope_version", v2(b"oslo.message", b'{"method": "m"}',
                                b"oslo.version", b"3.0")),
    ("bad_envelope_version", v2(b"oslo.message", b'{"method": "m"}',
                                b"oslo.version", b"\xff")),
    ("bad_envelope_version", legacy([{}, {"oslo.version": "20.0",
                                          "oslo.message": '{"method": "m"}'}])),
    ("bad_envelope_version", legacy([{}, {"oslo.version": 2,
                                          "oslo.message": '{"method": "m"}'}])),
]


@pytest.mark.parametrize("reason,frames", BAD,
                         ids=["%s-%d" % (r, i) for i, (r, _) in enumerate(BAD)])
def test_each_bad_input_has_its_reason(reason: str, frames: object) -> None:
    assert reason in wire.REASONS
    assert reason_of(frames) == reason


def test_every_reason_is_exercised() -> None:
    assert {reason for reason, _ in BAD} | {"bad_topic", "too_large"} == set(
        wire.REASONS)


BAD_TOPICS = [b"", b".compute", b"compute.", b"compute..h1", b"../etc/passwd",
              b"comp ute", b"a/b", b"t\xc3\xa9", b"fanout~", b"fanout~.h1",
              b"x" * 256, b"nul\x00", b"zmq_topic*"]


@pytest.mark.parametrize("topic", BAD_TOPICS)
def test_bad_topics_rejected(topic: bytes) -> None:
    assert reason_of([b"0", topic, b"cast", b"[]"]) == "bad_topic"
    with pytest.raises(errors.RemoteProtocolError) as info:
        wire.check_topic(topic)
    assert info.value.reason == "bad_topic" and info.value.detail
    if topic.isascii():
        with pytest.raises(errors.RemoteProtocolError):
            wire.check_topic(topic.decode("ascii"))


GOOD_TOPICS = ["compute", "compute.host1", "compute.node-1.example.com",
               "compute.192.168.0.10", "compute.fe80::1", "fanout~compute",
               "fanout~compute.host1", "zmq_replies.caller-1.example.com",
               "cells.user@region", "a_b~c", "x" * 255]


@pytest.mark.parametrize("topic", GOOD_TOPICS)
def test_good_topics_accepted(topic: str) -> None:
    assert wire.check_topic(topic) == topic
    assert wire.check_topic(topic.encode()) == topic
    assert wire.check_topic(bytearray(topic.encode())) == topic


def test_check_topic_rejects_non_text_and_non_ascii() -> None:
    for topic in (None, 5, "caf\u00e9"):
        with pytest.raises(errors.RemoteProtocolError) as info:
            wire.check_topic(topic)  # type: ignore[arg-type]
        assert info.value.reason == "bad_topic"


def test_too_large_is_checked_before_parsing() -> None:
    frames = [b"0", b"compute", b"cast", b"{" * 200]   # bad JSON, too deep
    assert reason_of(frames, wire.Limits(max_msg_size=100)) == "too_large"


def test_error_detail_is_bounded_and_printable() -> None:
    with pytest.raises(errors.RemoteProtocolError) as info:
        wire.decode([b"0", b"\x00" * 200, b"cast", b"[]"])
    assert len(info.value.detail) < 200
    assert info.value.detail.isprintable()


# -- limits -----------------------------------------------------------------

def test_max_msg_size_boundary() -> None:
    frames = wire.encode("0", "compute", {}, {"method": "m"})
    size = sum(len(frame) for frame in frames)
    assert message(frames, wire.Limits(max_msg_size=size)).method == "m"
    assert reason_of(frames, wire.Limits(max_msg_size=size - 1)) == "too_large"


def test_max_frames_boundary() -> None:
    limits = wire.Limits(max_frames=8)
    assert message(HAVANA_V2, limits).method == "get_host_uptime"
    assert reason_of(HAVANA_V2 + [b"k", b"v"], limits) == "too_many_frames"
    # Unknown extra envelope pairs within the limit are ignored.
    assert message(HAVANA_V2 + [b"k", b"v"]).body == BODY


def test_max_topic_length_boundary() -> None:
    limits = wire.Limits(max_topic_length=10)
    assert message([b"0", b"c" * 10, b"cast", b'[{}, {"method": "m"}]'],
                       limits).topic == "c" * 10
    assert reason_of([b"0", b"c" * 11, b"cast", b'[{}, {"method": "m"}]'],
                     limits) == "bad_topic"
    assert wire.check_topic("c" * 11, wire.Limits(max_topic_length=11))


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("padding", [0, 100], ids=["fast-path", "walk"])
def test_max_json_depth_boundary(padding: int) -> None:
    # payload [ctx, {"method", "args": {"v": nested}}]: depth = 3 + nesting.
    # "padding" adds brackets inside strings, which only the walk can tell
    # apart from real nesting.
    def frames(depth: int) -> list[bytes]:
        return legacy([{"pad": "[" * padding},
                       {"method": "m", "args": {"v": nested(depth - 3)}}])

    limits = wire.Limits(max_json_depth=10)
    assert message(frames(10), limits).args["v"] == nested(7)
    assert reason_of(frames(11), limits) == "too_deep"


def test_wide_shallow_json_passes_the_walk() -> None:
    body = {"method": "m", "args": {"items": [{"a": [i]} for i in range(5000)]}}
    msg = message(wire.encode("0", "compute", {}, body))
    assert len(msg.args["items"]) == 5000


def test_depth_limit_applies_to_embedded_json() -> None:
    deep = json.dumps(nested(20))
    limits = wire.Limits(max_json_depth=8)
    assert reason_of(legacy([{}, {"oslo.version": "2.0",
                                  "oslo.message": '{"method": "m", "args": '
                                                  '{"d": %s}}' % deep}]),
                     limits) == "too_deep"
    assert reason_of(legacy([json.dumps({"d": nested(20)}), {"method": "m"}]),
                     limits) == "too_deep"


@pytest.mark.parametrize("field", ["max_msg_size", "max_frames",
                                   "max_topic_length", "max_json_depth"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True, "10"])
def test_limits_must_be_positive_ints(field: str, value: object) -> None:
    with pytest.raises(errors.ConfigurationError, match=field):
        wire.Limits(**{field: value})  # type: ignore[arg-type]


def test_limits_defaults() -> None:
    assert wire.DEFAULT_LIMITS == wire.Limits(16 * 1024 * 1024, 64, 255, 64)


# -- topic helpers -----------------------------------------------------------

@pytest.mark.parametrize("topic,expected", [
    ("fanout~compute.h1", ("fanout~compute", "pub")),
    ("fanout~compute", ("fanout~compute", "pub")),
    ("fanout~compute.h1.example.com", ("fanout~compute", "pub")),
    ("zmq_replies.h1", ("zmq_replies.h1", "pub")),
    ("zmq_replies.h1.example.com", ("zmq_replies.h1.example.com", "pub")),
    ("compute.h1", ("compute.h1", "push")),
    ("compute", ("compute", "push")),
    ("zmq_repliesx", ("zmq_repliesx", "push")),
])
def test_route(topic: str, expected: tuple[str, str]) -> None:
    assert wire.route(topic) == expected


def test_topic_helpers() -> None:
    assert wire.bare_topic("compute.h1.example.com") == "compute"
    assert wire.bare_topic("fanout~compute.h") == "compute"
    assert wire.bare_topic("compute") == "compute"
    assert wire.directed_topic("compute", "h1") == "compute.h1"
    assert wire.directed_topic("compute", "10.0.0.1") == "compute.10.0.0.1"
    assert wire.fanout_topic("compute") == "fanout~compute"
    assert wire.fanout_topic("fanout~compute") == "fanout~compute"
    assert wire.reply_topic("h1") == "zmq_replies.h1"
    assert wire.is_fanout("fanout~x") and wire.is_fanout(b"fanout~x")
    assert not wire.is_fanout("compute.fanout~x")
    assert wire.is_reply_topic("zmq_replies.h") and wire.is_reply_topic(
        b"zmq_replies")
    assert not wire.is_reply_topic("zmq_repliesh")
    assert not wire.is_reply_topic("compute.zmq_replies")


@pytest.mark.parametrize("call", [
    lambda: wire.directed_topic("compute", ""),
    lambda: wire.directed_topic("compute", "bad host"),
    lambda: wire.directed_topic("compute", ".h"),
    lambda: wire.fanout_topic("comp/ute"),
    lambda: wire.reply_topic("h/../x"),
])
def test_topic_helpers_refuse_unsafe_names(call) -> None:
    with pytest.raises(errors.LocalError) as info:
        call()
    assert "[A-Za-z0-9_.~:@-]" in str(info.value) or "empty" in str(info.value)


# -- encoding errors are our caller's mistakes ------------------------------

def test_dumps_is_compact_utf8() -> None:
    assert wire.dumps({"a": [1, "\u00e9"]}) == '{"a":[1,"\u00e9"]}'.encode()


@pytest.mark.parametrize("value,where", [
    ({"method": "m", "args": {"when": datetime.datetime(2013, 1, 1)}},
     "['args']['when'] is a datetime"),
    ({"a": [1, {2, 3}]}, "['a'][1] is a set"),
    ({"a": b"bytes"}, "['a'] is a bytes"),
    ({("t",): 1}, "key ('t',)"),
])
def test_dumps_names_the_bad_value(value: object, where: str) -> None:
    with pytest.raises(errors.LocalError) as info:
        wire.dumps(value)
    assert where in str(info.value)


def test_dumps_refuses_cycles() -> None:
    loop: list = []
    loop.append(loop)
    with pytest.raises(errors.LocalError, match="JSON"):
        wire.dumps(loop)


@pytest.mark.parametrize("call,match", [
    (lambda: wire.encode("0", "bad topic", {}, {"method": "m"}), "topic"),
    (lambda: wire.encode("a b", "compute", {}, {"method": "m"}), "msg_id"),
    (lambda: wire.encode(5, "compute", {},  # type: ignore[arg-type]
                         {"method": "m"}), "msg_id"),
    (lambda: wire.encode("0", "compute", [],  # type: ignore[arg-type]
                         {"method": "m"}), "context"),
    (lambda: wire.encode("0", "compute", {}, {"args": {}}), "method"),
    (lambda: wire.encode("0", "compute", {}, {"method": "m", "args": {1: 2}}),
     "argument names"),
    (lambda: wire.encode("0", "compute", {"t": object()}, {"method": "m"}),
     "context"),
    (lambda: wire.encode("0", "compute", {}, {"method": "m", "args": {
        "x": object()}}, envelope=True), "message body"),
    (lambda: wire.encode("0", "compute", {}, {"method": "m", "args": {
        "x": "y" * 200}}, limits=wire.Limits(max_msg_size=100)), "limit"),
    (lambda: wire.encode_probe("", "compute"), "probe_id"),
    (lambda: wire.call_request(HEX_ID, "zmq_replies.a b", {}, {"method": "m"}),
     "reply topic"),
    (lambda: wire.call_request(HEX_ID, "zmq_replies.a", {}, {"x": 1}), "method"),
])
def test_encoding_mistakes_are_local_errors(call, match: str) -> None:
    with pytest.raises(errors.LocalError, match=match):
        call()


def test_encode_within_limits_passes() -> None:
    frames = wire.encode("0", "compute", {}, {"method": "m"},
                         limits=wire.Limits(max_msg_size=100))
    assert message(frames).method == "m"


def test_parse_helpers_reject_bad_bodies() -> None:
    with pytest.raises(errors.RemoteProtocolError) as info:
        wire.parse_reply({"method": "-process_reply", "args": []})
    assert info.value.reason == "bad_body"
    with pytest.raises(errors.RemoteProtocolError) as info:
        wire.parse_call_request({"method": "-reply"})
    assert info.value.reason == "bad_body"


def test_folsom_style_reply_msg_without_context_is_accepted() -> None:
    body = {"method": "-reply", "args": {"msg_id": HEX_ID,
                                         "topic": "zmq_replies.c",
                                         "msg": {"method": "m"}}}
    msg = message(wire.encode("0", "compute", {}, body))
    assert wire.parse_call_request(msg.body).msg == {"method": "m"}


@pytest.mark.parametrize("value", [-(2 ** 63) - 1, 2 ** 64, -(10 ** 30),
                                   10 ** 40, 2 ** 63 - 1])
def test_integers_beyond_64_bits_come_back_exact(value):
    frames = wire.encode("0", "zmq_replies.h", {},
                         wire.reply_body("0", [value, {"n": value}], False))
    reply = wire.parse_reply(wire.decode(frames).body)
    assert reply.response == [value, {"n": value}]
    assert type(reply.response[0]) is int


@pytest.mark.parametrize("text", [
    "123456789012345678901", "-1234567890123456789", " 1234567890123456789",
    '{"a":1234567890123456789}', '{"a": -12345678901234567890}',
    "[1,\n 12345678901234567890]", '["x",12345678901234567890]',
])
def test_long_number_screen_never_misses_one(text: str) -> None:
    assert wire._may_hold_long_number(text)
    assert wire._may_hold_long_number(text.encode())


@pytest.mark.parametrize("text", [
    '{"msg_id":"a1230000000000000001"}', "[123456789012345678, 1.5e300]",
    '{"uuid":"3f0c8f3e-7d6f-4a51-9c7b-0d3b2a1c9e55"}',
])
def test_long_number_screen_lets_ordinary_text_through(text: str) -> None:
    # digits inside strings and numbers of 18 digits take the fast parser
    assert not wire._may_hold_long_number(text)


def test_msg_ids_with_long_digit_runs_decode_like_others() -> None:
    # a msg_id of 20 digits is a string, not a number: it stays text
    msg_id = "12345678901234567890"
    frames = wire.encode("0", "zmq_replies.h", {"n": 2 ** 70},
                         wire.reply_body(msg_id, [msg_id], False))
    msg = wire.decode(frames)
    assert wire.parse_reply(msg.body).response == [msg_id]
    assert msg.context == {"n": 2 ** 70}


class _Colour(enum.Enum):
    RED = "red"


class _Size(enum.IntEnum):
    BIG = 3


@pytest.mark.parametrize("value,written", [
    (float("nan"), b"NaN"), (float("inf"), b"Infinity"),
    (-float("inf"), b"-Infinity"), (None, b"null"),
    (uuid.UUID("3f0c8f3e-7d6f-4a51-9c7b-0d3b2a1c9e55"),
     b'"3f0c8f3e-7d6f-4a51-9c7b-0d3b2a1c9e55"'),
    (_Colour.RED, b'"red"'), (_Size.BIG, b"3"),
    (collections.OrderedDict(b=1, a=2), b'{"b":1,"a":2}'),
    ({1: "x", None: "y"}, b'{"1":"x","null":"y"}'),
    (2 ** 70, b"1180591620717411303424"),
])
def test_values_are_written_as_the_standard_encoder_writes_them(
        value: object, written: bytes) -> None:
    assert wire.dumps([value]) == b"[" + written + b"]"
    assert wire._stdlib_bytes([value], "value") == b"[" + written + b"]"


@pytest.mark.parametrize("value", [
    {"s": "\u00e9\u2028\"\\\n\x01", "f": [0.1, 1e300, -0.0, 5e-324], "b": True,
     "n": [2 ** 63 - 1, -(2 ** 63)], "nest": [[{}], []]},
    ["a\ud800b"],
])
def test_fast_and_standard_encoders_agree(value: object) -> None:
    assert json.loads(wire.dumps(value)) == json.loads(
        wire._stdlib_bytes(value, "value"))


# -- direct replies (ours only) -------------------------------------------

@pytest.mark.parametrize("more,seq", [(None, None), (True, 0), (False, 7)])
def test_direct_reply_says_what_a_reply_body_says(more: object,
                                                  seq: object) -> None:
    response = [{"host": "compute-1", "n": [1, 2.5, None]}, "\u00e9"]
    (part,) = wire.encode_direct_reply(HEX_ID, response, more, seq)
    assert part.startswith(wire.DIRECT_REPLY_MARK)
    assert wire.decode_direct_reply(part) == wire.parse_reply(message(
        wire.encode(HEX_ID, "zmq_replies.c", CTX,
                    wire.reply_body(HEX_ID, response, more, seq))).body)


def test_direct_reply_carries_a_remote_exception_and_big_numbers() -> None:
    failure = {wire.EXC_KEY: json.dumps({"class": "ValueError"})}
    (part,) = wire.encode_direct_reply(HEX_ID, [2 ** 70, failure])
    reply = wire.decode_direct_reply(part)
    assert reply.response == [2 ** 70, failure]
    assert reply.more is False and reply.seq is None


def test_direct_reply_is_not_a_message_of_the_wire() -> None:
    """Old nodes never see one; were it read as a message it is refused."""
    part = wire.encode_direct_reply(HEX_ID, [1])
    with pytest.raises(errors.RemoteProtocolError) as info:
        wire.decode(part)
    assert info.value.reason == "too_few_frames"


def test_direct_reply_of_a_value_that_is_not_json_is_our_error() -> None:
    with pytest.raises(errors.LocalError):
        wire.encode_direct_reply(HEX_ID, [object()])
    with pytest.raises(errors.LocalError):
        wire.encode_direct_reply("bad id!", [1])


MARK = wire.DIRECT_REPLY_MARK
BAD_DIRECT = [
    ("unknown_style", b"\x00nrz1" + b"[]"),
    ("bad_json", MARK + b"[\"" + HEX_ID.encode() + b"\",[1],false"),
    ("bad_json", MARK + b"\xff\xfe"),
    ("bad_body", MARK + b"{}"),
    ("bad_body", MARK + b"[\"" + HEX_ID.encode() + b"\",[1],false]"),
    ("bad_body", MARK + b"[\"" + HEX_ID.encode() + b"\",{},false,-1]"),
    ("bad_body", MARK + b"[\"" + HEX_ID.encode() + b"\",[1],1,-1]"),
    ("bad_body", MARK + b"[\"../x\",[1],false,-1]"),
    ("bad_body", MARK + b"[7,[1],false,-1]"),
    ("bad_body", MARK + b"[\"\",[1],false,-1]"),
    ("too_deep", MARK + b"[\"" + HEX_ID.encode() + b"\","
     + b"[" * 200 + b"]" * 200 + b",false,-1]"),
    ("bad_frame", 12345),
]


@pytest.mark.parametrize("reason,data", BAD_DIRECT,
                         ids=["%d-%s" % (i, r) for i, (r, _d) in
                              enumerate(BAD_DIRECT)])
def test_each_bad_direct_reply_has_its_reason(reason: str,
                                              data: object) -> None:
    with pytest.raises(errors.RemoteProtocolError) as info:
        wire.decode_direct_reply(data)
    assert info.value.reason == reason


def test_direct_reply_size_is_checked_before_parsing() -> None:
    limits = wire.Limits(max_msg_size=64)
    (part,) = wire.encode_direct_reply(HEX_ID, ["x" * 64])
    with pytest.raises(errors.RemoteProtocolError) as info:
        wire.decode_direct_reply(part, limits)
    assert info.value.reason == "too_large"


@pytest.mark.parametrize("seq", [1 << 31, 2.0, "3", None, -5])
def test_direct_reply_seq_out_of_range_reads_as_unnumbered(seq: object
                                                           ) -> None:
    data = MARK + json.dumps([HEX_ID, [1], True, seq]).encode()
    assert wire.decode_direct_reply(data).seq is None


def test_random_direct_replies_raise_only_protocol_errors() -> None:
    import random
    rng = random.Random(1205)
    (good,) = wire.encode_direct_reply(HEX_ID, [{"a": [1, "b"]}], True, 3)
    for _ in range(2000):  # bounded
        data = bytearray(good)
        for _flip in range(rng.randint(1, 4)):
            data[rng.randrange(len(MARK), len(data))] = rng.randrange(256)
        try:
            reply = wire.decode_direct_reply(bytes(data))
        except errors.RemoteProtocolError:
            continue
        assert type(reply.response) is list and type(reply.more) is bool


# -- direct calls (ours only) ---------------------------------------------

CALLER = b"stream.0123456789abcdef"


def direct_call(**change: object) -> bytes:
    """A direct call's part, with fields of its list replaced."""
    fields = [CALLER.decode(), "compute.h1", HEX_ID, "zmq_replies.c", CTX,
              {"method": "echo", "args": {"v": 1}}]
    for index, value in change.items():
        fields[int(index[1:])] = value
    return wire.DIRECT_CALL_MARK + json.dumps(fields).encode()


def test_direct_call_decodes_as_the_wires_form_does() -> None:
    msg = {"method": "echo", "args": {"v": [1, None, "\u00e9"]},
           "version": "1.1"}
    (part,) = wire.encode_direct_call(CALLER, "compute.h1", HEX_ID,
                                      "zmq_replies.c", CTX, msg)
    assert part.startswith(wire.DIRECT_CALL_MARK)
    direct = wire.decode_direct_call(part)
    legacy = message(wire.encode(CALLER, "compute.h1", CTX, wire.call_request(
        HEX_ID, "zmq_replies.c", CTX, msg)))
    for field in ("msg_id", "topic", "style", "context", "envelope", "call",
                  "method", "caller_streams", "is_notification"):
        assert getattr(direct, field) == getattr(legacy, field), field
    assert direct.reply is None


def test_direct_call_is_not_a_message_of_the_wire() -> None:
    part = wire.encode_direct_call(CALLER, "compute.h1", HEX_ID,
                                   "zmq_replies.c", {}, {"method": "m"})
    with pytest.raises(errors.RemoteProtocolError) as info:
        wire.decode(part)
    assert info.value.reason == "too_few_frames"


@pytest.mark.parametrize("args", [
    (b"bad mark!", "compute.h1", HEX_ID, "zmq_replies.c", {}, {"method": "m"}),
    (CALLER, "../x", HEX_ID, "zmq_replies.c", {}, {"method": "m"}),
    (CALLER, "compute.h1", "bad id!", "zmq_replies.c", {}, {"method": "m"}),
    (CALLER, "compute.h1", HEX_ID, "zmq replies", {}, {"method": "m"}),
    (CALLER, "compute.h1", HEX_ID, "zmq_replies.c", [], {"method": "m"}),
    (CALLER, "compute.h1", HEX_ID, "zmq_replies.c", {}, {"args": {}}),
    (CALLER, "compute.h1", HEX_ID, "zmq_replies.c", {"v": object()},
     {"method": "m"}),
])
def test_direct_call_of_a_bad_value_is_our_error(args: tuple) -> None:
    with pytest.raises(errors.LocalError):
        wire.encode_direct_call(*args)


BAD_DIRECT_CALLS = [
    ("unknown_style", wire.DIRECT_REPLY_MARK + b"[]"),
    ("bad_json", wire.DIRECT_CALL_MARK + b"[1,"),
    ("bad_json", wire.DIRECT_CALL_MARK + b"\xff"),
    ("bad_body", wire.DIRECT_CALL_MARK + b"[1, 2, 3]"),
    ("bad_body", wire.DIRECT_CALL_MARK + b"{}"),
    ("bad_frame", direct_call(f0=7)),
    ("bad_frame", direct_call(f1=["compute"])),
    ("bad_msg_id", direct_call(f0="stream.\u00e9")),
    ("bad_topic", direct_call(f1="compute..h1")),
    ("bad_topic", direct_call(f1="x" * 300)),
    ("bad_body", direct_call(f2="id with spaces")),
    ("bad_body", direct_call(f3="compute.c")),
    ("bad_body", direct_call(f5={"args": {}})),
    ("bad_body", direct_call(f5={"method": "m", "args": []})),
    ("bad_context", direct_call(f4="text")),
    ("bad_context", direct_call(f4=["a"])),
    ("too_deep", wire.DIRECT_CALL_MARK + b"[" * 300 + b"]" * 300),
    ("bad_frame", None),
]


@pytest.mark.parametrize("reason,data", BAD_DIRECT_CALLS,
                         ids=["%d-%s" % (i, r) for i, (r, _d) in
                              enumerate(BAD_DIRECT_CALLS)])
def test_each_bad_direct_call_has_its_reason(reason: str,
                                             data: object) -> None:
    with pytest.raises(errors.RemoteProtocolError) as info:
        wire.decode_direct_call(data)
    assert info.value.reason == reason


def test_direct_call_size_is_checked_before_parsing() -> None:
    with pytest.raises(errors.RemoteProtocolError) as info:
        wire.decode_direct_call(direct_call(f5={"method": "m",
                                                "args": {"v": "x" * 200}}),
                                wire.Limits(max_msg_size=128))
    assert info.value.reason == "too_large"


def test_random_direct_calls_raise_only_protocol_errors() -> None:
    import random
    rng = random.Random(1206)
    good = direct_call()
    for _ in range(2000):  # bounded
        data = bytearray(good)
        for _flip in range(rng.randint(1, 4)):
            data[rng.randrange(len(wire.DIRECT_CALL_MARK), len(data))] = \
                rng.randrange(256)
        try:
            msg = wire.decode_direct_call(bytes(data))
        except errors.RemoteProtocolError:
            continue
        assert type(msg.context) is dict and msg.call is not None
