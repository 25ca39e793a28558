"""Unit tests of nova_rpc_zmq.rpc.common: envelope, versions, contexts,
remote exceptions, client exceptions and log sanitising."""

from __future__ import annotations

import copy
import json
import logging
import pickle
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nova_rpc_zmq import codec, errors
from nova_rpc_zmq.rpc import common

THIS_MODULE = __name__


class SampleError(Exception):
    """An application error with positional and keyword arguments."""

    def __init__(self, first: str = "", code: int = 0, **kwargs: object) -> None:
        self.first = first
        self.code = code
        self.kwargs = dict(kwargs, code=code)
        super().__init__(first)


class StrictError(Exception):
    """Takes exactly one argument; anything else fails to construct."""

    def __init__(self, only: str) -> None:
        super().__init__(only)


class SampleRpcError(errors.RPCException):
    msg_fmt = "thing %(name)s broke"


def not_an_exception() -> None:
    """A function in an allowed module (must never be 'rebuilt')."""


class NotAnExceptionClass:
    pass


def _exc_info(exc: BaseException) -> tuple:
    try:
        raise exc
    except BaseException:
        return sys.exc_info()


def _payload(**fields: object) -> str:
    data = {"class": "SampleError", "module": THIS_MODULE, "message": "m",
            "tb": ["line one\n", "line two\n"], "args": [], "kwargs": {}}
    data.update(fields)
    return json.dumps(data)


# -- re-exports ---------------------------------------------------------------

def test_error_classes_are_reexported_unchanged() -> None:
    for name in ("RPCException", "RemoteError", "Timeout", "NoHostsError",
                 "NoLiveHostsError", "DuplicateMessageError",
                 "InvalidRPCConnectionReuse", "UnsupportedRpcVersion",
                 "UnsupportedRpcEnvelopeVersion", "RpcVersionCapError",
                 "ClientException", "RemoteProtocolError",
                 "AuthenticationError"):
        assert getattr(common, name) is getattr(errors, name), name
        assert name in common.__all__


# -- versions -----------------------------------------------------------------

@pytest.mark.parametrize("imp, requested, expected", [
    ("1.0", "1.0", True),
    ("1.5", "1.2", True),
    ("1.2", "1.5", False),
    ("2.0", "1.0", False),
    ("1.0", "2.0", False),
    ("1.10", "1.9", True),      # numeric, not string, comparison
    ("1.9", "1.10", False),
    ("1.2.3", "1.2.3", True),
    ("1.2.3", "1.2.4", False),
    ("1.2.3", "1.2", True),
    ("1.2", "1.2.1", False),
    ("1.3", "1.2.5", True),     # lower minor: revision does not matter
    ("1", "1.0", True),
    ("1.0", "1", True),
    ("abc", "1.0", False),
    ("1.0", "x.y", False),
    ("1.0", None, False),
    ("1.0", 1.0, False),
    ("1.0", "1.0.0.0", False),
    ("1.0", " 1.0", False),
    ("1.0", "1.-1", False),
    ("1.0", "", False),
])
def test_version_is_compatible(imp: str, requested: object, expected: bool) -> None:
    assert common.version_is_compatible(imp, requested) is expected  # type: ignore[arg-type]


# -- envelope -----------------------------------------------------------------

def test_serialize_msg_wraps_json_in_the_2_0_envelope() -> None:
    raw = {"method": "ping", "args": {"x": [1, 2]}}
    msg = common.serialize_msg(raw)
    assert common._RPC_ENVELOPE_VERSION == "2.0"
    assert set(msg) == {"oslo.version", "oslo.message"}
    assert msg["oslo.version"] == "2.0"
    assert json.loads(msg["oslo.message"]) == raw
    assert common.deserialize_msg(msg) == raw


def test_serialize_msg_refuses_values_json_cannot_carry() -> None:
    with pytest.raises(TypeError):
        common.serialize_msg({"args": {"when": object()}})


