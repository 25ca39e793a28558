"""The legacy RPC API over real processes: a receiver, services (green and
threaded), and clients in this process and in fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from nova_rpc_zmq import rpc
from nova_rpc_zmq.errors import RemoteError, Timeout
from nova_rpc_zmq.testing import LocalHost, child_env
from tests.support import scaled, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))


def m(method: str, **args):
    return {"method": method, "args": args}


@pytest.fixture(scope="module")
def host():
    h = LocalHost(host="localhost")
    try:
        h.start_receiver()
        h.start_service("green", eventlet=True)
        h.start_service("threads", eventlet=False)
        rpc.init(h.settings())
        yield h
    finally:
        rpc.cleanup()
        h.stop()


def stats(name: str) -> dict:
    return rpc.call({}, "demo_" + name, m("stats"), timeout=scaled(10))


@pytest.mark.parametrize("name", ["green", "threads"])
def test_call_returns_the_value(host, name):
    value = {"list": [1, 2.5, "x"], "nested": {"a": None}}
    assert rpc.call({"user_id": "u"}, "demo_" + name, m("echo", value=value)) == value
    assert rpc.call({}, "demo_" + name, m("whoami"))["name"] == name


def test_bare_topic_round_robins_over_workers(host):
    names = {rpc.call({}, "demo", m("whoami"))["name"] for _ in range(20)}
    assert names == {"green", "threads"}


def test_directed_topic_reaches_bare_consumers(host):
    # a consumer of "demo_green" also receives "demo_green.<rpc_zmq_host>"
    assert rpc.call({}, rpc.queue_get_for({}, "demo_green", "localhost"),
                    m("whoami"))["name"] == "green"


@pytest.mark.parametrize("name", ["green", "threads"])
def test_multicall_streams_generator_values(host, name):
    t0 = time.monotonic()
    arrivals = []
    values = []
    for value in rpc.multicall({}, "demo_" + name, m("count", n=3, delay=0.4)):
        arrivals.append(time.monotonic() - t0)
        values.append(value)
    assert values == [0, 1, 2]
    # the first value came while the server was still producing the others
    assert arrivals[0] < arrivals[-1] - 0.5


@pytest.mark.parametrize("name", ["green", "threads"])
def test_context_reply_streams_and_call_gets_last(host, name):
    assert list(rpc.multicall({}, "demo_" + name, m("stream", n=3))) == [
        "part-0", "part-1", "part-2"]
    assert rpc.call({}, "demo_" + name, m("count", n=4)) == 3


@pytest.mark.parametrize("name", ["green", "threads"])
def test_remote_exception_rebuilt_when_module_allowed(host, name):
    with pytest.raises(ValueError) as info:
        rpc.call({}, "demo_" + name, m("fail", message="no such flavor"))
    assert "no such flavor" in str(info.value)
    assert "Traceback" in str(info.value)  # the remote traceback travels along


def test_remote_exception_not_allowed_is_remote_error(host):
    settings = rpc.get_settings()
    try:
        rpc.init(host.settings(allowed_rpc_exception_modules=["nova.exception"]))
        with pytest.raises(RemoteError) as info:
            rpc.call({}, "demo_threads", m("fail", message="secret"))
        assert info.value.exc_type == "ValueError"
        assert info.value.value == "secret"
        assert "Traceback" in info.value.traceback
    finally:
        rpc.init(settings)


def test_timeout_and_late_reply_never_reaches_another_caller(host):
    from nova_rpc_zmq.impl_zmq import get_driver
    with pytest.raises(Timeout):
        rpc.call({}, "demo_green", m("slow", seconds=scaled(1.0)),
                 timeout=scaled(0.3))
    late_before = get_driver(rpc.get_settings()).counters.get("replies.late")
    # calls made while the late reply is on its way get their own answers
    for i in range(20):
        assert rpc.call({}, "demo_green", m("echo", value=i)) == i
        # the point: spread the calls over the time the late reply arrives
        # in (20 x 0.05 s = the slow call's 1 s, both scaled)
        time.sleep(scaled(0.05))
    wait_for(lambda: get_driver(rpc.get_settings()).counters.get("replies.late")
             > late_before, timeout=5, what="the late reply to be counted")


@pytest.mark.parametrize("name", ["green", "threads"])
def test_casts_are_delivered(host, name):
    before = stats(name)["record"]
    for i in range(300):
        rpc.cast({}, "demo_" + name, m("record", value=i))
    wait_for(lambda: stats(name)["record"] == before + 300, timeout=10,
             what="300 casts")
    assert stats(name)["values"][-300:] == list(range(300))


def test_fanout_reaches_every_consumer(host):
    before = {n: stats(n)["fanout"] for n in ("green", "threads")}
    for i in range(50):
        rpc.fanout_cast({}, "demo", m("announce", value="f%d" % i))
    wait_for(lambda: all(stats(n)["fanout"] == before[n] + 50
                         for n in ("green", "threads")),
             timeout=10, what="50 fanouts at both services")


def test_worker_processes_share_a_topic(host):
    a = host.start_service("wa", topic="work")
    b = host.start_service("wb", topic="work", eventlet=True)
    try:
        for i in range(200):
            rpc.cast({}, "work", m("record", value=i))

        def counts():
            return [rpc.call({}, "work_" + n, m("stats"))["record"] for n in ("wa", "wb")]
        wait_for(lambda: sum(counts()) == 200, timeout=10, what="200 casts")
        got = counts()
        assert all(c > 0 for c in got), got  # both workers took a share
        values = sorted(rpc.call({}, "work_wa", m("stats"))["values"]
                        + rpc.call({}, "work_wb", m("stats"))["values"])
        assert values == list(range(200))  # each message to exactly one worker
    finally:
        a.stop()
        b.stop()


def test_a_fresh_consumer_gets_the_first_fanout(host):
    proc = host.start_service("fresh", topic="late")
    try:
        rpc.fanout_cast({}, "late", m("announce", value="first"))
        wait_for(lambda: rpc.call({}, "late_fresh", m("stats"))["fanout"] == 1,
                 timeout=5, what="the first fanout at a fresh consumer")
    finally:
        proc.stop()


@pytest.mark.parametrize("mode", ["eventlet", "threads"])
def test_fresh_client_process_first_call_and_concurrency(host, mode):
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "client_script.py"), host.conf_path,
         mode, "64"], capture_output=True, text=True, timeout=scaled(60), env=child_env())
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["first"] == -1
    assert result["results"] == list(range(64))
    assert result["eventlet"] == (mode == "eventlet")


def test_threaded_callers_in_this_process_get_their_own_answers(host):
    errors = []

    def caller(k):
        try:
            for i in range(30):
                value = "%d-%d" % (k, i)
                got = rpc.call({}, "demo", m("echo", value=value))
                if got != value:
                    errors.append((value, got))
        except Exception as exc:  # noqa: BLE001 - collected for the assert
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(scaled(60))
    assert errors == []


def test_notify_goes_to_topic_dash_priority(host):
    got = []
    conn = rpc.create_connection()
    try:
        conn.create_consumer("notifications-info", got.append)
        conn.consume_in_thread()
        rpc.notify({}, "notifications.info", {"event_type": "e1", "payload": {}},
                   envelope=True)
        wait_for(lambda: got, timeout=5, what="the notification")
        assert got == [{"event_type": "e1", "payload": {}}]
    finally:
        conn.close()


def test_a_service_without_notification_endpoint_is_refused_at_start(host):
    """An RpcDispatcher takes calls, not notifications: told at once."""
    with pytest.raises(RuntimeError, match="cannot take the notifications"):
        host.start_service("notif", topic="notifications-info")


@pytest.mark.parametrize("name", ["green", "threads"])
def test_slow_methods_do_not_hold_up_the_others(host, name):
    # a threaded service runs messages on the reading thread until one runs
    # long: then another thread must take over the socket
    results: list = []
    # the slow calls outlast the bound on the quick ones at every scale, so
    # quick calls stuck behind a slow one cannot pass in time (wait_for
    # below scales its 1.5 s itself)
    slow_for, quick_bound = scaled(1.5), scaled(1.0)
    slow_before = stats(name)["slow_started"]
    slow = [threading.Thread(target=lambda: results.append(rpc.call(
        {}, "demo_" + name, m("slow", seconds=slow_for), timeout=scaled(10))))
        for _ in range(3)]
    for t in slow:
        t.start()
    # all three running at once: only possible when other threads took
    # over the socket (waiting for it rather than for a fixed time)
    wait_for(lambda: stats(name)["slow_started"] >= slow_before + 3,
             timeout=1.5, interval=0.05, what="3 slow calls running")
    started = time.monotonic()
    for i in range(20):
        assert rpc.call({}, "demo_" + name, m("echo", value=i),
                        timeout=scaled(10)) == i
    fast = time.monotonic() - started
    for t in slow:
        t.join(scaled(10))
    assert results == ["slept"] * 3
    assert fast < quick_bound, "20 quick calls took %.2fs behind 3 slow ones" % fast


@pytest.mark.parametrize("name", ["green", "threads"])
def test_waves_of_slow_calls_are_all_answered_whole(host, name):
    # hand-offs overlap: a thread that lost the socket must never read
    # from it again (two readers would tear messages apart)
    results: list = []
    lock = threading.Lock()

    def caller(i):
        got = rpc.call({}, "demo_" + name, m("slow", seconds=scaled(0.8)),
                       timeout=scaled(30))
        with lock:
            results.append(got)

    threads = []
    for wave in range(3):
        for i in range(120):
            t = threading.Thread(target=caller, args=(i,))
            t.start()
            threads.append(t)
        # the point: the next wave lands while this one's slow calls still
        # run (0.6 s of their 0.8 s), so hand-offs overlap; both scaled
        time.sleep(scaled(0.6))
    for t in threads:
        t.join(scaled(60))
    assert results == ["slept"] * 360
    service = [p for p in host.procs
               if p.name.startswith("service %s@" % name)]
    assert len(service) == 1 and service[0].popen.poll() is None
    assert "malformed" not in service[0].output()


def _wakeups(pid: int) -> int:
    """Voluntary context switches of every thread of ``pid`` so far."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                total += sum(int(line.split()[1]) for line in f
                             if line.startswith("voluntary_ctxt_switches"))
        except FileNotFoundError:
            pass  # a thread that ended meanwhile
    return total


