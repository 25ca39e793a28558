"""Small shared test tools: timeout scaling, waiting with a deadline, ports
(from ``nova_rpc_zmq.testing``, shared with the demo and the benchmarks),
and closing TCP sockets so the peer sees the end."""

from __future__ import annotations

import socket

from nova_rpc_zmq.testing import TIMEOUT_SCALE, free_port, scaled, wait_for

__all__ = ["TIMEOUT_SCALE", "free_port", "hang_up", "scaled", "wait_for"]


def hang_up(*socks: socket.socket) -> None:
    """Shut down and close each TCP socket, so its peer sees the end at
    once; sockets already gone are ignored."""
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()


def run_bench_smoke(out_dir: str, *args: str) -> tuple[int, dict, str]:
    """Run ``nova-rpc-zmq bench --smoke *args`` from the checkout's root,
    writing into ``out_dir``; (exit code, its JSON document, its output).
    Fails the test when no JSON was written."""
    import glob
    import json
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-m", "nova_rpc_zmq.cli.main", "bench", "--smoke",
         *args, "--output", out_dir],
        cwd=root, capture_output=True, text=True, timeout=scaled(280))
    found = glob.glob(os.path.join(out_dir, "bench-*.json"))
    assert found, "no JSON written:\n%s\n%s" % (proc.stdout[-3000:],
                                                proc.stderr[-3000:])
    with open(found[0]) as f:
        doc = json.load(f)
    return proc.returncode, doc, proc.stdout + proc.stderr
