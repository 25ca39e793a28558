"""``probe_mechanism`` against real ZeroMQ sockets and things that are not."""

from __future__ import annotations

import socket
import time

import pytest
import zmq

from nova_rpc_zmq import concurrency
from nova_rpc_zmq.security.greeting import probe_mechanism


_KEPT: list = []  # sockets bound by a test, closed with its context


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    _KEPT.clear()
    context.destroy(linger=0)


def bound(ctx, kind=zmq.ROUTER, curve=False, endpoint="tcp://127.0.0.1"):
    """The endpoint of a new bound socket, open until the test ends."""
    sock = ctx.socket(kind)
    _KEPT.append(sock)
    sock.linger = 0
    if curve:
        public, secret = zmq.curve_keypair()
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = public, secret
    if endpoint.endswith("127.0.0.1"):
        return "tcp://127.0.0.1:%d" % sock.bind_to_random_port(endpoint)
    sock.bind(endpoint)
    return endpoint


@pytest.mark.parametrize("kind", [zmq.ROUTER, zmq.PULL, zmq.PUB])
def test_plaintext_socket_greets_with_null(ctx, kind):
    assert probe_mechanism(bound(ctx, kind)) == "NULL"


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_curve_server_greets_with_curve(ctx):
    assert probe_mechanism(bound(ctx, zmq.PULL, curve=True)) == "CURVE"


def test_ipc_and_ipv6_endpoints(ctx, tmp_path):
    assert probe_mechanism(bound(ctx, endpoint="ipc://%s" % (
        tmp_path / "rx.sock"))) == "NULL"
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    sock.ipv6 = True
    try:
        port = sock.bind_to_random_port("tcp://[::1]")
    except zmq.ZMQError:
        pytest.skip("no IPv6 loopback here")
    assert probe_mechanism("tcp://[::1]:%d" % port) == "NULL"


def test_the_probe_leaves_the_socket_serving(ctx):
    """The peer sees an aborted handshake, nothing more: it still works."""
    pull = ctx.socket(zmq.PULL)
    pull.linger = 0
    pull_endpoint = "tcp://127.0.0.1:%d" % pull.bind_to_random_port(
        "tcp://127.0.0.1")
    assert probe_mechanism(pull_endpoint) == "NULL"
    push = ctx.socket(zmq.PUSH)
    push.linger = 0
    push.connect(pull_endpoint)
    push.send(b"after the probe")
    assert pull.poll(5000)
    assert pull.recv() == b"after the probe"


def test_nothing_listening_is_none_at_once():
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()
    started = time.monotonic()
    assert probe_mechanism("tcp://127.0.0.1:%d" % port, timeout=5) is None
    assert time.monotonic() - started < 2


def test_silent_listener_times_out():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        started = time.monotonic()
        endpoint = "tcp://127.0.0.1:%d" % silent.getsockname()[1]
        assert probe_mechanism(endpoint, timeout=0.3) is None
        assert 0.25 < time.monotonic() - started < 3
    finally:
        silent.close()


def _serve_once(reply: bytes) -> tuple[socket.socket, str]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    handler = concurrency.get_handler("threading")

    def answer():
        conn, _ = server.accept()
        conn.sendall(reply)
        conn.close()
    handler.spawn(answer)
    return server, "tcp://127.0.0.1:%d" % server.getsockname()[1]


@pytest.mark.parametrize("reply", [
    pytest.param(b"HTTP/1.1 400 Bad Request\r\n\r\n" + b"x" * 64, id="http"),
    pytest.param(b"\xff" + b"\x00" * 7 + b"\x01\x7f\x02" + b"\x00" * 53,
                 id="zmtp2"),
    pytest.param(b"\xff" + b"\x00" * 7 + b"\x01\x7f\x03\x00NULL", id="short"),
    pytest.param(b"", id="hang-up"),
])
def test_not_a_zmtp3_greeting_is_none(reply):
    server, endpoint = _serve_once(reply)
    try:
        assert probe_mechanism(endpoint, timeout=2) is None
    finally:
        server.close()


def test_bad_endpoints_are_none():
    for endpoint in ("udp://127.0.0.1:1", "tcp://127.0.0.1", "tcp://:9",
                     "inproc://x", "tcp://127.0.0.1:port"):
        assert probe_mechanism(endpoint) is None, endpoint


def test_green_probe_lets_other_green_threads_run(ctx):
    """Against a silent listener the probe waits through handler.sleep, so
    a green thread beside it keeps running."""
    green = concurrency.get_handler("eventlet")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    ticks = []

    def ticker():
        for _ in range(50):
            ticks.append(1)
            green.sleep(0.01)
    try:
        thread = green.spawn(ticker)
        endpoint = "tcp://127.0.0.1:%d" % silent.getsockname()[1]
        assert probe_mechanism(endpoint, green.sleep, timeout=0.3) is None
        assert len(ticks) >= 5
        thread.wait()
    finally:
        silent.close()
