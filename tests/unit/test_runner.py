"""runner.run_request: the rules both backends follow to run a method and
hand back what it produced, with no sockets."""

from __future__ import annotations

import json
import logging
from typing import Any, Iterator

import pytest

from nova_rpc_zmq import runner
from nova_rpc_zmq.codec import RpcContext
from nova_rpc_zmq.rpc.common import client_exceptions


class Service:
    """A proxy whose dispatch calls the method of that name."""

    def __init__(self) -> None:
        self.produced: list[Any] = []
        self.closed = False

    def dispatch(self, ctxt: RpcContext, version: Any, method: str,
                 namespace: Any, **kwargs: Any) -> Any:
        return getattr(self, method)(ctxt, **kwargs)

    def echo(self, ctxt: RpcContext, value: Any) -> Any:
        return value

    def count(self, ctxt: RpcContext, n: int) -> Iterator[int]:
        try:
            for i in range(n):
                self.produced.append(i)
                yield i
        finally:
            self.closed = True

    def replies_then_returns(self, ctxt: RpcContext) -> str:
        ctxt.reply("a")
        ctxt.deepcopy().reply("b")  # a copy replies to the same caller
        return "dropped"

    def ends_then_returns(self, ctxt: RpcContext) -> str:
        ctxt.reply("only")
        ctxt.reply(ending=True)
        ctxt.reply("late")
        return "dropped"

    def ends_in_generator(self, ctxt: RpcContext) -> Iterator[int]:
        yield 1
        ctxt.reply(ending=True)
        self.produced.append("after end")
        yield 2

    def fails(self, ctxt: RpcContext) -> None:
        raise ValueError("boom")

    @client_exceptions(KeyError)
    def expected(self, ctxt: RpcContext) -> None:
        raise KeyError("missing")

    def ends_then_fails(self, ctxt: RpcContext) -> None:
        ctxt.reply(ending=True)
        raise ValueError("after the end")


def run(method: str, svc: Service | None = None, **kwargs: Any
        ) -> tuple[bool, list[tuple[str, Any]]]:
    """Run a call of ``method``: (its result, the items it emitted)."""
    items: list[tuple[str, Any]] = []
    ok = runner.run_request(svc or Service(), RpcContext(user="u"),
                            {"method": method, "args": kwargs},
                            lambda kind, payload: items.append((kind, payload)),
                            where="topic.h")
    return ok, items


def test_return_value_is_one_value_then_end() -> None:
    assert run("echo", value=[1, 2]) == (True, [("value", [1, 2]),
                                              ("end", None)])


def test_generator_values_stream_in_order() -> None:
    ok, items = run("count", n=3)
    assert items == [("value", 0), ("value", 1), ("value", 2), ("end", None)]


def test_context_replies_are_sent_and_the_return_value_dropped() -> None:
    _ok, items = run("replies_then_returns")
    assert items == [("value", "a"), ("value", "b"), ("end", None)]


def test_ending_the_stream_drops_later_replies_and_the_return_value() -> None:
    _ok, items = run("ends_then_returns")
    assert items == [("value", "only"), ("end", None)]


def test_ending_inside_a_generator_closes_it() -> None:
    svc = Service()
    _ok, items = run("ends_in_generator", svc=svc)
    assert items == [("value", 1), ("end", None)]
    assert "after end" in svc.produced  # ran to its next yield, then closed


def test_failure_ends_the_stream_with_the_serialised_error(caplog) -> None:
    with caplog.at_level(logging.ERROR):
        ok, items = run("fails")
    assert ok is False
    [(kind, payload)] = items
    assert kind == "failure"
    data = json.loads(payload)
    assert data["class"] == "ValueError" and data["message"] == "boom"
    assert "Returning exception boom to caller" in caplog.text


def test_expected_exception_is_sent_but_not_logged_as_error(caplog) -> None:
    with caplog.at_level(logging.ERROR):
        ok, items = run("expected")
    assert ok is True
    assert [kind for kind, _ in items] == ["failure"]
    assert json.loads(items[0][1])["class"] == "KeyError"
    assert caplog.records == []


def test_failure_after_the_end_is_logged_not_sent(caplog) -> None:
    with caplog.at_level(logging.ERROR, logger=runner.LOG.name):
        ok, items = run("ends_then_fails")
    assert items == [("end", None)]
    assert ok is False
    assert "raised ValueError after its reply ended; not sent" in caplog.text


def test_stopped_caller_closes_the_generator() -> None:
    svc = Service()
    items: list = []
    runner.run_request(svc, RpcContext(), {"method": "count",
                                           "args": {"n": 100}},
                       lambda kind, payload: items.append(kind),
                       stopped=lambda: len(items) >= 2)
    assert svc.closed and svc.produced == [0, 1]
    assert items == ["value", "value", "end"]


def test_a_cast_runs_a_generator_to_its_end() -> None:
    svc = Service()
    ok = runner.run_request(svc, RpcContext(),
                            {"method": "count", "args": {"n": 5}})
    assert ok is True and svc.produced == [0, 1, 2, 3, 4]


def test_a_failing_cast_is_logged_and_reported(caplog) -> None:
    with caplog.at_level(logging.ERROR, logger=runner.LOG.name):
        ok = runner.run_request(Service(), RpcContext(),
                                {"method": "fails"}, where="compute.h")
    assert ok is False
    assert "cast fails on compute.h raised ValueError" in caplog.text


def test_an_expected_exception_in_a_cast_is_not_an_error(caplog) -> None:
    with caplog.at_level(logging.ERROR):
        ok = runner.run_request(Service(), RpcContext(), {"method": "expected"})
    assert ok is True and caplog.records == []


def test_emit_failing_at_the_end_is_logged(caplog) -> None:
    def emit(kind: str, payload: Any) -> None:
        if kind == "end":
            raise OSError("no route")

    with caplog.at_level(logging.ERROR, logger=runner.LOG.name):
        ok = runner.run_request(Service(), RpcContext(),
                                {"method": "echo", "args": {"value": 1}}, emit)
    assert ok is False
    assert "raised OSError after its reply ended" in caplog.text


@pytest.mark.parametrize("args", [None, {}])
def test_absent_args_mean_no_arguments(args: Any) -> None:
    body: dict = {"method": "count"}
    if args is not None:
        body["args"] = args
    items: list = []
    runner.run_request(Service(), RpcContext(), body,
                       lambda kind, payload: items.append((kind, payload)))
    assert items[0][0] == "failure"  # count() needs n: a TypeError, sent back
    assert json.loads(items[0][1])["class"] == "TypeError"
