"""README "Delivery promises", each under test with a real receiver and
services: casts flushed by ``rpc.cleanup()``, a bounded ``cleanup()`` with
the receiver down, calls at most once across a crash, ``NoHostsError``
logged and counted, CURVE refusals at once."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import zmq

from nova_rpc_zmq import rpc
from nova_rpc_zmq.errors import AuthenticationError, NoHostsError, Timeout
from nova_rpc_zmq.impl_zmq import get_driver
from nova_rpc_zmq.impl_zmq.driver import CLOSE_TIMEOUT
from nova_rpc_zmq.impl_zmq.sockets import LINGER_MS
from nova_rpc_zmq.security import generate, write_keypair, write_public
from nova_rpc_zmq.testing import LocalHost, child_env
from tests.support import scaled, wait_for

pytestmark = pytest.mark.timeout(120)

#: A client process: casts ``n`` records to ``topic``, then rpc.cleanup()
#: at once; prints how long cleanup() took.
CASTER = """
import json, sys, time
from nova_rpc_zmq import config, rpc
conf, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rpc.init(config.parse_args(["--config-file", conf]))
pad = "p" * 4000   # enough bytes that the last casts are still queued
for i in range(n):
    rpc.cast({}, topic, {"method": "record", "args": {"value": i, "pad": pad}})