@pytest.mark.parametrize("msg", [
    {"method": "ping", "args": {}},             # a 1.0 (pre-envelope) message
    {"oslo.version": "2.0"},                    # only one envelope key
    {"oslo.message": "{}"},
    {"event_type": "compute.instance.create"},  # a notification
])
def test_deserialize_msg_passes_non_enveloped_dicts_through(msg: dict) -> None:
    assert common.deserialize_msg(msg) is msg


@pytest.mark.parametrize("msg", ["text", 3, None, [1, 2]])
def test_deserialize_msg_passes_non_dicts_through(msg: object) -> None:
    assert common.deserialize_msg(msg) == msg


@pytest.mark.parametrize("version", ["3.0", "1.0", "2.1", "junk", 2, None])
def test_deserialize_msg_rejects_incompatible_envelope(version: object) -> None:
    with pytest.raises(errors.UnsupportedRpcEnvelopeVersion) as info:
        common.deserialize_msg({"oslo.version": version, "oslo.message": "{}"})
    assert str(version) in str(info.value)


def test_deserialize_msg_bad_inner_json_is_a_protocol_error() -> None:
    with pytest.raises(errors.RemoteProtocolError) as info:
        common.deserialize_msg({"oslo.version": "2.0", "oslo.message": "{nope"})
    assert info.value.reason == "bad_json"


def test_deserialize_msg_non_string_payload_is_a_protocol_error() -> None:
    with pytest.raises(errors.RemoteProtocolError) as info:
        common.deserialize_msg({"oslo.version": "2.0", "oslo.message": {"a": 1}})
    assert info.value.reason == "bad_envelope"


# -- contexts -----------------------------------------------------------------

def test_context_values_are_attributes() -> None:
    ctxt = common.CommonRpcContext(request_id="req-1", user_id="u", roles=[])
    assert ctxt.request_id == "req-1"
    assert ctxt.user_id == "u"
    with pytest.raises(AttributeError):
        ctxt.project_id  # noqa: B018 - attribute access is the test


def test_context_to_dict_is_a_deep_copy() -> None:
    ctxt = common.CommonRpcContext(roles=["member"])
    values = ctxt.to_dict()
    values["roles"].append("admin")
    assert ctxt.roles == ["member"]


def test_context_from_dict_and_deepcopy() -> None:
    ctxt = common.CommonRpcContext.from_dict({"request_id": "r", "roles": ["a"]})
    assert isinstance(ctxt, common.CommonRpcContext)
    clone = ctxt.deepcopy()
    clone.values["roles"].append("b")
    assert ctxt.roles == ["a"]
    assert clone.to_dict() == {"request_id": "r", "roles": ["a", "b"]}


def test_context_survives_copy_and_pickle() -> None:
    # __getattr__ must not recurse while copy/pickle build a bare object.
    ctxt = common.CommonRpcContext(request_id="r")
    assert copy.deepcopy(ctxt).request_id == "r"
    assert copy.copy(ctxt).request_id == "r"
    assert pickle.loads(pickle.dumps(ctxt)).request_id == "r"


@pytest.mark.parametrize("roles, read_deleted", [([], None), (["admin"], "yes"),
                                                 (["member"], "only")])
def test_elevated(roles: list, read_deleted: str | None) -> None:
    ctxt = common.CommonRpcContext(is_admin=False, roles=list(roles),
                                   read_deleted="no")
    admin = ctxt.elevated(read_deleted=read_deleted)
    assert admin.is_admin is True
    assert admin.roles.count("admin") == 1
    assert set(roles) <= set(admin.roles)
    assert admin.read_deleted == (read_deleted or "no")
    # the original is untouched
    assert ctxt.is_admin is False
    assert ctxt.roles == roles
    assert ctxt.read_deleted == "no"


def test_elevated_adds_roles_when_missing() -> None:
    admin = common.CommonRpcContext(user_id="u").elevated()
    assert admin.roles == ["admin"]
    assert admin.is_admin is True


def test_update_store_is_per_thread() -> None:
    ctxt = common.CommonRpcContext(request_id="main")
    ctxt.update_store()
    seen: list = []

    def other() -> None:
        seen.append(common.current_context())
        common.CommonRpcContext(request_id="thread").update_store()
        seen.append(common.current_context().request_id)

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert seen == [None, "thread"]
    assert common.current_context() is ctxt


