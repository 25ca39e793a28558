"""``nova-rpc-zmq bench --pin-hosts``: each simulated host of the two-host
rows held on a core of its own, every thread of its processes included
(real receivers and services on 127.0.0.1 and 127.0.0.2)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from benchmarks import report
from benchmarks.hosts import (CALLERS_CPU, SERVICES_CPU, HostsBench,
                              pin_problem)
from benchmarks.suite import PINNED, TWO_HOST, Options, Suite

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _cpus_of_every_thread(pid: int) -> set[str]:
    found = set()
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
            for line in f:
                if line.startswith("Cpus_allowed_list:"):
                    found.add(line.split(":", 1)[1].strip())
    return found


@pytest.mark.timeout(120)
def test_each_host_and_every_thread_of_it_stays_on_its_cpu():
    problem = pin_problem()
    if problem is not None:
        pytest.skip("--pin-hosts cannot run here: %s" % problem)
    # short: the IPC paths under it must fit in 107 bytes
    base = tempfile.mkdtemp(prefix="pin-")
    bench = HostsBench(base, {"bench_th": ["th1"]}, service_hosts=1,
                       pin=True)
    try:
        bench.start({"bench_th": False})
        pids = bench.pids("th1")
        assert bench.callers_cpus == CALLERS_CPU
        assert _cpus_of_every_thread(pids["receiver_a"]) == {CALLERS_CPU}
        # the service's consumer, watchdog and libzmq threads, made after
        # it started, inherit the CPU too
        assert len(os.listdir("/proc/%d/task" % pids["service"])) > 3
        assert _cpus_of_every_thread(pids["service"]) == {SERVICES_CPU}
        assert _cpus_of_every_thread(pids["receiver_b"]) == {SERVICES_CPU}
    finally:
        bench.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_without_the_option_nothing_is_held():
    suite = Suite(Options())
    try:
        assert suite._cpus(TWO_HOST, True) is None
        assert suite._cpus(TWO_HOST, False) is None
    finally:
        suite.close()
    pinned = Suite(Options(pin_hosts=True))
    try:
        assert pinned._cpus(TWO_HOST, True) == CALLERS_CPU
        assert pinned._cpus(TWO_HOST, False) == SERVICES_CPU
        assert pinned._cpus("same-host", True) is None
    finally:
        pinned.close()


def test_the_report_says_what_was_held():
    text = report.render({"pinned": PINNED, "medians": [], "targets": []})
    assert "pinned (--pin-hosts): two-host rows" in text
    assert "pinned (--pin-hosts)" not in report.render({"medians": [],
                                                        "targets": []})


def test_soak_refuses_the_option_with_a_reason():
    proc = subprocess.run(
        [sys.executable, "-m", "nova_rpc_zmq.cli.main", "bench", "--soak",
         "--pin-hosts"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--pin-hosts" in proc.stderr
