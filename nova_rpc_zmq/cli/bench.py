"""``nova-rpc-zmq bench``: the benchmark suite, from a checkout.

    nova-rpc-zmq bench [--repeat 3] [--driver oslo] [--peer rabbit]
                       [--peer om8zmq] [--output DIR]
    nova-rpc-zmq bench --smoke            (seconds; what the tests run)
    nova-rpc-zmq bench --soak [--soak-seconds 600] [--soak-shape two-host]

The suite itself lives in the top-level ``benchmarks`` package of the
checkout (it is not installed with the library); this module finds it next
to ``nova_rpc_zmq`` or in the current directory.  Prints the table, writes
JSON, the table and a PNG chart into ``--output`` (default
``benchmarks/results/`` of the checkout).

Exit status: 0 when every workload was measured, 1 when some failed
(listed at the end of the table), 2 on a usage error, 3 with
``--check-targets`` when a target is NOT MET.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any


def _checkout_root() -> str | None:
    """The directory that holds ``benchmarks/suite.py``, put on sys.path."""
    from nova_rpc_zmq.testing import checkout_root
    for root in (checkout_root(), os.getcwd()):
        if os.path.exists(os.path.join(root, "benchmarks", "suite.py")):
            if root not in sys.path:
                sys.path.insert(0, root)
            return root
    return None


def add_parser(sub: Any) -> None:
    """Register ``bench`` on the ``nova-rpc-zmq`` sub-command parser."""
    p = sub.add_parser(
        "bench", help="run the benchmark suite (from a checkout)",
        description="Measure calls, casts, fanout, streaming, payloads, "
                    "memory and ring scale over real processes on loopback, "
                    "between two hosts (127.0.0.1 and 127.0.0.2, a receiver "
                    "each) and on one host, with the CPU per message of "
                    "every process on the path, "
                    "against raw pyzmq (and oslo.messaging+RabbitMQ with "
                    "--peer rabbit, oslo.messaging 8.1's zmq driver with "
                    "--peer om8zmq) in the same run.")
    p.add_argument("--repeat", type=int, default=3,
                   help="runs of every workload; medians are reported "
                        "(default 3)")
    p.add_argument("--peer", choices=["rabbit", "om8zmq"], action="append",
                   default=[],
                   help="also measure, on the oslo.messaging workloads "
                        "(repeatable): rabbit = oslo.messaging's rabbit "
                        "driver on a private RabbitMQ; om8zmq = "
                        "oslo.messaging 8.1's zmq driver with a private "
                        "Redis, in the venv .venv-om8zmq of the checkout "
                        "(made with pip on first use). Skipped, with the "
                        "reason, when it cannot start")
    p.add_argument("--driver", choices=["oslo"], action="append", default=[],
                   help="oslo: also measure this project's oslo.messaging "
                        "driver (transport_url zmq://127.0.0.1) through "
                        "oslo.messaging's API: rows of system oslo-zmq")
    p.add_argument("--modes", default="eventlet,threads",
                   help="concurrency modes to measure, comma separated "
                        "(default eventlet,threads)")
    p.add_argument("--output", metavar="DIR",
                   help="where to write JSON, table and PNG (default "
                        "benchmarks/results/ of the checkout)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny windows and counts, one repeat, no RabbitMQ: "
                        "checks that the suite runs (seconds)")
    p.add_argument("--soak", action="store_true",
                   help="instead of the suite, run a steady load and check "
                        "that no process grows")
    p.add_argument("--soak-seconds", type=float, default=600.0,
                   help="length of --soak (default 600)")
    p.add_argument("--soak-shape", choices=["two-host", "same-host"],
                   default="two-host",
                   help="where --soak runs: two-host (default: callers on "
                        "127.0.0.1, services on 127.0.0.2-4, a receiver "
                        "each, as the headline rows) or same-host")
    p.add_argument("--pin-hosts", action="store_true",
                   help="two-host rows: hold the callers' host (callers, its "
                        "receiver, the raw client) on CPU 0 and the service "
                        "hosts (receivers, services, the raw peer) on CPU 1, "
                        "as two machines would be; same-host rows stay "
                        "free (needs CPUs 0 and 1 and taskset)")
    p.add_argument("--no-png", action="store_true", help="skip the chart")
    p.add_argument("--check-targets", action="store_true",
                   help="exit 3 when a target is NOT MET")
    p.set_defaults(run=run)


def _on_term(signum: int, frame: Any) -> None:
    # turn SIGTERM into an exception so every child process gets stopped
    raise SystemExit(128 + signum)


def run(args: argparse.Namespace) -> int:
    """Run the suite (or the soak) and report; see the module docstring."""
    root = _checkout_root()
    if root is None:
        sys.stderr.write("nova-rpc-zmq bench: the benchmarks/ directory of a "
                         "nova-rpc-zmq checkout was not found; run it from "
                         "the root of the checkout\n")
        return 2
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    bad = [m for m in modes if m not in ("eventlet", "threads")]
    if bad or not modes:
        sys.stderr.write("nova-rpc-zmq bench: --modes takes eventlet and/or "
                         "threads, not %r\n" % args.modes)
        return 2
    if args.repeat < 1:
        sys.stderr.write("nova-rpc-zmq bench: --repeat must be at least 1\n")
        return 2
    if args.pin_hosts:
        from benchmarks.hosts import pin_problem
        problem = pin_problem()
        if problem is not None:
            sys.stderr.write("nova-rpc-zmq bench: --pin-hosts: %s\n" % problem)
            return 2
        if args.soak:
            sys.stderr.write("nova-rpc-zmq bench: --pin-hosts applies to the "
                             "suite, not to --soak\n")
            return 2
    from benchmarks import report
    output = args.output or os.path.join(root, "benchmarks", "results")
    signal.signal(signal.SIGTERM, _on_term)

    def log(line: str) -> None:
        print(line, flush=True)

    if args.soak:
        from benchmarks.soak import run_soak
        seconds = args.soak_seconds
        if args.smoke:
            seconds = min(seconds, 10.0)
        doc = run_soak(seconds, modes,
                       sample_every=max(0.5, min(5.0, seconds / 60.0)), log=log,
                       shape=args.soak_shape)
    else:
        from benchmarks.suite import Options, Suite
        peers = () if args.smoke else tuple(dict.fromkeys(args.peer))
        if args.smoke and args.peer:
            log("--smoke: the %s peer is not run" % " and ".join(args.peer))
        opts = Options(repeat=1 if args.smoke else args.repeat, modes=modes,
                       peers=peers, oslo_driver="oslo" in args.driver,
                       pin_hosts=args.pin_hosts,
                       smoke=args.smoke, log=log)
        doc = Suite(opts).run()
    doc["command"] = "nova-rpc-zmq bench " + " ".join(sys.argv[2:]) \
        if len(sys.argv) > 1 and sys.argv[1] == "bench" else "nova-rpc-zmq bench"
    out = report.finish(doc, output, png=not args.no_png)
    print()
    print(out["table"])
    print()
    print("wrote %s" % out["json"])
    print("wrote %s" % out["txt"])
    if out["png"]:
        print("wrote %s" % out["png"])
    elif not args.no_png:
        print("no chart: %s" % out["png_problem"])
    if doc.get("errors"):
        return 1
    if args.check_targets and any(t["status"] == "NOT MET"
                                  for t in doc.get("targets", [])):
        return 3
    return 0
