"""A caller process: runs a plan of workloads and writes their figures.

    python -m benchmarks.client --plan plan.json --out result.json

The plan (JSON) names the concurrency ``mode`` (``eventlet``: the process is
monkey-patched first and every ``threading.Thread`` is a green thread;
``threads``: native threads), the ``config_file`` of the bench host, and the
``workloads`` to run in order, each ``{"name": ..., **params}`` (see
``benchmarks.workloads.WORKLOADS``; ``limit`` is the seconds it may take),
and optionally the ``shape`` of every figure it makes
(``benchmarks.measure.SAME_HOST``, the default, or ``TWO_HOST``).
The result is ``{"figures": [...], "errors": [...], "current": ...}``,
rewritten after every workload: ``current`` names the running workload with
its start time and limit, so the suite can kill a caller that hangs (the
eventlet hub blocked, say) and still keep what was measured before.  A
workload that raises is reported in ``errors`` and the next one still runs.
"""

from __future__ import annotations

import argparse
import json
from typing import Any
import os
import sys
import time
import traceback


def write_progress(path: str, figures: list, errors: list,
                   current: dict | None) -> None:
    """Replace ``path`` atomically with the results so far."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"figures": figures, "errors": errors, "current": current}, f)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Run the plan; exit status 0 when the result file was written."""
    parser = argparse.ArgumentParser(prog="benchmarks.client")
    parser.add_argument("--plan", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with open(args.plan) as f:
        plan = json.load(f)
    mode = plan["mode"]
    if mode == "eventlet":
        import eventlet
        eventlet.monkey_patch()
    elif mode != "threads":
        sys.stderr.write("benchmarks.client: unknown mode %r\n" % mode)
        return 2

    from nova_rpc_zmq import config, rpc

    from benchmarks import workloads

    rpc.init(config.parse_args(["--config-file", plan["config_file"]]))
    try:
        run_plan(plan["workloads"], args.out, mode,
                 lambda name, **params: workloads.WORKLOADS[name](mode, **params),
                 shape=plan.get("shape"))
    finally:
        rpc.cleanup()
    return 0


def run_plan(specs: list[dict], out_path: str, mode: str,
             run: Any, shape: str | None = None) -> None:
    """Run each workload spec with ``run(name, **params)`` (a list of
    figures), recording progress and errors in ``out_path`` as it goes; a
    failing workload is reported and the next one runs. ``shape``, when
    given, is stamped on every figure (``fig["shape"]``)."""
    figures: list[dict] = []
    errors: list[dict] = []
    try:
        for spec in specs:
            params = dict(spec)
            name = params.pop("name")
            limit = params.pop("limit", None)
            label = params.pop("label", name)
            write_progress(out_path, figures, errors,
                           {"workload": label, "started": time.time(),
                            "limit": limit})
            try:
                made = run(name, **params)
                if shape:
                    for fig in made:
                        fig["shape"] = shape
                figures += made
            except Exception as exc:  # noqa: BLE001 - reported, next one runs
                errors.append({"workload": label, "mode": mode,
                               "error": "%s: %s" % (type(exc).__name__, exc),
                               "traceback": traceback.format_exc()})
                sys.stderr.write(traceback.format_exc())
    finally:
        write_progress(out_path, figures, errors, None)


if __name__ == "__main__":
    sys.exit(main())
