"""``nova-rpc-zmq bench --smoke --driver oslo``: the rows of our
oslo.messaging driver (system ``oslo-zmq``) are measured through
oslo.messaging's API, lose nothing, and are judged by their targets.

Here rather than beside the rest of the bench's smoke test
(tests/functional/test_bench_smoke.py) because it needs oslo.messaging,
which the floors run of tests/functional does not install. Not a speed
test: no figure's size is asserted.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import run_bench_smoke


LATENCY = ("p50", "p99", "rate")
#: the oslo-zmq figures every smoke run must hold, each above zero
OSLO_EXPECTED = {"call_latency": LATENCY, "call_throughput_1": LATENCY,
                 "call_throughput_16": LATENCY, "cast": ("rate",),
                 "fanout_3": ("rate",), "notify": ("rate",)}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: Any) -> tuple[int, dict, str]:
    """Run the smoke suite once with --driver oslo, threads only."""
    return run_bench_smoke(str(tmp_path_factory.mktemp("bench-oslo")),
                           "--driver", "oslo", "--modes", "threads",
                           "--no-png")


def _index(doc: dict) -> dict:
    return {(f["system"], f["mode"], f["workload"], f["metric"]): f
            for f in doc["medians"]}


@pytest.mark.timeout(300)
def test_every_oslo_workload_has_numbers(smoke: Any) -> None:
    code, doc, output = smoke
    index = _index(doc)
    missing = [(workload, metric)
               for workload, metrics in OSLO_EXPECTED.items()
               for metric in metrics
               if not index.get(("oslo-zmq", "threads", workload, metric),
                                {}).get("value")]
    assert not missing, "missing or zero: %s\n%s" % (missing, output[-3000:])
    assert doc["errors"] == [] and code == 0, output[-3000:]
    assert doc["peers"]["oslo-zmq"].startswith("used: zmq://127.0.0.1")


@pytest.mark.timeout(300)
def test_oslo_nothing_lost_and_no_copies(smoke: Any) -> None:
    _, doc, _ = smoke
    index = _index(doc)
    for workload in ("cast", "fanout_3", "notify"):
        lost = index[("oslo-zmq", "threads", workload, "lost")]
        assert lost["value"] == 0, lost
        sent = lost["extra"].get("expected", lost["extra"]["sent"])
        assert sent > 0 and lost["extra"]["delivered"] == sent, lost
    # a notification reaches one listener of the topic, once
    assert index[("oslo-zmq", "threads", "notify", "duplicated")]["value"] == 0


@pytest.mark.timeout(300)
def test_oslo_targets_and_skipped_peers(smoke: Any) -> None:
    _, doc, _ = smoke
    oslo = {t["target"]: t for t in doc["targets"]
            if t["target"].startswith("oslo-zmq: ")}
    assert oslo["oslo-zmq: call p50, one caller"]["status"] in ("MET",
                                                                "NOT MET")
    assert oslo["oslo-zmq: nothing lost (casts, fanout, notifications)"][
        "status"] == "MET"
    # --smoke runs no peer: each comparison says so instead of passing
    versus = [t for name, t in oslo.items() if name.endswith("vs om8zmq")]
    assert len(versus) == 6
    assert all(t["status"] == "SKIPPED" and "om8zmq" in t["detail"]
               for t in versus)
    assert oslo["oslo-zmq: calls/s, 16 callers vs RabbitMQ"]["status"] == \
        "SKIPPED"
