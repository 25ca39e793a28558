"""Unit tests of the in-process fake backend (nova_rpc_zmq.rpc.impl_fake)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Iterator

import pytest
from oslo_config import cfg

from nova_rpc_zmq import config, errors
from nova_rpc_zmq.rpc import common, impl_fake
from nova_rpc_zmq.rpc.dispatcher import RpcDispatcher
from tests.support import scaled, wait_for

THIS_MODULE = __name__


class ServiceError(Exception):
    """An application error the callers may rebuild (module allow-listed)."""


def make_conf(host: str = "host-a", timeout: float = 5.0,
              allowed: list | None = None) -> config.Settings:
    return config.load_settings(
        cfg.ConfigOpts(),
        rpc_response_timeout=scaled(timeout),
        allowed_rpc_exception_modules=(allowed if allowed is not None else
                                       [THIS_MODULE, "exceptions",
                                        "nova_rpc_zmq.errors"]),
        rpc_zmq_host=host)


class Manager:
    """A service manager whose methods record what they saw."""

    RPC_API_VERSION = "1.3"

    def __init__(self, name: str = "m") -> None:
        self.name = name
        self.seen: list = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.finished = threading.Event()
        self.lock = threading.Lock()

    def _record(self, *item: Any) -> None:
        with self.lock:
            self.seen.append(item)

    def echo(self, ctxt: Any, value: Any) -> Any:
        self._record("echo", value)
        return value

    def whoami(self, ctxt: Any) -> str:
        self._record("whoami")
        return self.name

    def context_of(self, ctxt: Any) -> dict:
        self._record("context_of", type(ctxt).__name__)
        return ctxt.to_dict()

    def count(self, ctxt: Any, n: int) -> Iterator[int]:
        for i in range(n):
            yield i

    def stream_then_wait(self, ctxt: Any) -> Iterator[str]:
        yield "first"
        self.release.wait(scaled(10))
        yield "second"

    def endless(self, ctxt: Any) -> Iterator[int]:
        try:
            i = 0
            while not self.release.is_set() and i < 100000:
                yield i
                i += 1
                time.sleep(0.001)
        finally:
            self.finished.set()

    def replies(self, ctxt: Any) -> str:
        ctxt.reply("r1")
        ctxt.reply({"r": 2})
        return "return value not sent after replies"

    def replies_then_end(self, ctxt: Any) -> None:
        ctxt.reply("only")
        ctxt.reply(ending=True)
        ctxt.reply("dropped")

    def reply_wait(self, ctxt: Any) -> None:
        ctxt.reply("early")
        self.release.wait(scaled(10))
        ctxt.reply("late")

    def generator_fails(self, ctxt: Any) -> Iterator[int]:
        yield 1
        raise ServiceError("mid-stream")

    def reply_failure(self, ctxt: Any) -> None:
        try:
            raise ServiceError("replied failure")
        except ServiceError:
            import sys
            ctxt.reply(failure=sys.exc_info())

    def fail(self, ctxt: Any, message: str) -> None:
        raise ServiceError(message)

    def fail_builtin(self, ctxt: Any) -> None:
        raise KeyError("no such key")

    @common.client_exceptions(ServiceError)
    def expected_fail(self, ctxt: Any) -> None:
        raise ServiceError("expected")

    def unserialisable(self, ctxt: Any) -> Any:
        return object()

    def block(self, ctxt: Any) -> str:
        self.started.set()
        self.release.wait(scaled(10))
        self._record("block-done")
        return "unblocked"

    def nested_call(self, ctxt: Any, conf_host: str) -> Any:
        conf = make_conf(host=conf_host)
        return impl_fake.call(conf, ctxt, "other", {"method": "whoami",
                                                    "args": {}})


@pytest.fixture()
def conf() -> Iterator[Any]:
    yield make_conf()
    impl_fake.cleanup()
    assert impl_fake.wait_idle(scaled(15)), "fake backend workers still busy"


def serve(conf: Any, topic: str, manager: Any, fanout: bool = False,
          start: bool = True) -> impl_fake.Connection:
    conn = impl_fake.create_connection(conf)
    conn.create_consumer(topic, RpcDispatcher([manager]), fanout=fanout)
    if start:
        conn.consume_in_thread()
    return conn


def msg(method: str, **args: Any) -> dict:
    return {"method": method, "args": args}


# -- call ---------------------------------------------------------------------

def test_call_returns_the_result_after_a_json_round_trip(conf: Any) -> None:
    manager = Manager()
    serve(conf, "svc", manager)
    value = {"a": (1, 2), "b": [None, True, 1.5, "x"]}
    assert impl_fake.call(conf, {}, "svc", msg("echo", value=value)) == \
        {"a": [1, 2], "b": [None, True, 1.5, "x"]}
    # the server saw the JSON form too (a list, not the tuple)
    assert manager.seen == [("echo", {"a": [1, 2], "b": [None, True, 1.5, "x"]})]


def test_non_json_argument_fails_at_the_caller(conf: Any) -> None:
    manager = Manager()
    serve(conf, "svc", manager)
    with pytest.raises(errors.LocalError) as info:
        impl_fake.call(conf, {}, "svc", msg("echo", value={"when": object()}))
    assert "JSON" in str(info.value)
    with pytest.raises(errors.LocalError):
        impl_fake.cast(conf, {}, "svc", msg("echo", value={1, 2}))
    assert impl_fake.wait_idle(scaled(5))
    assert manager.seen == []


def test_non_json_context_fails_at_the_caller(conf: Any) -> None:
    serve(conf, "svc", Manager())
    ctxt = common.CommonRpcContext(request_id="r", when=object())
    with pytest.raises(errors.LocalError):
        impl_fake.call(conf, ctxt, "svc", msg("echo", value=1))


@pytest.mark.parametrize("bad", [None, {}, {"method": ""}, {"args": {}},
                                 {"method": "echo", "args": [1]}, "echo"])
def test_malformed_messages_are_the_callers_mistake(conf: Any, bad: Any) -> None:
    serve(conf, "svc", Manager())
    with pytest.raises(errors.LocalError):
        impl_fake.call(conf, {}, "svc", bad)


@pytest.mark.parametrize("topic", ["", "bad topic", "a/../b", None, "x..y"])
def test_bad_topics_are_refused(conf: Any, topic: Any) -> None:
    with pytest.raises(errors.LocalError):
        impl_fake.call(conf, {}, topic, msg("echo", value=1))
    with pytest.raises(errors.LocalError):
        impl_fake.create_connection(conf).create_consumer(
            topic, RpcDispatcher([Manager()]))


def test_server_gets_an_rpc_context_with_the_same_values(conf: Any) -> None:
    manager = Manager()
    serve(conf, "svc", manager)
    ctxt = common.CommonRpcContext(request_id="req-9", user_id="u",
                                   roles=["member"], auth_token="t")
    assert impl_fake.call(conf, ctxt, "svc", msg("context_of")) == ctxt.to_dict()
    assert manager.seen == [("context_of", "RpcContext")]
    assert impl_fake.call(conf, {"plain": "dict"}, "svc",
                          msg("context_of")) == {"plain": "dict"}
    assert impl_fake.call(conf, None, "svc", msg("context_of")) == {}


def test_no_consumer_times_out_at_once(conf: Any) -> None:
    start = time.monotonic()
    with pytest.raises(errors.Timeout) as info:
        impl_fake.call(conf, {}, "nobody", msg("echo", value=1), timeout=30)
    assert time.monotonic() - start < 5
    assert info.value.topic == "nobody" and info.value.method == "echo"
    before = impl_fake.counters.get("call_no_consumer")
    with pytest.raises(errors.Timeout):
        impl_fake.multicall(conf, {}, "nobody", msg("echo", value=1))
    assert impl_fake.counters.get("call_no_consumer") == before + 1


def test_slow_method_times_out_and_its_late_reply_is_dropped(conf: Any) -> None:
    manager = Manager()
    serve(conf, "svc", manager)
    late_before = impl_fake.counters.get("late_reply")
    start = time.monotonic()
    with pytest.raises(errors.Timeout) as info:
        impl_fake.call(conf, {}, "svc", msg("block"), timeout=scaled(0.3))
    assert time.monotonic() - start >= scaled(0.3) * 0.9
    assert (info.value.topic, info.value.method) == ("svc", "block")
    manager.release.set()
    wait_for(lambda: impl_fake.counters.get("late_reply") > late_before,
             what="the late reply to be counted")
    assert ("block-done",) in manager.seen


def test_default_timeout_comes_from_conf(conf: Any) -> None:
    quick = make_conf(timeout=0.3)
    manager = Manager()
    serve(quick, "svc", manager)
    start = time.monotonic()
    with pytest.raises(errors.Timeout):
        impl_fake.call(quick, {}, "svc", msg("block"))
    elapsed = time.monotonic() - start
    assert scaled(0.3) * 0.9 <= elapsed < scaled(5)
    manager.release.set()


# -- topics, hosts, round robin and fanout ------------------------------------

def test_bare_topic_consumer_also_serves_its_directed_topic(conf: Any) -> None:
    serve(conf, "compute", Manager("a"))
    assert impl_fake.call(conf, {}, "compute.host-a", msg("whoami")) == "a"
    with pytest.raises(errors.Timeout):
        impl_fake.call(conf, {}, "compute.host-b", msg("whoami"))


def test_directed_topics_reach_the_right_host(conf: Any) -> None:
    serve(make_conf(host="h1"), "compute", Manager("one"))
    serve(make_conf(host="h2"), "compute", Manager("two"))
    for _ in range(3):
        assert impl_fake.call(conf, {}, "compute.h1", msg("whoami")) == "one"
        assert impl_fake.call(conf, {}, "compute.h2", msg("whoami")) == "two"


def test_conf_without_host_uses_the_hostname() -> None:
    try:
        serve(None, "svc", Manager("x"))
        assert impl_fake.call(None, {}, "svc.%s" % socket.gethostname(),
                              msg("whoami")) == "x"
    finally:
        impl_fake.cleanup()


def test_calls_go_round_robin(conf: Any) -> None:
    for name in ("a", "b", "c"):
        serve(make_conf(host=name), "svc", Manager(name))
    got = [impl_fake.call(conf, {}, "svc", msg("whoami")) for _ in range(9)]
    assert sorted(got) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert got[:3] == got[3:6] == got[6:]


def test_fanout_reaches_every_fanout_consumer_only(conf: Any) -> None:
    fans = [Manager("f%d" % i) for i in range(3)]
    for i, manager in enumerate(fans):
        serve(make_conf(host="h%d" % i), "svc", manager, fanout=True)
    direct = Manager("direct")
    serve(conf, "svc", direct)
    impl_fake.fanout_cast(conf, {}, "svc", msg("echo", value="hello"))
    assert impl_fake.wait_idle(scaled(5))
    for manager in fans:
        assert manager.seen == [("echo", "hello")]
    assert direct.seen == []
    # and a call never goes to a fanout consumer
    assert impl_fake.call(conf, {}, "svc", msg("whoami")) == "direct"


def test_fanout_to_nobody_is_counted(conf: Any) -> None:
    before = impl_fake.counters.get("fanout_no_consumer")
    impl_fake.fanout_cast(conf, {}, "nobody", msg("echo", value=1))
    assert impl_fake.counters.get("fanout_no_consumer") == before + 1


def test_cast_to_server_and_fanout_cast_to_server(conf: Any) -> None:
    one = Manager()
    fan = Manager()
    serve(conf, "svc", one)
    serve(conf, "svc", fan, fanout=True)
    # (conf, context, server_params, topic, msg), as the Havana drivers
    impl_fake.cast_to_server(conf, {"request_id": "r"}, {"ignored": True},
                             "svc", msg("echo", value="direct"))
    impl_fake.fanout_cast_to_server(conf, {"request_id": "r"},
                                    {"ignored": True}, "svc",
                                    msg("echo", value="fan"))
    assert impl_fake.wait_idle(scaled(5))
    assert one.seen == [("echo", "direct")]
    assert fan.seen == [("echo", "fan")]


# -- cast -----------------------------------------------------------------------

def test_cast_returns_before_the_method_runs_to_its_end(conf: Any) -> None:
    manager = Manager()
    serve(conf, "svc", manager)
    impl_fake.cast(conf, {}, "svc", msg("block"))
    assert manager.started.wait(scaled(5))
    assert ("block-done",) not in manager.seen
    manager.release.set()
    assert impl_fake.wait_idle(scaled(5))
    assert ("block-done",) in manager.seen


def test_cast_to_nobody_is_logged_and_counted(conf: Any, caplog) -> None:
    before = impl_fake.counters.get("cast_no_consumer")
    with caplog.at_level(logging.ERROR, logger=impl_fake.LOG.name):
        impl_fake.cast(conf, {}, "nobody", msg("echo", value=1))
    assert impl_fake.counters.get("cast_no_consumer") == before + 1
    assert "nobody" in caplog.text


def test_failing_cast_is_logged_and_counted(conf: Any, caplog) -> None:
    serve(conf, "svc", Manager())
    before = impl_fake.counters.get("cast_failed")
    with caplog.at_level(logging.ERROR, logger=impl_fake.LOG.name):
        impl_fake.cast(conf, {}, "svc", msg("fail", message="cast went wrong"))
        assert impl_fake.wait_idle(scaled(5))
    assert impl_fake.counters.get("cast_failed") == before + 1
    assert "cast went wrong" in caplog.text


def test_cast_runs_a_generator_to_its_end(conf: Any) -> None:
    manager = Manager()
    serve(conf, "svc", manager)
    manager.release.set()
    impl_fake.cast(conf, {}, "svc", msg("endless"))
    assert manager.finished.wait(scaled(5))


# -- consuming, closing -------------------------------------------------------

def test_messages_wait_until_the_connection_consumes(conf: Any) -> None:
    manager = Manager()
    conn = serve(conf, "svc", manager, start=False)
    with pytest.raises(errors.Timeout):
        impl_fake.call(conf, {}, "svc", msg("echo", value="queued-call"),
                       timeout=scaled(0.2))
    impl_fake.cast(conf, {}, "svc", msg("echo", value="queued-cast"))
    assert impl_fake.wait_idle(scaled(2))
    assert manager.seen == []
    conn.consume_in_thread()
    conn.consume_in_thread()          # a second start changes nothing
    wait_for(lambda: len(manager.seen) == 2, what="queued messages handled")
    assert sorted(manager.seen) == [("echo", "queued-call"),
                                    ("echo", "queued-cast")]


def test_close_removes_consumers_and_drops_queued_messages(conf: Any) -> None:
    conn = serve(conf, "svc", Manager(), start=False)
    impl_fake.cast(conf, {}, "svc", msg("echo", value=1))
    before = impl_fake.counters.get("dropped_on_close")
    conn.close()
    assert impl_fake.counters.get("dropped_on_close") == before + 1
    with pytest.raises(errors.Timeout):
        impl_fake.call(conf, {}, "svc", msg("echo", value=1))
    with pytest.raises(errors.InvalidRPCConnectionReuse):
        conn.create_consumer("svc", RpcDispatcher([Manager()]))


def test_wait_blocks_until_close(conf: Any) -> None:
    conn = serve(conf, "svc", Manager())
    assert conn.wait(timeout=scaled(0.05)) is False
    closer = threading.Thread(target=conn.close)
    closer.start()
    assert conn.wait(timeout=scaled(5)) is True
    closer.join(scaled(5))


def test_consumer_needs_a_dispatcher(conf: Any) -> None:
    with pytest.raises(errors.LocalError) as info:
        impl_fake.create_connection(conf).create_consumer("svc", Manager())
    assert "dispatch" in str(info.value)


def test_connection_is_a_common_connection(conf: Any) -> None:
    conn = impl_fake.create_connection(conf, new=False)
    assert isinstance(conn, common.Connection)


# -- multicall streaming ------------------------------------------------------

def test_multicall_yields_generator_values(conf: Any) -> None:
    serve(conf, "svc", Manager())
    assert list(impl_fake.multicall(conf, {}, "svc", msg("count", n=5))) == \
        [0, 1, 2, 3, 4]
    assert impl_fake.call(conf, {}, "svc", msg("count", n=5)) == 4
    assert list(impl_fake.multicall(conf, {}, "svc", msg("count", n=0))) == []
    assert impl_fake.call(conf, {}, "svc", msg("count", n=0)) is None


def test_multicall_streams_before_the_method_ends(conf: Any) -> None:
    manager = Manager()
    serve(conf, "svc", manager)
    stream = impl_fake.multicall(conf, {}, "svc", msg("stream_then_wait"))
    # 'first' must arrive while the generator still waits for release
    assert next(stream) == "first"
    manager.release.set()
    assert list(stream) == ["second"]


def test_context_reply_streams(conf: Any) -> None:
    manager = Manager()
    serve(conf, "svc", manager)
    stream = impl_fake.multicall(conf, {}, "svc", msg("reply_wait"))
    assert next(stream) == "early"
    manager.release.set()
    assert list(stream) == ["late"]     # replies replace the return value


def test_replies_replace_the_return_value(conf: Any) -> None:
    serve(conf, "svc", Manager())
    assert list(impl_fake.multicall(conf, {}, "svc", msg("replies"))) == \
        ["r1", {"r": 2}]
    assert impl_fake.call(conf, {}, "svc", msg("replies")) == {"r": 2}


def test_reply_ending_closes_the_stream(conf: Any) -> None:
    serve(conf, "svc", Manager())
    assert list(impl_fake.multicall(conf, {}, "svc",
                                    msg("replies_then_end"))) == ["only"]


def test_error_after_streamed_values(conf: Any) -> None:
    serve(conf, "svc", Manager())
    stream = impl_fake.multicall(conf, {}, "svc", msg("generator_fails"))
    assert next(stream) == 1
    with pytest.raises(ServiceError) as info:
        next(stream)
    assert "mid-stream" in str(info.value)


def test_replied_failure_is_raised(conf: Any) -> None:
    serve(conf, "svc", Manager())
    with pytest.raises(ServiceError) as info:
        impl_fake.call(conf, {}, "svc", msg("reply_failure"))
    assert "replied failure" in str(info.value)


def test_closing_a_multicall_early_stops_the_generator(conf: Any) -> None:
    manager = Manager()
    serve(conf, "svc", manager)
    stream = impl_fake.multicall(conf, {}, "svc", msg("endless"))
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert manager.finished.wait(scaled(5))
    assert not manager.release.is_set()


def test_multicall_timeout_between_values(conf: Any) -> None:
    manager = Manager()
    serve(conf, "svc", manager)
    stream = impl_fake.multicall(conf, {}, "svc", msg("stream_then_wait"),
                                 timeout=scaled(0.2))
    assert next(stream) == "first"
    with pytest.raises(errors.Timeout) as info:
        next(stream)
    assert info.value.method == "stream_then_wait"
    manager.release.set()


# -- remote errors --------------------------------------------------------------

def test_allowed_error_is_rebuilt(conf: Any) -> None:
    serve(conf, "svc", Manager())
    with pytest.raises(ServiceError) as info:
        impl_fake.call(conf, {}, "svc", msg("fail", message="it broke"))
    assert type(info.value).__name__ == "ServiceError_Remote"
    assert str(info.value).startswith("it broke\n")
    assert "Traceback" in str(info.value)


def test_builtin_error_is_rebuilt(conf: Any) -> None:
    serve(conf, "svc", Manager())
    with pytest.raises(KeyError):
        impl_fake.call(conf, {}, "svc", msg("fail_builtin"))


def test_error_from_a_module_not_allowed_is_a_remote_error() -> None:
    strict = make_conf(allowed=["nova.exception"])
    try:
        serve(strict, "svc", Manager())
        with pytest.raises(errors.RemoteError) as info:
            impl_fake.call(strict, {}, "svc", msg("fail", message="hidden"))
        assert info.value.exc_type == "ServiceError"
        assert info.value.value == "hidden"
        assert "Traceback" in info.value.traceback
        assert not isinstance(info.value, ServiceError)
    finally:
        impl_fake.cleanup()


def test_expected_error_reaches_the_caller_without_error_log(conf: Any,
                                                             caplog) -> None:
    serve(conf, "svc", Manager())
    with caplog.at_level(logging.ERROR):
        with pytest.raises(ServiceError) as info:
            impl_fake.call(conf, {}, "svc", msg("expected_fail"))
    assert "expected" in str(info.value)
    assert "Returning exception" not in caplog.text


def test_unserialisable_result_becomes_an_error(conf: Any) -> None:
    serve(conf, "svc", Manager())
    with pytest.raises(errors.LocalError) as info:
        impl_fake.call(conf, {}, "svc", msg("unserialisable"))
    assert "JSON" in str(info.value)


def test_version_and_namespace_errors_come_back(conf: Any) -> None:
    serve(conf, "svc", Manager())
    with pytest.raises(errors.UnsupportedRpcVersion):
        impl_fake.call(conf, {}, "svc",
                       {"method": "echo", "version": "1.4", "args": {"value": 1}})
    with pytest.raises(errors.UnsupportedRpcVersion):
        impl_fake.call(conf, {}, "svc", {"method": "echo", "namespace": "x",
                                         "args": {"value": 1}})
    with pytest.raises(AttributeError):
        impl_fake.call(conf, {}, "svc", msg("no_such_method"))
    assert impl_fake.call(conf, {}, "svc", {"method": "echo", "version": "1.2",
                                            "args": {"value": "ok"}}) == "ok"


# -- concurrency ----------------------------------------------------------------

def test_a_method_may_call_another_service(conf: Any) -> None:
    serve(make_conf(host="h9"), "other", Manager("other-service"))
    serve(conf, "svc", Manager())
    assert impl_fake.call(conf, {}, "svc", msg("nested_call",
                                               conf_host="h1")) == "other-service"


@pytest.mark.timeout(60)
def test_concurrent_callers_get_their_own_answers(conf: Any) -> None:
    serve(conf, "svc", Manager())
    serve(make_conf(host="host-b"), "svc", Manager())
    results: dict = {}

    def caller(i: int) -> None:
        results[i] = impl_fake.call(conf, {}, "svc", msg("echo", value=i))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(scaled(20))
    assert results == {i: i for i in range(40)}


# -- notify and cleanup -------------------------------------------------------

def test_notify_records_notifications(conf: Any) -> None:
    impl_fake.notify(conf, {"request_id": "r"}, "notifications.info",
                     {"event_type": "compute.instance.create", "payload": (1,)})
    impl_fake.notify(conf, None, "notifications.error", {"x": 1}, envelope=True)
    assert impl_fake.get_notifications() == [
        {"topic": "notifications.info", "context": {"request_id": "r"},
         "msg": {"event_type": "compute.instance.create", "payload": [1]},
         "envelope": False},
        {"topic": "notifications.error", "context": {}, "msg": {"x": 1},
         "envelope": True}]
    with pytest.raises(errors.LocalError):
        impl_fake.notify(conf, {}, "notifications.info", {"bad": object()})


def test_cleanup_forgets_everything(conf: Any) -> None:
    conn = serve(conf, "svc", Manager())
    impl_fake.notify(conf, {}, "notifications.info", {"x": 1})
    impl_fake.cleanup()
    assert impl_fake.get_notifications() == []
    assert conn.wait(timeout=0) is True
    with pytest.raises(errors.Timeout):
        impl_fake.call(conf, {}, "svc", msg("whoami"))
