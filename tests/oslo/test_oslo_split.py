"""``python -m benchmarks.oslo_split`` runs: a real oslo.messaging server
and client over ``zmq://127.0.0.1``, every call split into its segments
by the stamps of both processes, and the 16-caller run per executor size.

Not a speed test (no speed is asserted): it keeps the tool from rotting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nova_rpc_zmq.testing import scaled

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_oslo_split_joins_every_call_and_accounts_for_its_time(
        tmp_path: Path) -> None:
    out = tmp_path / "split.json"
    env = dict(os.environ)
    env.pop("NOVA_RPC_ZMQ_OSLO_REGISTRY_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.oslo_split", "--calls", "300",
         "--pools", "2", "--window", "0.5", "--json", str(out)],
        cwd=str(ROOT), env=env, capture_output=True, text=True,
        timeout=scaled(240))
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["calls"] == 300
    # the client's and the server's stamps met for (nearly) every call
    assert figures["joined"] >= 290, figures
    segments = figures["segments_p50_us"]
    assert set(segments) == {
        "client oslo.messaging", "client encode+send", "to the server",
        "server decode", "server oslo.messaging", "server reply",
        "to the caller", "client decode+return"}
    assert all(value is not None and value > 0 for value in segments.values()), \
        segments
    # medians do not add up exactly, but the parts are of the whole
    total = sum(segments.values())
    assert 0.5 * figures["call_p50_us"] < total < 1.5 * figures["call_p50_us"], \
        figures
    assert figures["raw_rt_p50_us"] > 0 and figures["raw_16_per_s"] > 0
    [pool] = figures["pools"]
    assert pool["executor_thread_pool_size"] == 2
    assert pool["calls_per_s"] > 0 and pool["cpu_server_us"] > 0
    assert "one call at a time" in proc.stdout
    assert "executor_thread_pool_size   2" in proc.stdout
