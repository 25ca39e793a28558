"""Dynamic direct connections (``use_dynamic_connections = true``) through
oslo.messaging's public API: a connection per message (calls, casts,
directed, fanout, notifications, replies), nothing kept after a burst,
failover over at most ``zmq_failover_connections + 1`` workers, and a
server killed with SIGKILL while callers keep calling."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import oslo_messaging
import pytest
import zmq

from nova_rpc_zmq.oslo_driver.driver import ATTEMPT_WAIT, rpc_key
from nova_rpc_zmq.oslo_driver.dynamic import DynamicOutbound
from nova_rpc_zmq.testing import Proc, child_env, scaled, wait_for
from tests.oslo.conftest import recorded
from tests.oslo.test_notify import listening
from tests.oslo.test_rpc import client, serving

#: The deployment guide's example, as a service sets it.
DYNAMIC: dict[str, Any] = {"use_dynamic_connections": True,
                           "zmq_failover_connections": 2,
                           "zmq_linger": 60}
#: /proc/net/tcp's state of an established connection.
ESTABLISHED = "01"


def established_to(ports: set[int]) -> int:
    """Established TCP connections (IPv4 and IPv6) whose remote end is one
    of ``ports``: the connecting sides of connections to those servers."""
    count = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            remote, state = fields[2], fields[3]
            if state == ESTABLISHED and \
                    int(remote.rpartition(":")[2], 16) in ports:
                count += 1
    return count


def open_fds() -> int:
    """Descriptors this process holds now."""
    return len(os.listdir("/proc/self/fd"))


def outbound(transport: Any) -> DynamicOutbound:
    """The transport's outbound sockets (made by its first send)."""
    out = transport._driver._out()
    assert isinstance(out, DynamicOutbound)
    return out


def server_ports(transport: Any, topic: str) -> set[int]:
    """The ports of the servers registered for ``topic``."""
    driver = transport._driver
    members = driver.lookup.members(
        rpc_key(driver._default_exchange, topic), fresh=True)
    return {int(member.rpartition(":")[2]) for member in members}


@pytest.fixture(params=["zmq://", "redis"])
def url(request: Any) -> str:
    """zmq:// (this host's directory) or zmq+redis:// on a real Redis."""
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        return "zmq+redis://127.0.0.1:%d" % server.port
    return str(request.param)


def test_every_message_kind_goes_over_a_connection_of_its_own(
        url: str, transport_factory: Any) -> None:
    servers = transport_factory(url, **DYNAMIC)
    callers = transport_factory(url, **DYNAMIC)
    with serving(servers, "dyn", "a") as a, serving(servers, "dyn", "b") as b, \
            serving(servers, "dyn", "c") as c:
        rpc = client(callers, "dyn")
        assert sorted(rpc.call({}, "whoami") for _ in range(3)) == \
            ["a", "b", "c"]
        assert rpc.call({"user": "u"}, "context_value", key="user") == "u"
        with pytest.raises(ValueError, match="bad"):
            rpc.call({}, "boom", text="bad")
        for name in ("b", "c", "c"):
            assert client(callers, "dyn", server=name).call(
                {}, "whoami") == name
        for n in range(3):
            rpc.cast({}, "record", value=n)
        client(callers, "dyn", fanout=True).cast({}, "record", value="all")
        wait_for(lambda: sorted(a.casts + b.casts + c.casts, key=str) ==
                 [0, 1, 2, "all", "all", "all"], 10, what="casts and fanout")
        assert "all" in a.casts and "all" in b.casts and "all" in c.casts
        out = outbound(callers)
        # calls 3 + 1 + 1 + 3 directed, casts 3, fanout 3: one socket each
        assert out.sent == out.opened == 14
        # the servers' replies went over connections of their own too
        assert outbound(servers).sent == 8
        ports = server_ports(callers, "dyn")
        assert len(ports) == 3
        wait_for(lambda: established_to(ports) == 0, 10,
                 what="no connection kept to the servers")

    notifying = transport_factory(url, notification=True, **DYNAMIC)
    notifier = oslo_messaging.Notifier(notifying, publisher_id="dyn.host",
                                       driver="messagingv2", topics=["dyn"])
    with listening(notifying, "dyn") as collector:
        notifier.info({}, "thing.created", {"id": 1})
        notifier.error({}, "thing.failed", {"id": 2})
        wait_for(lambda: len(collector.got) == 2, 10, what="2 notifications")
    assert sorted(collector.got) == [("error", "thing.failed", {"id": 2}),
                                     ("info", "thing.created", {"id": 1})]


