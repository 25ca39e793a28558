"""``python -m benchmarks.scale --smoke``: every topology the scale model
claims is measured at N = 10 and 50 with real processes and sockets, and
its rows hold descriptors, a fanout that reached every host and answered
calls.

Here (not in tests/functional) because the controller is a real
oslo.messaging client, which the floors run does not install. Not a speed
test: no figure's size is asserted, only what must hold at any speed.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from typing import Any

import pytest

from nova_rpc_zmq.testing import checkout_root, child_env, scaled

PROXIED = ("router-proxy", "router-proxy-3", "pub-sub-3", "pub-sub-local")
#: Those whose fanout comes from a publisher (central or local).
SUBSCRIBED = ("pub-sub-3", "dynamic-pub-sub-3", "pub-sub-local")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: Any) -> tuple[int, dict, str]:
    """Run the smoke model once from its command line: (exit code, its
    JSON document, its output)."""
    out = str(tmp_path_factory.mktemp("scale"))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", "--smoke", "--no-png",
         "--output", out], cwd=checkout_root(), env=child_env(),
        capture_output=True, text=True, timeout=scaled(400))
    found = glob.glob(os.path.join(out, "scale-*.json"))
    output = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert found, "no JSON written:\n%s" % output
    assert glob.glob(os.path.join(out, "scale-*.txt")), output
    with open(found[0]) as f:
        return proc.returncode, json.load(f), output


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_topology_claimed_has_a_row_per_size(smoke: Any) -> None:
    code, doc, output = smoke
    assert code == 0, output
    assert doc["sizes"] == [10, 50]
    assert set(doc["topologies"]) >= {"static-direct", "router-proxy",
                                      "legacy-receiver", "dynamic-pub-sub-3",
                                      "pub-sub-local"}
    rows = {(r["topology"], r["hosts"]) for r in doc["rows"]}
    assert rows == {(t, n) for t in doc["topologies"] for n in doc["sizes"]}
    assert doc["nofile"]["soft"] == doc["nofile"]["hard"]
    # what is not measured says why
    assert all(why.startswith("not measured: ")
               for why in doc["not_measured"].values())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_each_row_delivers_every_fanout_and_answers_calls(smoke: Any) -> None:
    _, doc, output = smoke
    for row in doc["rows"]:
        where = "%s with %d hosts" % (row["topology"], row["hosts"])
        assert "error" not in row, "%s: %s" % (where, row["error"])
        assert row["controller"]["fds"] > 0, where
        for fanout in ("fanout_first", "fanout"):
            assert row[fanout]["delivered"] == row["hosts"], where
            assert row[fanout]["lost"] == 0, where
        assert row["calls_per_s"] > 0, where
        assert row["call_errors"] == 0 and row["wrong_answers"] == 0, where
        assert row["first_message_s"] is not None, where
        assert row["worker_errors"] == [], where
        for name, figs in row["aux"].items():
            assert figs["fds"] > 0 and figs["tcp"] > 0, (where, name)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_proxies_keep_the_controllers_connections_flat(smoke: Any) -> None:
    """Direct connections grow with the hosts on the controller; through
    proxies they are a few per proxy whatever N; a PUB/SUB fanout comes
    from a publisher."""
    _, doc, _ = smoke
    for row in doc["rows"]:
        tcp = row["controller"]["tcp"]
        if row["topology"] in ("static-direct", "legacy-receiver"):
            assert tcp >= row["hosts"], row["topology"]
        elif row["topology"] in PROXIED:
            assert tcp <= 4 * len(row["aux"]), row["topology"]
            assert len(row["aux"]) >= 1
        if row["topology"] in SUBSCRIBED:
            assert row["fanout_published"] == 2 * row["hosts"], \
                row["topology"]
        else:
            assert row["fanout_published"] == 0, row["topology"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_local_publishers_serve_their_groups(smoke: Any) -> None:
    """pub-sub-local runs one local publisher per 50 hosts besides the 3
    central proxies, each connected to its central publishers and its
    hosts; dynamic-pub-sub-3 runs the 3 central proxies alone."""
    _, doc, _ = smoke
    for row in doc["rows"]:
        names = sorted(row["aux"])
        local = [n for n in names if n.startswith("local")]
        if row["topology"] == "pub-sub-local":
            assert len(local) == -(-row["hosts"] // 50), names
            assert len(names) - len(local) == 3, names
            for name in local:
                # 3 central publishers and at least one host
                assert row["aux"][name]["tcp"] >= 4, (name, row["aux"])
        else:
            assert local == [], (row["topology"], names)
        if row["topology"] == "dynamic-pub-sub-3":
            # the central proxies, for their publishers only
            assert len(names) == 3, names


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_nothing_is_left_open_between_sizes(smoke: Any) -> None:
    _, doc, _ = smoke
    # the first row may leave multiprocessing's resource-tracker pipe,
    # opened once per process; no row may leave more
    left = [row["fds_left_after_cleanup"] for row in doc["rows"]]
    assert sum(left) <= 1, left