def test_context_repr_hides_tokens() -> None:
    text = repr(common.CommonRpcContext(auth_token="s3cret", user_id="u"))
    assert "s3cret" not in text
    assert "u" in text


def test_rpc_context_collects_replies_without_a_sink() -> None:
    ctxt = common.RpcContext.from_dict({"request_id": "r"})
    assert isinstance(ctxt, common.RpcContext)
    ctxt.reply(1)
    ctxt.reply({"b": 2})
    assert ctxt.replies == [1, {"b": 2}]
    assert ctxt.reply_count == 2
    ctxt.reply(ending=True)
    ctxt.reply(3)
    assert ctxt.replies == [1, {"b": 2}]
    assert ctxt.reply_ended


def test_rpc_context_failure_ends_the_stream() -> None:
    ctxt = common.RpcContext()
    failure = _exc_info(ValueError("x"))
    ctxt.reply(failure=failure)
    ctxt.reply("late")
    assert ctxt.reply_failure is failure
    assert ctxt.replies == []
    assert ctxt.reply_ended


def test_rpc_context_streams_to_its_sink() -> None:
    calls: list = []
    ctxt = common.RpcContext(request_id="r")
    ctxt.reply_sink = lambda value, failure, ending: calls.append(
        (value, failure, ending))
    ctxt.reply("a")
    ctxt.reply("b")
    ctxt.reply("ignored-with-ending", ending=True)
    ctxt.reply("after")
    assert calls == [("a", None, False), ("b", None, False), (None, None, True)]
    assert ctxt.replies == []      # went to the sink, not the list
    assert ctxt.reply_count == 2


def test_rpc_context_copies_share_the_reply_stream() -> None:
    calls: list = []
    ctxt = common.RpcContext(user_id="u", roles=[])
    ctxt.reply_sink = lambda value, failure, ending: calls.append(value)
    ctxt.elevated().reply("from-admin")
    ctxt.deepcopy().reply("from-copy")
    assert calls == ["from-admin", "from-copy"]
    assert isinstance(ctxt.elevated(), common.RpcContext)
    assert "admin" not in ctxt.roles


def test_rpc_context_key_named_reply_sink_is_just_a_value() -> None:
    ctxt = common.RpcContext.from_dict({"reply_sink": "not-callable"})
    assert ctxt.reply_sink is None
    assert ctxt.to_dict() == {"reply_sink": "not-callable"}
    ctxt.reply(1)
    assert ctxt.replies == [1]


# -- serialising remote exceptions --------------------------------------------

def test_serialize_remote_exception_fields() -> None:
    data = json.loads(common.serialize_remote_exception(
        _exc_info(SampleError("boom", code=7, extra="x")), log_failure=False))
    assert data["class"] == "SampleError"
    assert data["module"] == THIS_MODULE
    assert data["message"] == "boom"
    assert data["args"] == ["boom"]
    assert data["kwargs"] == {"code": 7, "extra": "x"}
    assert isinstance(data["tb"], list) and data["tb"]
    assert all(isinstance(line, str) for line in data["tb"])
    assert "SampleError: boom" in data["tb"][-1]


def test_serialize_remote_exception_writes_builtins_as_exceptions() -> None:
    data = json.loads(common.serialize_remote_exception(
        _exc_info(KeyError("k")), log_failure=False))
    assert (data["class"], data["module"]) == ("KeyError", "exceptions")


def test_serialize_remote_exception_keeps_rpc_exception_kwargs() -> None:
    data = json.loads(common.serialize_remote_exception(
        _exc_info(SampleRpcError(name="disk")), log_failure=False))
    assert data["kwargs"] == {"name": "disk"}
    assert data["message"] == "thing disk broke"