def test_no_socket_is_kept_after_a_burst(transport_factory: Any) -> None:
    servers = transport_factory("zmq://", **DYNAMIC)
    callers = transport_factory("zmq://", **DYNAMIC)
    with serving(servers, "burst", "a") as a, \
            serving(servers, "burst", "b") as b:
        rpc = client(callers, "burst")
        assert rpc.call({}, "echo", value=0) == 0  # reply socket made
        ports = server_ports(callers, "burst")
        wait_for(lambda: established_to(ports) == 0, 10, what="settled")
        before = open_fds()
        failures: list[BaseException] = []

        def burst(offset: int) -> None:
            try:
                for n in range(offset, offset + 50):
                    assert rpc.call({}, "echo", value=n) == n
                    rpc.cast({}, "record", value=n)
            except BaseException as exc:  # reported by the test below
                failures.append(exc)

        threads = [threading.Thread(target=burst, args=(1000 * i,))
                   for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(scaled(60))
        assert not failures
        assert not any(thread.is_alive() for thread in threads)
        wait_for(lambda: len(a.casts) + len(b.casts) == 200, 20,
                 what="200 casts")
        assert outbound(callers).opened >= 401
        # every connection goes within the linger (60 s): here at once
        wait_for(lambda: established_to(ports) == 0, 10,
                 what="the burst's connections closed")
        wait_for(lambda: open_fds() <= before, 10,
                 what="descriptors back to %d (now %d)" % (before,
                                                           open_fds()))


def _stop(procs: list[Any]) -> None:
    for proc in procs:
        os.kill(proc.pid, signal.SIGSTOP)


def _resume(procs: list[Any]) -> None:
    for proc in procs:
        if proc.popen.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)


def test_failover_to_the_next_workers_and_never_beyond(
        transport_factory: Any, server_factory: Any) -> None:
    workers = [server_factory("zmq://", "fo", name) for name in
               ("w1", "w2", "w3")]
    record_dir: Path = server_factory.record_dir
    try:
        # two of three workers stopped: failover 2 finds the third
        callers = transport_factory("zmq://", **DYNAMIC)
        rpc = client(callers, "fo")
        assert rpc.call({}, "whoami") in {"w1", "w2", "w3"}
        _stop(workers[:2])
        for n in range(6):
            rpc.cast({}, "record", value=n)
        wait_for(lambda: len(recorded(record_dir)) == 6, 20,
                 what="6 casts on w3")
        _resume(workers[:2])
        # all three stopped: failover 1 offers a message to two of them,
        # then (retry 0) gives up; failover 0 to one
        for failover in (1, 0):
            narrow = transport_factory("zmq://", use_dynamic_connections=True,
                                       zmq_failover_connections=failover,
                                       zmq_linger=60)
            out = outbound(narrow)
            _stop(workers)
            try:
                with pytest.raises(oslo_messaging.MessageDeliveryFailure):
                    oslo_messaging.get_rpc_client(
                        narrow, oslo_messaging.Target(topic="fo"),
                        retry=0).cast({}, "record", value="never")
            finally:
                _resume(workers)
            assert (out.opened, out.refused, out.sent) == \
                (failover + 1, failover + 1, 0)
        for name in ("w1", "w2", "w3"):
            assert client(callers, "fo", server=name).call(
                {}, "whoami") == name
        # nothing was handed over twice, and nothing refused came late
        assert recorded(record_dir) == ["w3"] * 6
    finally:
        _resume(workers)