@pytest.mark.parametrize("name", ["green", "threads"])
def test_an_idle_service_sleeps(host, name):
    """Once its calls are done, a service's watchdogs park and the workers
    started for slow calls end (FOLLOWER_IDLE): the process wakes a few
    dozen times a second (socket timeouts, heartbeats), not the hundreds
    that a 1 ms watchdog tick per consumer, or hundreds of idle workers
    polling the socket, would cost."""
    slow = [threading.Thread(target=rpc.call, args=(
        {}, "demo_" + name, m("slow", seconds=0.3)), kwargs={
            "timeout": scaled(10)}) for _ in range(20)]
    for t in slow:
        t.start()
    for t in slow:
        t.join(scaled(10))
    assert rpc.call({}, "demo_" + name, m("echo", value=1),
                    timeout=scaled(10)) == 1
    service = [p for p in host.procs
               if p.name.startswith("service %s@" % name)][0]
    rates = []
    deadline = time.monotonic() + scaled(20)  # FOLLOWER_IDLE is 5 s
    while time.monotonic() < deadline:
        before = _wakeups(service.popen.pid)
        time.sleep(1.0)  # the point: wake-ups per second, not scaled
        rates.append(_wakeups(service.popen.pid) - before)
        if rates[-1] < 100:
            break
    assert rates[-1] < 100, "an idle %s service still wakes %s times/s" % (
        name, rates)