def test_serialize_remote_exception_turns_odd_args_into_text() -> None:
    marker = object()
    data = json.loads(common.serialize_remote_exception(
        _exc_info(ValueError(marker, {"k": {1, 2}}, (1, 2))), log_failure=False))
    assert data["args"][0] == str(marker)
    assert data["args"][1]["k"] in ("{1, 2}", "{2, 1}")
    assert data["args"][2] == [1, 2]


def test_serialize_remote_exception_survives_a_broken_str() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    data = json.loads(common.serialize_remote_exception(
        _exc_info(Unprintable()), log_failure=False))
    assert data["class"] == "Unprintable"
    assert "unprintable" in data["message"]


def test_serialize_remote_exception_logs_only_when_asked(caplog) -> None:
    with caplog.at_level(logging.ERROR, logger=codec.LOG.name):
        common.serialize_remote_exception(_exc_info(ValueError("quiet")),
                                          log_failure=False)
    assert "quiet" not in caplog.text
    with caplog.at_level(logging.ERROR, logger=codec.LOG.name):
        common.serialize_remote_exception(_exc_info(ValueError("loud")))
    assert "Returning exception loud to caller" in caplog.text


# -- rebuilding remote exceptions ---------------------------------------------

def test_allowed_class_is_rebuilt_as_remote_subclass() -> None:
    text = common.serialize_remote_exception(
        _exc_info(SampleError("boom", code=7)), log_failure=False)
    exc = common.deserialize_remote_exception(text, [THIS_MODULE])
    assert isinstance(exc, SampleError)
    assert type(exc) is not SampleError
    assert type(exc).__name__ == "SampleError_Remote"
    assert type(exc).__module__ == THIS_MODULE + "_Remote"
    assert exc.first == "boom" and exc.code == 7
    assert str(exc).startswith("boom\n")
    assert "Traceback (most recent call last)" in str(exc)
    assert "_exc_info" in str(exc)        # the remote frame's function


def test_remote_classes_are_made_once() -> None:
    text = _payload(args=["a"])
    first = common.deserialize_remote_exception(text, [THIS_MODULE])
    second = common.deserialize_remote_exception(text, [THIS_MODULE])
    assert type(first) is type(second)
    assert first is not second


def test_rebuilt_exception_serialises_under_its_original_name() -> None:
    text = common.serialize_remote_exception(
        _exc_info(SampleError("boom", code=3)), log_failure=False)
    remote = common.deserialize_remote_exception(text, [THIS_MODULE])
    again = json.loads(common.serialize_remote_exception(
        _exc_info(remote), log_failure=False))
    assert (again["class"], again["module"]) == ("SampleError", THIS_MODULE)
    twice = common.deserialize_remote_exception(json.dumps(again), [THIS_MODULE])
    assert type(twice).__name__ == "SampleError_Remote"
    assert twice.code == 3


def test_grizzly_remote_suffix_is_understood() -> None:
    exc = common.deserialize_remote_exception(
        _payload(**{"class": "SampleError_Remote",
                    "module": THIS_MODULE + "_Remote", "args": ["x"]}),
        [THIS_MODULE])
    assert isinstance(exc, SampleError)


@pytest.mark.parametrize("wire_module, allowed", [
    ("exceptions", ["exceptions"]),    # a Python 2 node, stock allow-list
    ("exceptions", ["builtins"]),
    ("builtins", ["exceptions"]),
    ("builtins", ["builtins"]),
])
def test_builtin_exceptions_under_either_name(wire_module: str,
                                              allowed: list) -> None:
    exc = common.deserialize_remote_exception(
        _payload(**{"class": "ValueError", "module": wire_module,
                    "message": "bad value", "args": ["bad value"]}), allowed)
    assert isinstance(exc, ValueError)
    assert type(exc).__name__ == "ValueError_Remote"
    assert str(exc) == "bad value\nline one\n\nline two\n"


def test_builtin_round_trip() -> None:
    text = common.serialize_remote_exception(_exc_info(KeyError("gone")),
                                             log_failure=False)
    exc = common.deserialize_remote_exception(text, ["exceptions"])
    assert isinstance(exc, KeyError)
    assert exc.args == ("gone",)