def test_a_server_killed_mid_traffic_costs_no_wrong_answer_nor_sockets(
        transport_factory: Any, server_factory: Any,
        redis_server: Any) -> None:
    # Redis keeps k1's registration after its death (zmq:// would see
    # that its process is gone)
    url = "zmq+redis://127.0.0.1:%d" % redis_server.port
    workers = [server_factory(url, "kill", name) for name in ("k1", "k2")]
    callers = transport_factory(url, **DYNAMIC)
    rpc = client(callers, "kill", timeout=5)
    ports = server_ports(callers, "kill")
    assert sorted(rpc.call({}, "whoami") for _ in range(2)) == ["k1", "k2"]
    wait_for(lambda: established_to(ports) == 0, 10, what="settled")
    before = open_fds()
    answers: list[tuple[int, Any, float]] = []
    lost: list[BaseException] = []
    stop = threading.Event()

    def calling() -> None:
        n = 0
        while not stop.is_set() and n < 400:
            n += 1
            started = time.monotonic()
            try:
                answers.append((n, rpc.call({}, "echo", value=n),
                                time.monotonic() - started))
            except oslo_messaging.MessagingTimeout as exc:
                lost.append(exc)

    threads = [threading.Thread(target=calling) for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(answers) >= 20, 20, what="20 answers")
    workers[0].popen.send_signal(signal.SIGKILL)
    workers[0].popen.wait(scaled(10))
    killed_at = len(answers)
    wait_for(lambda: len(answers) >= killed_at + 40, 60,
             what="40 answers after the kill")
    stop.set()
    for thread in threads:
        thread.join(scaled(30))
    assert not any(thread.is_alive() for thread in threads)
    # nothing that returned is wrong; at most the calls k1 held are lost
    assert all(value == n for n, value, _ in answers)
    assert len(lost) <= 2
    assert outbound(callers).refused >= 1  # k1 was tried after its death
    # the dead server, still registered, costs one attempt wait per call
    # at most (then it is tried last)
    assert max(took for _, _, took in answers[killed_at:]) < \
        ATTEMPT_WAIT + scaled(1.5)
    assert len(server_ports(callers, "kill")) == 2  # k1 still registered
    wait_for(lambda: established_to(ports) == 0, 10,
             what="no connection kept")
    # k1's reply connection to us is gone too: fewer descriptors, not more
    wait_for(lambda: open_fds() <= before, 10,
             what="descriptors back to %d (now %d)" % (before, open_fds()))


@pytest.mark.parametrize("green", [False, True], ids=["native", "eventlet"])
def test_green_and_native_threads_behave_alike(green: bool,
                                               tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "tests.oslo.om_dynamic", "zmq://"]
    proc = Proc("om_dynamic", argv + (["--eventlet"] if green else []),
                str(tmp_path / "om_dynamic.log"), env=child_env())
    try:
        proc.wait_for_line("RESULT", scaled(90))
        line = [text for text in proc.output().splitlines()
                if text.startswith("RESULT ")][-1]
    finally:
        proc.stop()
    result = json.loads(line.split(" ", 1)[1])
    assert result["handler"] == ("eventlet" if green else "threading")
    assert result["wrong"] == []
    assert result["directed"] == "g2"
    casts = result["casts"]
    assert sorted(casts["g1"] + casts["g2"], key=str) == \
        list(range(10)) + ["all", "all"]
    assert "all" in casts["g1"] and "all" in casts["g2"]
    # 100 calls, 10 casts, 1 directed call, 2 fanout messages
    assert result["opened"] == 113
    assert result["established"] == 0


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_curve_on_dynamic_connections(tmp_path: Path, server_factory: Any,
                                      transport_factory: Any) -> None:
    from nova_rpc_zmq.oslo_driver.curve import HostRefused
    from nova_rpc_zmq.security import generate, write_keypair
    from tests.oslo.test_curve import Site
    site = Site(tmp_path / "curve")
    server_factory("zmq://", "curved", "s1", *site.server_args())
    transport = transport_factory("zmq://", **DYNAMIC,
                                  **site.client_options())
    rpc = client(transport, "curved")
    assert rpc.call({}, "echo", value="sealed") == "sealed"
    assert outbound(transport).opened == 1
    # a key the server does not list: refused, never delivered
    stranger = str(tmp_path / "stranger.key")
    write_keypair(stranger, generate(), host=site.client_options()["host"])
    refused = transport_factory("zmq://", **DYNAMIC, **site.client_options(
        key_file=stranger))
    started = time.monotonic()
    with pytest.raises(HostRefused, match="no matching key"):
        client(refused, "curved").cast({}, "record", value="refused")
    assert time.monotonic() - started < scaled(5)
    assert os.listdir(server_factory.record_dir) == []
