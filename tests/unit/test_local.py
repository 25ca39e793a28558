"""impl_zmq.local on real ZeroMQ sockets: services bind their local
sockets, callers find them, fall back when they cannot send, and share no
lock between native threads."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from typing import Any, Iterator

import pytest
import zmq

from nova_rpc_zmq import frames as frames_io
from nova_rpc_zmq.concurrency import get_handler
from nova_rpc_zmq.impl_zmq import local
from nova_rpc_zmq.metrics import Counters
from tests.support import wait_for


@pytest.fixture
def ipc_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="nrzu-")
    yield path


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    c = zmq.Context()
    yield c
    c.term()


@pytest.fixture
def caller(ipc_dir: str, ctx: zmq.Context,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[local.LocalCalls]:
    monkeypatch.setattr(local, "RESCAN", 0.0)  # look at every send
    calls = local.LocalCalls(get_handler("threading"), ctx, ipc_dir,
                             Counters("driver"))
    yield calls
    calls.close()


def service(ctx: zmq.Context, ipc_dir: str, topic: str = "t.h",
            token: str = "a" * 16) -> tuple[Any, list[str]]:
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    return sock, local.bind_local(sock, ipc_dir, [topic], token)


def send_until_taken(calls: local.LocalCalls, frames: list,
                     topic: str = "t.h") -> None:
    """The first sends fall back while the connection is made."""
    wait_for(lambda: calls.send(topic, frames), 5, interval=0.005,
             what="the local service to take a message")


def test_bind_makes_one_file_per_topic(ctx, ipc_dir):
    sock = ctx.socket(zmq.PULL)
    paths = local.bind_local(sock, ipc_dir, ["t.h", "t"], "b" * 16)
    try:
        assert paths == [os.path.join(ipc_dir, "zmq_local.t.h", "b" * 16),
                         os.path.join(ipc_dir, "zmq_local.t", "b" * 16)]
        assert all(os.path.exists(p) for p in paths)
    finally:
        sock.close(0)
        local.unbind_local(paths)
    assert not any(os.path.exists(p) for p in paths)


def test_a_path_too_long_for_ipc_is_skipped(ctx):
    deep = tempfile.mkdtemp(prefix="nrzu-" + "x" * 60)
    sock = ctx.socket(zmq.PULL)
    try:
        assert local.bind_local(sock, deep, ["topic.host", "t"], "c" * 16) \
            == [os.path.join(deep, "zmq_local.t", "c" * 16)]
    finally:
        sock.close(0)


def test_files_left_by_dead_services_are_removed_live_ones_kept(ctx, ipc_dir):
    alive, alive_paths = service(ctx, ipc_dir, token="e" * 16)
    dead = os.path.join(local.local_dir(ipc_dir, "t.h"), "d" * 16)
    gone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    gone.bind(dead)  # bound, never listening, closed: what a kill leaves
    gone.close()
    try:
        assert os.path.exists(dead)
        newer, paths = service(ctx, ipc_dir, token="f" * 16)
        newer.close(0)
        local.unbind_local(paths)
        assert not os.path.exists(dead)
        assert os.listdir(local.local_dir(ipc_dir, "t.h")) == ["e" * 16]
    finally:
        alive.close(0)


def test_no_local_service_means_the_receivers_path(caller):
    assert caller.send("nobody.h", [b"x"]) is False
    assert caller.counters.get("local.calls") == 0


def test_a_call_reaches_the_local_service_whole(caller, ctx, ipc_dir):
    sock, paths = service(ctx, ipc_dir)
    try:
        frames = [b"stream.0123456789abcdef", b"t.h", b'{"x": 1}']
        send_until_taken(caller, frames)
        assert frames_io.recv(sock) == frames
        assert caller.counters.get("local.calls") == 1
    finally:
        sock.close(0)
        local.unbind_local(paths)


def test_a_service_that_left_is_not_sent_to(caller, ctx, ipc_dir):
    sock, paths = service(ctx, ipc_dir)
    send_until_taken(caller, [b"first"])
    assert frames_io.recv(sock) == [b"first"]
    sock.close(0)
    local.unbind_local(paths)
    # the file is gone and the connection with it: nothing is queued for a
    # service that will never read it
    wait_for(lambda: not caller.send("t.h", [b"lost?"]), 5, interval=0.01,
             what="sends to fall back")
    assert caller.send("t.h", [b"lost?"]) is False


def test_a_full_service_queue_falls_back(caller, ctx, ipc_dir,
                                         monkeypatch):
    monkeypatch.setattr(local, "HWM", 5)
    sock, paths = service(ctx, ipc_dir)
    sock.setsockopt(zmq.RCVHWM, 5)
    try:
        send_until_taken(caller, [b"0"])
        taken = [b"0"] + [b"%d" % i for i in range(1, 200)
                          if caller.send("t.h", [b"%d" % i])]
        assert 1 < len(taken) < 200
        assert caller.counters.get("local.unready") >= 200 - len(taken)
        got = [frames_io.recv(sock)[0] for _ in taken]
        assert got == taken  # nothing taken is lost, and one path: in order
    finally:
        sock.close(0)
        local.unbind_local(paths)


def test_native_threads_send_at_once_without_mixing(caller, ctx, ipc_dir):
    sock, paths = service(ctx, ipc_dir)
    sent: list[list[bytes]] = []
    lock = threading.Lock()
    try:
        send_until_taken(caller, [b"warm", b"up"])
        assert frames_io.recv(sock) == [b"warm", b"up"]

        def run(n: int) -> None:
            for i in range(200):
                frames = [b"%d" % n, b"%d" % i, b"x" * (n * 100)]
                if caller.send("t.h", frames):
                    with lock:
                        sent.append(frames)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        got = [frames_io.recv(sock) for _ in range(len(sent))]
        assert sorted(got) == sorted(sent)  # whole messages, none torn
        assert len(sent) > 800
        route = caller._routes["t.h"]
        assert 1 <= route.made <= local.MAX_SOCKETS
    finally:
        sock.close(0)
        local.unbind_local(paths)


def test_topics_past_the_bound_close_their_sockets(caller, ctx, ipc_dir,
                                                   monkeypatch):
    monkeypatch.setattr(local, "MAX_TOPICS", 2)
    socks = []
    try:
        for n in range(3):
            sock, _ = service(ctx, ipc_dir, topic="t%d.h" % n)
            socks.append(sock)
            send_until_taken(caller, [b"m"], topic="t%d.h" % n)
        assert list(caller._routes) == ["t1.h", "t2.h"]
        # the first topic comes back as a new route and works again
        send_until_taken(caller, [b"again"], topic="t0.h")
        assert frames_io.recv(socks[0]) == [b"m"]
        assert frames_io.recv(socks[0]) == [b"again"]
    finally:
        for sock in socks:
            sock.close(0)


def test_after_close_nothing_is_sent(caller, ctx, ipc_dir):
    sock, paths = service(ctx, ipc_dir)
    try:
        send_until_taken(caller, [b"m"])
        caller.close()
        assert caller.send("t.h", [b"late"]) is False
        assert caller.send("other.h", [b"late"]) is False
        sock.setsockopt(zmq.RCVTIMEO, 200)
        assert frames_io.recv(sock) == [b"m"]
        with pytest.raises(zmq.Again):
            frames_io.recv(sock)
    finally:
        sock.close(0)
        local.unbind_local(paths)
    time.sleep(0)  # nothing left running


def test_closing_while_threads_send_leaves_no_socket_open(ipc_dir, monkeypatch):
    """A socket taken by a sender while the pool closes is closed too:
    one left open would keep the context's term() waiting for ever."""
    monkeypatch.setattr(local, "RESCAN", 0.0)
    ctx = zmq.Context()
    calls = local.LocalCalls(get_handler("threading"), ctx, ipc_dir,
                             Counters("driver"))
    sock, paths = service(ctx, ipc_dir)
    stop = threading.Event()

    def run() -> None:
        deadline = time.monotonic() + 10
        while not stop.is_set() and time.monotonic() < deadline:
            calls.send("t.h", [b"m"])

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    wait_for(lambda: calls.counters.get("local.calls") > 100, 5,
             what="sends under way")
    calls.close()
    stop.set()
    for t in threads:
        t.join(10)
    sock.close(0)
    local.unbind_local(paths)
    ended = threading.Event()
    term = threading.Thread(target=lambda: (ctx.term(), ended.set()),
                            daemon=True)
    term.start()
    assert ended.wait(10), "a local socket was left open"


def test_a_service_started_before_the_receiver_makes_the_dir_0750(ctx, ipc_dir):
    missing = os.path.join(ipc_dir, "later")
    sock = ctx.socket(zmq.PULL)
    old = os.umask(0o022)
    try:
        paths = local.bind_local(sock, missing, ["t.h"], "g" * 16)
    finally:
        os.umask(old)
        sock.close(0)
    assert os.stat(missing).st_mode & 0o777 == 0o750
    assert paths == [os.path.join(missing, "zmq_local.t.h", "g" * 16)]