def test_module_not_allowed_gives_remote_error() -> None:
    exc = common.deserialize_remote_exception(
        _payload(message="nope", tb=["a\n", "b\n"]), ["nova.exception"])
    assert type(exc) is errors.RemoteError
    assert exc.exc_type == "SampleError"
    assert exc.value == "nope"
    assert exc.traceback == "a\n\nb\n"
    assert "SampleError" in str(exc) and "nope" in str(exc)


def test_unknown_module_is_never_imported(tmp_path, monkeypatch) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "rpc_bait_module.py").write_text(
        "open(%r, 'w').write('yes')\n"
        "class Bait(Exception):\n    pass\n" % str(marker))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("rpc_bait_module", None)
    exc = common.deserialize_remote_exception(
        _payload(**{"class": "Bait", "module": "rpc_bait_module"}),
        ["rpc_bait_module"])
    assert type(exc) is errors.RemoteError
    assert exc.exc_type == "Bait"
    assert "rpc_bait_module" not in sys.modules
    assert not marker.exists()


@pytest.mark.parametrize("name, module", [
    ("not_an_exception", THIS_MODULE),        # a function
    ("NotAnExceptionClass", THIS_MODULE),     # a class, not an Exception
    ("THIS_MODULE", THIS_MODULE),             # a string
    ("Missing", THIS_MODULE),
    ("dict", "builtins"),
    ("SystemExit", "exceptions"),             # BaseException only
    ("KeyboardInterrupt", "exceptions"),
    ("__class__", THIS_MODULE),
    ("os.path", THIS_MODULE),
    ("", THIS_MODULE),
    (None, THIS_MODULE),
    ("SampleError", None),
    ("SampleError", 5),
])
def test_names_that_are_not_exception_classes_give_remote_error(
        name: object, module: object) -> None:
    exc = common.deserialize_remote_exception(
        _payload(**{"class": name, "module": module}),
        [THIS_MODULE, "exceptions"])
    assert type(exc) is errors.RemoteError


def test_failed_construction_gives_remote_error() -> None:
    exc = common.deserialize_remote_exception(
        _payload(**{"class": "StrictError", "args": ["a", "b"],
                    "message": "two args"}), [THIS_MODULE])
    assert type(exc) is errors.RemoteError
    assert exc.exc_type == "StrictError"
    assert exc.value == "two args"


@pytest.mark.parametrize("args, kwargs", [
    ("not-a-list", {}), ([], ["not", "a", "dict"]), ([], None),
])
def test_bad_args_shapes_give_remote_error(args: object, kwargs: object) -> None:
    exc = common.deserialize_remote_exception(
        _payload(args=args, kwargs=kwargs), [THIS_MODULE])
    assert type(exc) is errors.RemoteError


@pytest.mark.parametrize("data", [
    "not json", "", "[1, 2]", '"a string"', "42", "null",
    b"\xff\xfe not utf-8", "[" * 100000, None, 17, ["class", "x"],
])
def test_malformed_payloads_give_remote_error(data: object) -> None:
    exc = common.deserialize_remote_exception(data, [THIS_MODULE])
    assert type(exc) is errors.RemoteError
    assert exc.exc_type == "RemoteProtocolError"
    assert "malformed remote exception payload" in exc.value


def test_odd_field_types_are_tolerated() -> None:
    exc = common.deserialize_remote_exception(
        json.dumps({"class": "Nope", "module": "x", "message": 5, "tb": "one"}),
        [])
    assert type(exc) is errors.RemoteError
    assert (exc.value, exc.traceback) == ("5", "one")
    exc = common.deserialize_remote_exception(
        json.dumps({"class": "Nope", "module": "x", "tb": [1, None]}), [])
    assert exc.traceback == "1\nNone"


def test_dict_payload_is_accepted() -> None:
    exc = common.deserialize_remote_exception(json.loads(_payload(args=["z"])),
                                              [THIS_MODULE])
    assert isinstance(exc, SampleError)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional={
    "class": st.sampled_from(["SampleError", "StrictError", "ValueError",
                              "SystemExit", "dict"]) | st.text(max_size=10),
    "module": st.sampled_from([THIS_MODULE, "exceptions", "builtins", "os"])
    | st.text(max_size=10),
    "message": _json_values, "tb": _json_values,
    "args": _json_values, "kwargs": _json_values}))