t0 = time.monotonic()
rpc.cleanup()
print(json.dumps({"cleanup": time.monotonic() - t0}))
"""


def m(method: str, **args: Any) -> dict:
    return {"method": method, "args": args}


@pytest.fixture
def host(tmp_path: Path) -> Iterator[LocalHost]:
    ring = tmp_path / "ring.json"
    ring.write_text(json.dumps({"demo": ["localhost"],
                                "demo_svc": ["localhost"]}))
    h = LocalHost(host="localhost", matchmaker="ring", ringfile=str(ring))
    try:
        h.start_receiver(scaled(20))
        h.svc = h.start_service("svc", timeout=scaled(30))
        rpc.init(h.settings(rpc_response_timeout=scaled(8)))
        yield h
    finally:
        rpc.cleanup()
        h.stop()


def cast_then_cleanup(h: LocalHost, n: int) -> float:
    out = subprocess.run([sys.executable, "-c", CASTER, h.conf_path,
                          "demo_svc", str(n)], capture_output=True, text=True,
                         timeout=scaled(60), env=child_env())
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["cleanup"]


def stats(topic: str = "demo_svc") -> dict:
    return rpc.call({}, topic, m("stats"), timeout=scaled(8))


def test_casts_then_cleanup_are_all_delivered(host: LocalHost) -> None:
    n = 5000
    cast_then_cleanup(host, n)
    # the client process is gone: whatever arrives now was flushed by
    # cleanup(); the pipe is FIFO, so once the count stops short it is lost
    wait_for(lambda: stats()["record"] >= n, 30, interval=0.2,
             what="all %d casts at the service" % n)
    got = stats()
    assert got["record"] == n
    assert got["values"] == list(range(n - 1000, n))


def test_cleanup_with_the_receiver_down_returns_within_linger(
        host: LocalHost) -> None:
    receiver = host.procs[0]
    assert receiver.stop() == 0
    took = cast_then_cleanup(host, 100)
    # README: "within a few seconds": cleanup()'s own bound (one linger,
    # LINGER_MS, for the queued casts, plus the rest), measured
    assert LINGER_MS <= 2000 and CLOSE_TIMEOUT <= 5.0
    assert took < CLOSE_TIMEOUT + scaled(0.3), took


def test_call_is_at_most_once_across_a_crash(host: LocalHost) -> None:
    """A call in progress when its service and the receiver die: the
    caller gets Timeout within its timeout, the method ran once, and
    nothing runs it again after both restart."""
    timeout = scaled(4)
    outcome: dict[str, Any] = {}

    def call() -> None:
        t0 = time.monotonic()
        try:
            outcome["result"] = rpc.call({}, "demo_svc", m("slow", seconds=60),
                                         timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - the test asserts its type
            outcome["error"] = exc
        outcome["took"] = time.monotonic() - t0
    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    wait_for(lambda: stats()["slow_started"] >= 1, 10,
             what="the slow call to start")
    # a second run would have started with the first (it is one message)
    assert stats()["slow_started"] == 1
    host.svc.kill()
    host.procs[0].kill()
    caller.join(timeout + scaled(5))
    assert not caller.is_alive(), "the call hung"
    assert isinstance(outcome.get("error"), Timeout), outcome
    assert outcome["took"] < timeout + scaled(2), outcome
    # both back: nothing replays the call
    os.replace(os.path.join(host.dir, "receiver.log"),
               os.path.join(host.dir, "receiver.log.1"))
    host.start_receiver(scaled(20))
    os.replace(os.path.join(host.dir, "service-svc.log"),
               os.path.join(host.dir, "service-svc.log.1"))
    host.svc = host.start_service("svc", timeout=scaled(30))
    assert rpc.call({}, "demo_svc", m("echo", value=1), timeout=scaled(8)) == 1
    assert stats()["slow_started"] == 0


def test_cast_to_a_topic_without_host_raises_logs_and_counts(
        host: LocalHost, caplog: Any) -> None:
    caplog.set_level(logging.ERROR)
    driver = get_driver(host.settings(rpc_response_timeout=scaled(8)))
    before = driver.counters.get("no_host")
    t0 = time.monotonic()
    with pytest.raises(NoHostsError) as info:
        rpc.cast({}, "nowhere", m("record", value=1))
    assert time.monotonic() - t0 < scaled(1)   # at once, not a timeout
    assert "nowhere" in str(info.value)
    assert driver.counters.get("no_host") == before + 1
    assert any("no host for topic nowhere" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


# ------------------------------------------------------------------ CURVE --

@pytest.fixture
def curve_host() -> Iterator[LocalHost]:
    h = LocalHost(host="localhost")
    h.enable_curve()
    try:
        h.start_receiver(scaled(20))
        h.start_service("svc", timeout=scaled(30))
        yield h
    finally:
        rpc.cleanup()
        h.stop()


RESPONSE_TIMEOUT = 30.0


def _stranger(h: LocalHost) -> dict:
    path = os.path.join(h.dir, "stranger.key")
    write_keypair(path, generate(), force=True)
    return {"rpc_zmq_curve_key_file": path}


def _stale_server_key(h: LocalHost) -> dict:
    keys = os.path.join(h.dir, "stale-keys")
    write_public(os.path.join(keys, "localhost.key"), generate().public)
    return {"rpc_zmq_curve_keys_dir": keys}


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
@pytest.mark.parametrize("overrides, label", [
    pytest.param(_stranger, "no matching key", id="no-matching-key"),
    pytest.param(_stale_server_key, "wrong server key", id="wrong-server-key"),
    pytest.param(lambda h: {"rpc_zmq_curve": False}, "mechanism mismatch",
                 id="mechanism-mismatch")])
def test_curve_refusal_arrives_at_once(curve_host: LocalHost, overrides: Any,
                                       label: str) -> None:
    """README: refused senders get AuthenticationError "at once rather than
    after rpc_response_timeout" (here 30 s)."""
    rpc.init(curve_host.settings(rpc_response_timeout=RESPONSE_TIMEOUT,
                                 **overrides(curve_host)))
    t0 = time.monotonic()
    with pytest.raises(AuthenticationError) as info:
        rpc.call({}, "demo_svc", m("echo", value=1))
    took = time.monotonic() - t0
    assert label in str(info.value)
    # a handshake is milliseconds; a tenth of the timeout is "at once"
    assert took < min(scaled(3.0), RESPONSE_TIMEOUT / 10), took
