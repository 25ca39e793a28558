"""Driver: a call request runs by the shared rules (``runner``) and its
replies take the direct route to a caller on this host, on real ZeroMQ
IPC sockets (no receiver, no network)."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any, Iterator

import pytest
import zmq
from oslo_config import cfg

from nova_rpc_zmq import config, wire
from nova_rpc_zmq.concurrency import get_handler
from nova_rpc_zmq.impl_zmq.driver import Driver
from tests.support import scaled

TOKEN = "0123456789abcdef"
MSG_ID = TOKEN + "0000000000000001"


class Service:
    def __init__(self) -> None:
        self.after_end: list = []

    def dispatch(self, ctxt: Any, version: Any, method: str, namespace: Any,
                 **kwargs: Any) -> Any:
        return getattr(self, method)(ctxt, **kwargs)

    def ends_then_returns(self, ctxt: Any) -> str:
        ctxt.reply(ending=True)
        return "not sent"

    def streams_past_the_end(self, ctxt: Any) -> Iterator[int]:
        yield 1
        ctxt.reply(ending=True)
        self.after_end.append(True)
        yield 2


@pytest.fixture
def driver() -> Iterator[Driver]:
    ipc_dir = tempfile.mkdtemp(prefix="nrzd-")
    settings = config.load_settings(cfg.ConfigOpts(), rpc_zmq_ipc_dir=ipc_dir,
                                    rpc_zmq_matchmaker="localhost")
    drv = Driver(settings, handler=get_handler("threading"))
    yield drv
    drv.cleanup()
    shutil.rmtree(ipc_dir, ignore_errors=True)


def answer(driver: Driver, method: str, proxy: Service) -> list[wire.Reply]:
    """Run a call of ``method`` from a caller on this host that named its
    token: its reply parts, read from the caller's direct socket."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    pull.setsockopt(zmq.RCVTIMEO, int(scaled(5) * 1000))
    pull.bind("ipc://" + driver.direct_reply_path(TOKEN))
    try:
        own_replies = wire.reply_topic(driver.settings.rpc_zmq_host)
        body = wire.call_request(MSG_ID, own_replies, {}, {"method": method})
        msg = wire.decode(wire.encode(wire.CALLER_STREAMS + b"." +
                                      TOKEN.encode(), "svc", {}, body))
        assert isinstance(msg, wire.Message) and msg.call is not None
        driver.process(proxy, msg)
        parts = []
        while not parts or parts[-1].more:
            reply = wire.decode(pull.recv_multipart()).reply
            assert reply is not None and reply.msg_id == MSG_ID
            parts.append(reply)
        return parts
    finally:
        pull.close()
        ctx.term()


def test_return_value_after_the_end_is_not_sent(driver: Driver) -> None:
    parts = answer(driver, "ends_then_returns", Service())
    assert [p.response for p in parts] == [[]]
    assert [p.seq for p in parts] == [0]


def test_generator_stops_at_the_end_of_the_stream(driver: Driver) -> None:
    service = Service()
    parts = answer(driver, "streams_past_the_end", service)
    assert [(p.response, p.more) for p in parts] == [([1], True), ([], False)]
    assert [p.seq for p in parts] == [0, 1]
    assert service.after_end == [True]  # ran to its next yield, then closed