def test_deserialize_never_raises_on_structured_junk(failure: dict) -> None:
    exc = common.deserialize_remote_exception(
        json.dumps(failure), [THIS_MODULE, "exceptions"])
    assert isinstance(exc, Exception)
    str(exc)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_deserialize_never_raises_on_byte_junk(data: object) -> None:
    assert isinstance(common.deserialize_remote_exception(data, ["exceptions"]),
                      Exception)


# -- expected exceptions ------------------------------------------------------

def test_catch_client_exception_wraps_listed_types() -> None:
    def fails() -> None:
        raise KeyError("expected")

    with pytest.raises(errors.ClientException) as info:
        common.catch_client_exception([KeyError], fails)
    assert isinstance(info.value._exc_info[1], KeyError)


def test_catch_client_exception_matches_exact_types_only() -> None:
    class SubKeyError(KeyError):
        pass

    def fails() -> None:
        raise SubKeyError("sub")

    with pytest.raises(SubKeyError):
        common.catch_client_exception([KeyError], fails)


def test_catch_client_exception_passes_others_and_results() -> None:
    def fails() -> None:
        raise ValueError("unexpected")

    with pytest.raises(ValueError):
        common.catch_client_exception([KeyError], fails)
    assert common.catch_client_exception([KeyError], lambda a, b=0: a + b,
                                         1, b=2) == 3


def test_client_exceptions_decorator() -> None:
    class Manager:
        @common.client_exceptions(KeyError, IndexError)
        def lookup(self, ctxt: object, key: str) -> str:
            """Find a key."""
            return {"a": "A"}[key]

    manager = Manager()
    assert manager.lookup(None, key="a") == "A"
    assert Manager.lookup.__name__ == "lookup"
    assert Manager.lookup.__doc__ == "Find a key."
    with pytest.raises(errors.ClientException) as info:
        manager.lookup(None, key="zz")
    assert isinstance(info.value._exc_info[1], KeyError)


# -- logging without secrets --------------------------------------------------

def test_safe_for_logging_hides_passwords_and_tokens_at_any_depth() -> None:
    data = {
        "method": "set_admin_password",
        "_context_auth_token": "tok1",
        "auth_token": "tok2",
        "args": {"new_pass": "p1", "instance": "i-1",
                 "nested": {"admin_password": "p2", "AdminPassword": "p3",
                            "items": [{"db_password": "p4", "ok": 1}]}},
    }
    original = copy.deepcopy(data)
    clean = common.safe_for_logging(data)
    text = json.dumps(clean)
    for secret in ("tok1", "tok2", "p1", "p2", "p3", "p4"):
        assert secret not in text
    assert clean["args"]["instance"] == "i-1"
    assert clean["args"]["nested"]["items"][0]["ok"] == 1
    assert clean["method"] == "set_admin_password"
    assert data == original


def test_safe_for_logging_leaves_other_values_alone() -> None:
    assert common.safe_for_logging("text") == "text"
    assert common.safe_for_logging([1, {"x": 2}]) == [1, {"x": 2}]
    assert common.safe_for_logging((1, {"password": 2})) == (1, {"password": "<SANITIZED>"})


def test_safe_for_logging_bounds_depth() -> None:
    deep: dict = {}
    node = deep
    for _ in range(200):
        node["next"] = {}
        node = node["next"]
    assert "<TOO DEEP>" in json.dumps(common.safe_for_logging(deep))


def test_safe_log_passes_the_sanitised_copy() -> None:
    seen: list = []
    data = {"args": {"password": "hunter2"}, "method": "m"}
    common._safe_log(lambda msg, d: seen.append((msg, d)), "sending %s", data)
    assert seen == [("sending %s",
                     {"args": {"password": "<SANITIZED>"}, "method": "m"})]
    assert data["args"]["password"] == "hunter2"
