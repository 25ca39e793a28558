"""Many threads making the first calls of a fresh process at once: the
rpc state, the settings, the driver, the reply listener and the local-call
pools are made once, and no call is lost (20 fresh processes a case)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from nova_rpc_zmq.testing import LocalHost
from tests.support import scaled

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PROCESSES = 20
AT_ONCE = 4


@pytest.fixture(scope="module")
def host():
    h = LocalHost(host="localhost")
    try:
        h.start_receiver()
        h.start_service("threads", eventlet=False)
        h.start_service("green", eventlet=True)
        yield h
    finally:
        h.stop()


def run_fresh(h: LocalHost, mode: str, api: str, n: int, *extra: str) -> dict:
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "first_use_client.py"), mode, api,
         h.conf_path, str(n), *extra],
        capture_output=True, text=True, timeout=scaled(120), cwd=ROOT, env=h._env())
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        return {"ok": 0, "wrong": 0, "errors": ["exit %s: %s" % (out.returncode,
                                                                out.stderr[-1500:])]}
    return json.loads(lines[-1])


@pytest.mark.parametrize("mode,n", [("threads", 32), ("eventlet", 64)])
@pytest.mark.parametrize("api", ["rpc", "impl"])
@pytest.mark.parametrize("extra", [(), ("connections",)], ids=["calls", "with_connections"])
def test_first_calls_of_fresh_processes_lose_nothing(host, mode, n, api, extra):
    with ThreadPoolExecutor(AT_ONCE) as pool:
        runs = list(pool.map(lambda _: run_fresh(host, mode, api, n, *extra),
                             range(PROCESSES)))
    errors = [e for r in runs for e in r["errors"]]
    assert errors == [], "%d errors, first: %s" % (len(errors), errors[:3])
    assert sum(r["ok"] for r in runs) == PROCESSES * n
    assert sum(r["wrong"] for r in runs) == 0
