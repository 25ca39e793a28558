"""Shutdown always ends: a service stopped (SIGTERM, rpc.cleanup()) while a
30 s method runs exits within a bound, in both concurrency modes; and an
orderly interpreter exit flushes queued casts without rpc.cleanup()."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from nova_rpc_zmq import rpc
from nova_rpc_zmq.testing import LocalHost
from tests.support import scaled, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def m(method, **args):
    return {"method": method, "args": args}


@pytest.fixture
def host():
    h = LocalHost(host="localhost")
    try:
        h.start_receiver()
        rpc.init(h.settings())
        yield h
    finally:
        rpc.cleanup()
        h.stop()


@pytest.mark.parametrize("green", [True, False], ids=["eventlet", "threads"])
def test_sigterm_with_a_30s_method_running_ends_soon(host, green):
    name = "stopme" + ("g" if green else "t")
    service = host.start_service(name, eventlet=green)
    topic = "demo_" + name
    rpc.cast({}, topic, m("slow", seconds=30))
    wait_for(lambda: rpc.call({}, topic, m("stats"), timeout=scaled(10))["slow_started"],
             timeout=10, what="the slow method to start")
    t0 = time.monotonic()
    code = service.stop(timeout=scaled(20))   # SIGKILL past 20 s
    elapsed = time.monotonic() - t0
    assert code == 0, "exit code %s after %.1fs:\n%s" % (code, elapsed,
                                                         service.output()[-2000:])
    assert elapsed < scaled(10), "took %.1fs to stop" % elapsed


@pytest.mark.parametrize("mode", ["eventlet", "threads"])
def test_cleanup_returns_with_a_call_of_its_own_in_flight(host, mode):
    """rpc.cleanup() in a client whose own consumer runs a 30 s method."""
    code = """
import sys, time, threading
if sys.argv[1] == "eventlet":
    import eventlet; eventlet.monkey_patch()
from nova_rpc_zmq import config, rpc
rpc.init(config.parse_args(["--config-file", sys.argv[2]]))
started = threading.Event()
class Slow:
    def dispatch(self, ctxt, version, method, namespace, **kw):
        started.set()
        time.sleep(30)
conn = rpc.create_connection()
conn.create_consumer("slowself", Slow())
conn.consume_in_thread()
rpc.cast({}, "slowself", {"method": "x", "args": {}})
assert started.wait(20)
t0 = time.monotonic()
rpc.cleanup()
print("cleanup %.2f" % (time.monotonic() - t0), flush=True)
"""
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code, mode, host.conf_path],
                         capture_output=True, text=True, timeout=scaled(60), cwd=ROOT,
                         env=host._env())
    elapsed = time.monotonic() - t0
    assert out.returncode == 0, out.stderr[-3000:]
    assert float(out.stdout.split()[-1]) < scaled(8), out.stdout
    assert elapsed < scaled(20), "the process took %.1fs to end" % elapsed


@pytest.mark.parametrize("mode", ["eventlet", "threads"])
def test_exit_without_cleanup_flushes_queued_casts(host, mode):
    service = host.start_service("flush" + mode[0], eventlet=False)
    topic = "demo_flush" + mode[0]
    before = rpc.call({}, topic, m("stats"))["record"]
    n = 20000
    code = """
import sys
if sys.argv[1] == "eventlet":
    import eventlet; eventlet.monkey_patch()
from nova_rpc_zmq import config, rpc
rpc.init(config.parse_args(["--config-file", sys.argv[2]]))
for i in range(int(sys.argv[4])):
    rpc.cast({}, sys.argv[3], {"method": "record", "args": {"value": "%d %s" % (i, "x" * 2000)}})
# no rpc.cleanup(): the interpreter's exit flushes
"""
    out = subprocess.run([sys.executable, "-c", code, mode, host.conf_path, topic, str(n)],
                         capture_output=True, text=True, timeout=scaled(60), cwd=ROOT,
                         env=host._env())
    assert out.returncode == 0, out.stderr[-3000:]
    wait_for(lambda: rpc.call({}, topic, m("stats"))["record"] - before >= n,
             timeout=60, what="every cast to arrive")
    assert rpc.call({}, topic, m("stats"))["record"] - before == n
    service.stop()
