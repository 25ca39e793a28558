"""The unit tests' network guard (tests/fixtures/netguard.py): TCP/UDP and
ZeroMQ network transports are refused and recorded, local transports work,
and a use the test swallowed still fails it."""

from __future__ import annotations

import socket
import threading

import pytest
import zmq

from tests.fixtures import netguard

pytest_plugins = ["pytester"]


@pytest.fixture
def guard() -> netguard.NetworkGuard:
    return netguard.NetworkGuard()


@pytest.mark.parametrize("family, kind, call", [
    (socket.AF_INET, socket.SOCK_STREAM, lambda s: s.bind(("127.0.0.1", 0))),
    (socket.AF_INET, socket.SOCK_STREAM, lambda s: s.connect(("127.0.0.1", 9))),
    (socket.AF_INET, socket.SOCK_STREAM, lambda s: s.connect_ex(("127.0.0.1", 9))),
    (socket.AF_INET, socket.SOCK_DGRAM, lambda s: s.sendto(b"x", ("127.0.0.1", 9))),
    (socket.AF_INET6, socket.SOCK_STREAM, lambda s: s.bind(("::1", 0))),
])
def test_tcp_and_udp_are_refused_and_recorded(guard, family, kind, call) -> None:
    with socket.socket(family, kind) as sock, guard.active():
        with pytest.raises(netguard.NetworkUsedInUnitTest, match="must not use the network"):
            call(sock)
    assert len(guard.uses) == 1 and family.name in guard.uses[0]


def test_unix_sockets_work(guard) -> None:
    with guard.active():
        a, b = socket.socketpair()
        with a, b:
            a.sendall(b"ping")
            assert b.recv(4) == b"ping"
    assert guard.uses == []


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:*", b"tcp://127.0.0.1:*",
                                      "udp://127.0.0.1:5555", "ws://127.0.0.1:5555"])
def test_zmq_network_transports_are_refused(guard, endpoint) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    try:
        with guard.active():
            with pytest.raises(netguard.NetworkUsedInUnitTest):
                sock.bind(endpoint)
            with pytest.raises(netguard.NetworkUsedInUnitTest):
                sock.connect(endpoint)
    finally:
        sock.close(0)
        ctx.term()
    assert len(guard.uses) == 2


def test_zmq_inproc_and_ipc_work(guard, tmp_path) -> None:
    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    try:
        with guard.active():
            pull.bind("inproc://guarded")
            push.connect("inproc://guarded")
            push.send(b"one")
            assert pull.recv() == b"one"
            pull.bind("ipc://%s/guarded" % tmp_path)
    finally:
        pull.close(0)
        push.close(0)
        ctx.term()
    assert guard.uses == []


def test_a_thread_is_caught_and_the_classes_are_restored(guard) -> None:
    before = {name: socket.socket.__dict__.get(name) for name in ("bind", "connect")}
    zmq_bind = zmq.Socket.__dict__["bind"]
    errors: list[BaseException] = []

    def use() -> None:
        with socket.socket() as s:
            try:
                s.connect(("127.0.0.1", 9))
            except BaseException as exc:  # noqa: BLE001 - kept for the assert
                errors.append(exc)
    with guard.active():
        t = threading.Thread(target=use)
        t.start()
        t.join(10)
    assert isinstance(errors[0], netguard.NetworkUsedInUnitTest)
    assert len(guard.uses) == 1
    assert {name: socket.socket.__dict__.get(name) for name in ("bind", "connect")} == before
    assert zmq.Socket.__dict__["bind"] is zmq_bind


_SWALLOWS = """
import socket
import pytest

pytestmark = pytest.mark.unit

def test_swallows():
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 0))
        except Exception:
            pass

def test_quiet():
    pass
"""

# Whether the guard is on, without touching the network (this test runs
# guarded itself): socket.socket.bind is patched only while a guard runs.
_PROBE = """
import socket
import pytest

pytestmark = pytest.mark.unit
BIND = socket.socket.__dict__.get("bind")

def test_bind_is_as_at_import():
    assert socket.socket.__dict__.get("bind") is BIND
"""


def _run_inner_suite(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    """``source`` as a suite of unit tests under the suite's own conftest
    hooks, in this process."""
    pytester.makeini("[pytest]\nmarkers =\n    unit: a unit test\n")
    pytester.makeconftest("from tests.conftest import (  # noqa: F401\n"
                          "    _unit_network_guard, pytest_runtest_makereport)\n")
    pytester.makepyfile(test_inner=source)
    # without hypothesis' plugin: pytester drops the modules a run imports,
    # and the plugin imports hypothesis anew (seconds) at every session end
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:hypothesispytest")


@pytest.mark.parametrize("setting", [None, "", "1"])
def test_a_swallowed_use_fails_the_unit_test(pytester: pytest.Pytester,
                                             monkeypatch: pytest.MonkeyPatch,
                                             setting: str | None) -> None:
    """On by default: a use the test caught fails it at tear-down; a test
    that uses nothing passes."""
    if setting is None:
        monkeypatch.delenv(netguard.ENV, raising=False)
    else:
        monkeypatch.setenv(netguard.ENV, setting)
    result = _run_inner_suite(pytester, _SWALLOWS)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*unit test used the network 1 time(s)*127.0.0.1*"])


@pytest.mark.parametrize("setting, guarded", [(None, True), ("0", False), ("off", False),
                                              (" False ", False)])
def test_nova_rpc_zmq_unit_network_guard_0_turns_it_off(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
        setting: str | None, guarded: bool) -> None:
    if setting is None:
        monkeypatch.delenv(netguard.ENV, raising=False)
    else:
        monkeypatch.setenv(netguard.ENV, setting)
    result = _run_inner_suite(pytester, _PROBE)
    if guarded:
        result.assert_outcomes(failed=1)
    else:
        result.assert_outcomes(passed=1)
