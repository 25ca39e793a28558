"""Property tests of wire.py (hypothesis) and a bounded atheris run.

decode must return a Message or a Probe, or raise RemoteProtocolError, for
any list of frames; what it accepts must survive encode -> decode; what we
encode must decode to what we gave.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nova_rpc_zmq import errors, wire
from nova_rpc_zmq.testing import child_env
from tests.fuzz import fuzz_wire

HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_wire.py")

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])


def decode_or_protocol_error(frames: object, limits: wire.Limits
                             = wire.DEFAULT_LIMITS) -> object:
    """The promise under test: a result or RemoteProtocolError, no other."""
    try:
        result = wire.decode(frames, limits)  # type: ignore[arg-type]
    except errors.RemoteProtocolError as exc:
        assert exc.reason in wire.REASONS
        return exc
    assert isinstance(result, (wire.Message, wire.Probe))
    return result


# -- strategies -------------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers()
                | st.floats(allow_nan=False) | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10)
contexts = st.dictionaries(st.text(max_size=10), json_values, max_size=4)
bodies = st.fixed_dictionaries(
    {"method": st.text(min_size=1, max_size=20),
     "args": st.dictionaries(st.text(max_size=10), json_values, max_size=4)},
    optional={"version": st.none() | st.text(max_size=5),
              "namespace": st.none() | st.text(max_size=10)})
ID_CHARS = ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
            "_~:@-")
part = st.text(ID_CHARS, min_size=1, max_size=12)
topics = st.lists(part, min_size=1, max_size=4).map(".".join).filter(
    lambda t: re.match(r"fanout~(\.|$)", t) is None)
msg_ids = st.text(ID_CHARS + ".", min_size=1, max_size=40)
frame_bytes = st.binary(max_size=64) | st.sampled_from(
    [b"0", b"compute", b"cast", b"impl_zmq_v2", b"nova_rpc_zmq_probe",
     b"oslo.version", b"2.0", b"oslo.message", b"{}", b"[]", b'"{}"'])


@st.composite
def near_valid_frames(draw: st.DrawFn) -> list[bytes]:
    """A valid message with one or more frames damaged."""
    frames = wire.encode(draw(msg_ids), draw(topics), draw(contexts),
                         draw(bodies), envelope=draw(st.booleans()))
    for _ in range(draw(st.integers(1, 3))):
        if len(frames) > 3 and draw(st.integers(0, 4)):
            index = draw(st.integers(3, len(frames) - 1))   # a JSON frame
        else:
            index = draw(st.integers(0, len(frames) - 1))
        data = bytearray(frames[index])
        action = draw(st.sampled_from(["flip", "cut", "insert", "drop",
                                       "duplicate"]))
        if action == "flip" and data:
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[draw(st.integers(0, len(data))):]
        elif action == "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.sampled_from(
                [b"[", b"{", b'"', b"\\", b"\xff", b"\x00", b",", b"]"])
                               ) * draw(st.integers(1, 70))
        elif action == "drop":
            del frames[index]
            continue
        else:
            frames.insert(index, bytes(data))
        frames[index] = bytes(data)
    return frames


@st.composite
def odd_shapes(draw: st.DrawFn) -> list[bytes]:
    """Valid headers and JSON of the wrong shape where a message goes."""
    value = draw(json_values)
    method = draw(st.sampled_from(["m", "-reply", "-process_reply"]))
    msg = draw(st.sampled_from([
        value, {"method": value}, {"method": method, "args": value},
        {"method": method, "args": {"msg_id": value, "topic": value,
                                    "msg": value, "response": value,
                                    "more": value}},
        {"method": method, "args": {"msg_id": "1", "topic": "zmq_replies.h",
                                    "msg": ["{}", value], "response": [],
                                    "more": True}},
        {"method": "m", "version": value, "namespace": value}]))
    if draw(st.booleans()):
        if draw(st.booleans()):
            msg = {"oslo.version": draw(st.sampled_from(["2.0", "2.7", value])),
                   "oslo.message": json.dumps(msg)}
        ctx = draw(contexts | contexts.map(json.dumps) | json_values)
        payload = json.dumps([ctx, msg]).encode()
        return [b"0", b"compute", b"cast", payload]
    values = st.sampled_from([b"2.0", b"2.1", b"3.0", json.dumps(msg).encode(),
                              json.dumps(value).encode()])
    keys = st.sampled_from([b"oslo.version", b"oslo.message", b"other"])
    pairs = draw(st.lists(st.tuples(keys, values), max_size=3,
                          unique_by=lambda pair: pair[0])
                 | st.permutations([(b"oslo.version", b"2.0"),
                                    (b"oslo.message",
                                     json.dumps(msg).encode())]))
    ctx_frame = json.dumps(draw(contexts | json_values)).encode()
    return [b"0", b"compute", b"impl_zmq_v2", ctx_frame,
            *[frame for pair in pairs for frame in pair]]


limits_choices = st.sampled_from([
    wire.DEFAULT_LIMITS, wire.Limits(max_json_depth=3),
    wire.Limits(max_msg_size=200, max_frames=6, max_topic_length=12)])


# -- decode never raises anything else ----------------------------------------

@FUZZ
@given(st.lists(frame_bytes, max_size=80), limits_choices)
def test_arbitrary_frames(frames: list[bytes], limits: wire.Limits) -> None:
    decode_or_protocol_error(frames, limits)


@FUZZ
@given(near_valid_frames(), limits_choices)
def test_near_valid_frames(frames: list[bytes], limits: wire.Limits) -> None:
    decode_or_protocol_error(frames, limits)


@FUZZ
@given(odd_shapes())
def test_valid_json_of_wrong_shape(frames: list[bytes]) -> None:
    result = decode_or_protocol_error(frames)
    if isinstance(result, wire.Message):
        assert isinstance(result.context, dict)
        assert isinstance(result.method, str) and result.method
        assert isinstance(result.args, dict)


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_harness_check_in_process(data: bytes) -> None:
    fuzz_wire.check_input(data, wire, errors)


@pytest.mark.parametrize("data", fuzz_wire.seed_inputs(wire))
def test_fuzz_harness_seeds_decode(data: bytes) -> None:
    frames, limits_index = fuzz_wire.frames_from_bytes(data)
    if limits_index == 0 and data[0] in (0, 1, 2):
        assert isinstance(wire.decode(frames), wire.Message)
    fuzz_wire.check_input(data, wire, errors)


# -- round trips ------------------------------------------------------------

@FUZZ
@given(msg_ids, topics, contexts, bodies, st.booleans())
def test_encode_decode_round_trip(msg_id: str, topic: str, context: dict,
                                  body: dict, envelope: bool) -> None:
    frames = wire.encode(msg_id, topic, context, body, envelope=envelope)
    style = wire.STYLE_V2 if envelope else wire.STYLE_LEGACY
    assert wire.peek(frames) == (topic, style)
    assert wire.decode(frames) == wire.Message(msg_id, topic, style, context,
                                               body, envelope, None)


@FUZZ
@given(msg_ids, topics, contexts, bodies)
def test_call_request_round_trip(msg_id: str, host_topic: str, context: dict,
                                 body: dict) -> None:
    reply_to = wire.reply_topic(host_topic)
    request = wire.call_request(msg_id, reply_to, context, body)
    msg = wire.decode(wire.encode(wire.CALLER_STREAMS, "compute", context,
                                  request))
    assert isinstance(msg, wire.Message)
    assert wire.parse_call_request(msg.body) == wire.CallRequest(
        msg_id, reply_to, body) == msg.call
    assert json.loads(msg.args["msg"][0]) == context


@FUZZ
@given(msg_ids, st.lists(json_values, max_size=5),
       st.sampled_from([None, True, False]))
def test_reply_round_trip(msg_id: str, response: list, more: bool | None
                          ) -> None:
    frames = wire.encode(msg_id, "zmq_replies.h", {},
                         wire.reply_body(msg_id, response, more))
    msg = wire.decode(frames)
    assert isinstance(msg, wire.Message)
    reply = wire.parse_reply(msg.body)
    assert reply == wire.Reply(msg_id, response, bool(more), None) == msg.reply


@FUZZ
@given(st.text(max_size=30) | st.binary(max_size=30))
def test_check_topic_accepts_only_safe_topics(topic: str | bytes) -> None:
    try:
        checked = wire.check_topic(topic)
    except errors.RemoteProtocolError as exc:
        assert exc.reason == "bad_topic"
        return
    assert re.fullmatch(r"[A-Za-z0-9_.~:@-]{1,255}", checked)
    assert ".." not in checked and not checked.startswith(".")
    assert not checked.endswith(".")
    target, kind = wire.route(checked)
    assert kind in (wire.ROUTE_PUB, wire.ROUTE_PUSH)
    assert wire.check_topic(target) == target


@FUZZ
@given(topics, topics)
def test_topic_helpers_agree(bare: str, host: str) -> None:
    bare = bare.split(".")[0]
    assume(not bare.startswith("fanout~"))
    directed = wire.directed_topic(bare, host)
    assert wire.bare_topic(directed) == bare
    assert wire.route(directed) == (directed, "push") or wire.is_reply_topic(
        directed)
    fanout = wire.fanout_topic(directed)
    assert wire.route(fanout) == (wire.fanout_topic(bare), "pub")
    assert wire.bare_topic(fanout) == bare


# -- the atheris harness, for a bounded time ---------------------------------

def _atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def _run_harness(tmp_path, corpus: list[bytes], *flags: str,
                 env_extra: dict[str, str] | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess:
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    for number, data in enumerate(corpus):
        (corpus_dir / ("seed-%d" % number)).write_bytes(data)
    return subprocess.run(
        [sys.executable, HARNESS, str(corpus_dir), "-rss_limit_mb=1024",
         "-timeout=20", "-artifact_prefix=%s/" % tmp_path, *flags],
        cwd=str(tmp_path), env=child_env(env_extra), capture_output=True, text=True,
        timeout=timeout)


@pytest.mark.skipif(not _atheris_available(), reason="atheris not installed")
@pytest.mark.timeout(180)
def test_atheris_harness_runs_clean(tmp_path) -> None:
    seconds = os.environ.get("NOVA_RPC_ZMQ_FUZZ_SECONDS", "15")
    done = _run_harness(tmp_path, fuzz_wire.seed_inputs(wire),
                        "-max_total_time=%s" % seconds,
                        timeout=float(seconds) + 120)
    tail = (done.stdout + done.stderr)[-3000:]
    assert done.returncode == 0, tail
    runs = re.search(r"Done (\d+) runs", done.stderr)
    assert runs and int(runs.group(1)) > 1000, tail
    # The instrumented wire.py reports coverage well beyond a trivial target.
    cov = re.findall(r"cov: (\d+)", done.stderr)
    assert cov and int(cov[-1]) > 100, tail


@pytest.mark.skipif(not _atheris_available(), reason="atheris not installed")
@pytest.mark.timeout(120)
def test_atheris_harness_reports_a_crash(tmp_path) -> None:
    done = _run_harness(tmp_path, [fuzz_wire.SELFTEST_INPUT], "-runs=10",
                        env_extra={fuzz_wire.SELFTEST_ENV: "1"})
    assert done.returncode != 0
    assert "self-test crash" in done.stdout + done.stderr
    assert list(tmp_path.glob("crash-*")), "no crash artifact written"
