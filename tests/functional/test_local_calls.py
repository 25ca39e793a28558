"""Calls to services on the caller's own host skip the receiver
(``impl_zmq.local``); casts keep the receiver's path; a service that goes
away, cleanly or killed, leaves callers working."""

from __future__ import annotations

import os
import signal
import tempfile
import uuid
from typing import Any, Iterator

import pytest

from nova_rpc_zmq import impl_zmq, rpc
from nova_rpc_zmq.impl_zmq import local
from tests.functional.test_receiver import Served
from tests.support import scaled, wait_for

TOPIC = "demo"


def m(method: str, **args: Any) -> dict:
    return {"method": method, "args": args}


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    base = tempfile.mkdtemp(prefix="nrzl-")  # short: ipc paths are limited
    s = Served(base, rpc_zmq_local_calls=True).start()
    s.host.start_service("svc2", topic=TOPIC, eventlet=True,
                         timeout=scaled(30))
    rpc.init(s.settings)
    rpc.call({}, TOPIC, m("echo"), timeout=scaled(20))
    try:
        yield s
    finally:
        s.stop()


def received(served: Served) -> int:
    return served.counters()["nova_rpc_zmq_receiver_received_total"]


def folder(served: Served, name: str = TOPIC) -> str:
    return local.local_dir(served.host.ipc_dir, name + ".localhost")


def driver() -> Any:
    """This process's driver (made by the first call after rpc.init)."""
    drv = impl_zmq._driver
    assert drv is not None, "no call made yet"
    return drv


def local_calls() -> int:
    return driver().counters.get("local.calls")


def warm_up(served: Served, names: set[str]) -> None:
    """Call until every service in ``names`` has answered a local call."""
    seen: set[str] = set()

    def more() -> bool:
        before = local_calls()
        who = rpc.call({}, TOPIC, m("whoami"), timeout=scaled(10))["name"]
        if local_calls() > before:
            seen.add(who)
        return names <= seen

    wait_for(more, 20, interval=0.01, what="local calls to %s" % names)


def test_each_service_binds_a_local_socket(served: Served) -> None:
    files = os.listdir(folder(served))
    assert len(files) == 2, files
    bare = os.listdir(local.local_dir(served.host.ipc_dir, TOPIC))
    assert sorted(bare) == sorted(files)  # one socket, both topic names


def test_calls_skip_the_receiver(served: Served) -> None:
    warm_up(served, {"svc1", "svc2"})
    before, calls_before = received(served), local_calls()
    names = []
    for _ in range(40):
        names.append(rpc.call({}, TOPIC, m("whoami"))["name"])
    assert local_calls() - calls_before == 40
    assert received(served) == before
    # the services share the calls as the receiver's PUSH would
    assert names.count("svc1") >= 10 and names.count("svc2") >= 10, names


def test_streams_and_errors_come_back_the_same(served: Served) -> None:
    warm_up(served, {"svc1"})
    assert list(rpc.multicall({}, TOPIC, m("count", n=4))) == [0, 1, 2, 3]
    with pytest.raises(ValueError) as err:
        rpc.call({}, TOPIC, m("fail", message="boom"))
    assert "boom" in str(err.value)


def test_casts_keep_the_receivers_path(served: Served) -> None:
    before, calls_before = received(served), local_calls()
    token = uuid.uuid4().hex
    for i in range(20):
        rpc.cast({}, TOPIC, m("record", value="%s-%d" % (token, i)))

    def recorded() -> list:
        values: list = []
        for _ in range(8):  # both services, whichever answers
            values += rpc.call({}, TOPIC, m("stats"))["values"]
        return [v for v in set(values) if str(v).startswith(token)]

    wait_for(lambda: len(recorded()) == 20, 20, interval=0.1,
             what="20 casts at the services")
    assert received(served) - before >= 20
    assert local_calls() - calls_before >= 8  # only the stats calls


def test_switched_off_calls_go_through_the_receiver(served: Served) -> None:
    rpc.cleanup()
    rpc.init(served.host.settings(rpc_zmq_local_calls=False))
    try:
        before = received(served)
        for i in range(10):
            assert rpc.call({}, TOPIC, m("echo", value=i)) == i
        assert received(served) - before >= 10
        assert driver().local is None
    finally:
        rpc.cleanup()
        rpc.init(served.settings)
        rpc.call({}, TOPIC, m("echo"), timeout=scaled(20))


def test_a_killed_service_is_routed_around_and_its_file_removed(
        served: Served) -> None:
    proc = served.host.start_service("doomed", topic=TOPIC,
                                     timeout=scaled(30))
    wait_for(lambda: len(os.listdir(folder(served))) == 3, 10,
             what="the new service's socket")
    warm_up(served, {"doomed"})
    os.kill(proc.pid, signal.SIGKILL)
    proc.popen.wait(timeout=scaled(10))
    stale = set(os.listdir(folder(served)))
    assert len(stale) == 3  # a killed process cannot remove its file
    # ZeroMQ drops the dead connection at once: no call is lost to it
    for i in range(30):
        assert rpc.call({}, TOPIC, m("echo", value=i),
                        timeout=scaled(10)) == i
    served.host.start_service("svc3", topic=TOPIC, timeout=scaled(30))
    files = set(os.listdir(folder(served)))
    assert len(files) == 3 and len(files & stale) == 2
    warm_up(served, {"svc3"})


def test_a_stopped_service_removes_its_file(served: Served) -> None:
    proc = served.host.start_service("brief", topic=TOPIC,
                                     timeout=scaled(30))
    before = set(os.listdir(folder(served)))
    proc.stop(signal.SIGTERM)
    wait_for(lambda: len(set(os.listdir(folder(served)))) == len(before) - 1,
             10, what="the stopped service's socket file to go")
    for i in range(10):
        assert rpc.call({}, TOPIC, m("echo", value=i),
                        timeout=scaled(10)) == i
