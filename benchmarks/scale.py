"""The scale model: what each topology costs a controller as hosts grow.

``python -m benchmarks.scale [--sizes 10,100,500,1000,2000] [--topologies
static-direct,dynamic-direct,router-proxy,router-proxy-3,pub-sub-3,
dynamic-pub-sub-3,pub-sub-local,legacy-receiver]
[--output DIR] [--smoke]`` simulates N hosts on this machine. Each
simulated host is a set of ZeroMQ sockets with its own identity and its
own loopback address (127.10.x.y; Linux routes 127.0.0.0/8 to ``lo``
without set-up); the hosts are spread over ``--workers`` processes
(``scalehosts.SimHosts``, one poll loop each, the open-files limit raised
to the hard one). The measuring process is the controller, a real client
of the transport (``scaledeploy``: what each topology runs besides the
hosts):

* ``static-direct``: the oslo.messaging driver on ``zmq://`` (a private
  registry directory). Hosts bind a PULL on their own address and register
  ``rpc/<exchange>/<topic>`` and ``rpc/<exchange>/<topic>/<host>``; they
  decode requests with ``wire`` and push each reply to the reply socket a
  call names.
* ``dynamic-direct``: the same hosts, the controller with
  ``use_dynamic_connections = true`` (a connection per message, closed
  after the send).
* ``router-proxy``, ``router-proxy-3``: the same through one or three
  ``nova-rpc-zmq-proxy`` processes started from their command line; hosts
  are DEALERs whose routing id is their member, connected to every
  proxy's backend, and reply through a DEALER connected to the frontends.
* ``pub-sub-3``: three proxies with their PUB/SUB publishers
  (``use_pub_sub = true``): calls as ``router-proxy-3``, and each host also
  holds a SUB socket connected to every publisher, subscribed to the
  topic's fanout key; a fanout is one message to one publisher.
* ``dynamic-pub-sub-3``: the seed's mix past 500 nodes. The controller
  has ``use_dynamic_connections`` and ``use_pub_sub`` (no router proxy):
  calls go over a connection per message to the hosts of
  ``dynamic-direct``, fanout through the three proxies' publishers, to
  which each host's SUB socket is connected.
* ``pub-sub-local``: ``pub-sub-3`` with local publishers: one
  ``nova-rpc-zmq-proxy --local-publisher`` per group of ``GROUP`` (50)
  hosts, on its own loopback address like a node's, subscribed to the
  three central publishers; each host's SUB socket is connected to its
  group's local publisher only.
* ``legacy-receiver``: the Nova-era driver (``impl_zmq``, a ring file of
  the N hosts) with a real receiver for the controller's host; hosts are
  PULLs bound on ``<address>:<rpc_zmq_port>`` standing in for each host's
  receiver, and push replies to the controller's receiver.

For each topology and N: open descriptors, established TCP connections
and RSS of the controller (and of the proxies, or of the controller's
receiver), RSS per connection, a fanout to all N hosts (time until the
last one has it, count delivered), calls/s to random hosts over a bounded
window, and the time a new host takes to receive its first message after
it registers. JSON, a text table and a PNG chart go to ``--output``.
The local publishers' figures are apart from the central proxies' (the
``local`` columns: how many, the largest). Rows run one after the other;
each stops every process and socket it started before the next begins
(``fds_left_after_cleanup`` says so). A topology of the issue that is not
measured is listed with the reason (``planned_status``: none now).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from typing import Any, Callable

from benchmarks.scaledeploy import Deployment, deployment
from benchmarks.scalehosts import (DYNPUBSUB, GROUP, PROXIED, TOPOLOGIES,
                                   Worker, process_figures, raise_nofile)

SIZES = [10, 100, 500, 1000, 2000]
SMOKE_SIZES = [10, 50]
#: Topologies the seed recommends at 2,000 hosts (the issue's target).
RECOMMENDED_LARGE = PROXIED + (DYNPUBSUB,)
#: The prefix of a local publisher's name in a row's ``aux``.
LOCAL = "local"
LOG = logging.getLogger("benchmarks.scale")
#: Seconds between two casts to a host about to register.
PUMP_EVERY = 0.005


# -- measuring ----------------------------------------------------------------

class Plan:
    """How hard to push: workers, callers, windows and deadlines."""

    def __init__(self, workers: int = 4, callers: int = 4,
                 window: float = 3.0, fanout_wait: float = 60.0,
                 first_wait: float = 15.0) -> None:
        self.workers = workers
        self.callers = callers
        self.window = window
        self.fanout_wait = fanout_wait
        self.first_wait = first_wait


def _peak(into: dict, sample: dict) -> None:
    for key, value in sample.items():
        if isinstance(value, (int, float)):
            into[key] = max(into.get(key, 0), value)


def _fanout(dep: Deployment, workers: list[Worker], hosts: int, rnd: int,
            wait: float) -> dict:
    """One fanout: send time, time until the last host had it, delivered."""
    start = time.monotonic()
    dep.fanout(rnd)
    sent = time.monotonic() - start
    deadline = start + wait
    delivered, last = 0, None
    while True:
        answers = [w.ask("fanout", rnd) for w in workers]
        delivered = sum(count for count, _ in answers)
        times = [t for _, t in answers if t is not None]
        last = max(times) if times else None
        if delivered >= hosts or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return {"send_s": sent, "all_s": None if last is None or delivered < hosts
            else last - start, "delivered": delivered,
            "lost": hosts - delivered}


def _calls(dep: Deployment, names: list[str], plan: Plan) -> dict:
    """Calls to random hosts from ``plan.callers`` threads for
    ``plan.window`` seconds: calls/s, errors, wrong answers."""
    end = time.monotonic() + plan.window
    counts = {"ok": 0, "errors": 0, "wrong": 0}
    errors: list[str] = []
    lock = threading.Lock()

    def caller(seed: int) -> None:
        rand = random.Random(seed)
        for _ in range(1000000):
            if time.monotonic() >= end:
                return
            name = rand.choice(names)
            try:
                answer = dep.call(name)
                kind = "ok" if answer == name else "wrong"
            except Exception as exc:  # noqa: BLE001 - counted, reported
                kind = "errors"
                if len(errors) < 5:
                    errors.append("%s: %s" % (type(exc).__name__, exc))
            with lock:
                counts[kind] += 1

    threads = [threading.Thread(target=caller, args=(n,), daemon=True)
               for n in range(plan.callers)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(plan.window + 30)
    elapsed = time.monotonic() - start
    return {"calls_per_s": counts["ok"] / elapsed, "calls": counts["ok"],
            "call_errors": counts["errors"], "wrong_answers": counts["wrong"],
            "call_error_samples": errors}


def _first_message(dep: Deployment, worker: Worker, index: int,
                   plan: Plan) -> float | None:
    """Seconds from a new host's registration to its first message, the
    controller casting to it every PUMP_EVERY seconds from before it
    registers (the resolution of the figure)."""
    name, address = dep.names(1, index)[0]
    stop = threading.Event()
    deadline = time.monotonic() + plan.first_wait + 10

    def pump() -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                dep.cast_first(name)
            except Exception:  # noqa: BLE001 - not there yet: try again
                pass
            stop.wait(PUMP_EVERY)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        stop.wait(0.1)
        registered = worker.ask("add", (name, address))
        registered = max(registered, dep.registered(name, address))
        until = time.monotonic() + plan.first_wait
        while time.monotonic() < until:
            _, first = worker.ask("first", name)
            if first is not None:
                return max(0.0, first - registered)
            time.sleep(0.01)
        return None
    finally:
        stop.set()
        thread.join(30)


#: Fewer connections gained than this: no RSS per connection (the growth
#: of a few is noise: threads, caches, the first calls' buffers).
MIN_CONNS_PER_RSS = 50


def per_connection(idle: dict, peak: dict) -> float | None:
    """RSS growth (bytes) per established TCP connection gained from
    ``idle`` to ``peak``; None for fewer than MIN_CONNS_PER_RSS."""
    conns = peak["tcp"] - idle["tcp"]
    if conns < MIN_CONNS_PER_RSS:
        return None
    return (peak["rss"] - idle["rss"]) / conns


def measure(topology: str, hosts: int, plan: Plan, mp: Any) -> dict:
    """One row: ``topology`` with ``hosts`` simulated hosts; everything
    it started is stopped before it returns."""
    from benchmarks.measure import open_fds
    me = os.getpid()
    row: dict[str, Any] = {"topology": topology, "hosts": hosts}
    fds_before = open_fds(me)
    tmp = tempfile.mkdtemp(prefix="scale-")
    dep = deployment(topology, tmp)
    workers: list[Worker] = []
    began = time.monotonic()
    try:
        names = dep.names(hosts)
        shared = dict(dep.start(names), topology=topology)
        count = max(1, min(plan.workers, hosts))
        for n in range(count):
            workers.append(Worker(mp, dict(shared, hosts=names[n::count])))
        for worker in workers:
            worker.ready(120 + hosts * 0.05)
        row["worker_nofile"] = workers[0].info["nofile"]
        dep.connect(hosts)
        row["setup_s"] = time.monotonic() - began
        controller = process_figures(me)
        row["controller_idle"] = dict(controller)
        aux: dict[str, dict] = {k: process_figures(pid)
                                for k, pid in dep.aux.items()}
        row["aux_idle"] = {k: dict(v) for k, v in aux.items()}

        def sample() -> None:
            _peak(controller, process_figures(me))
            for key, pid in dep.aux.items():
                _peak(aux[key], process_figures(pid))

        row["fanout_first"] = _fanout(dep, workers, hosts, 1,
                                      plan.fanout_wait)
        sample()
        row["fanout"] = _fanout(dep, workers, hosts, 2, plan.fanout_wait)
        sample()
        row.update(_calls(dep, [n for n, _ in names], plan))
        sample()
        row["first_message_s"] = _first_message(dep, workers[0], hosts, plan)
        sample()
        row["controller"] = controller
        row["aux"] = aux
        row["controller_rss_per_conn"] = per_connection(
            row["controller_idle"], controller)
        for key, figs in aux.items():
            figs["rss_per_conn"] = per_connection(row["aux_idle"][key], figs)
        figures = [w.ask("figures") for w in workers]
        row["worker_errors"] = sum((f["errors"] for f in figures), [])
        # fanout messages the hosts got from a publisher (SUB sockets)
        row["fanout_published"] = sum(f["published"] for f in figures)
    except Exception as exc:  # noqa: BLE001 - the row says what failed
        LOG.exception("%s with %d hosts failed", topology, hosts)
        row["error"] = "%s: %s" % (type(exc).__name__, exc)
    finally:
        for worker in workers:
            worker.stop()
        try:
            dep.close()
        except Exception as exc:  # noqa: BLE001 - reported in the row
            row.setdefault("error", "cleanup: %s" % exc)
        shutil.rmtree(tmp, ignore_errors=True)
    row["elapsed_s"] = time.monotonic() - began
    row["fds_left_after_cleanup"] = open_fds(me) - fds_before
    return row


def planned_status() -> dict[str, str]:
    """Why each topology of the issue that is not in the table is not
    (``dynamic-pub-sub-3`` when the driver refuses the mix)."""
    from nova_rpc_zmq.oslo_driver import options
    found: dict[str, str] = {}
    problem = options.topology_problem(True, False, True)
    if problem:
        found[DYNPUBSUB] = "not measured: %s" % problem
    return found


# -- report -------------------------------------------------------------------

def _n(value: Any, fmt: str = "%.0f") -> str:
    return "-" if value is None else fmt % value


def _aux_max(row: dict, key: str, local: bool = False) -> Any:
    """The largest ``key`` of the row's central proxies or receiver (of
    its local publishers with ``local``)."""
    aux = row.get("aux") or {}
    values = [figs.get(key) for name, figs in aux.items()
              if name.startswith(LOCAL) == local
              and figs.get(key) is not None]
    return max(values) if values else None


def _locals(row: dict) -> int:
    return sum(1 for name in row.get("aux") or {} if name.startswith(LOCAL))


def table(doc: dict) -> str:
    """The text table of a run (one line per topology and size)."""
    head = ("topology", "N", "ctl fds", "ctl tcp", "ctl KiB/conn",
            "aux fds", "aux tcp", "aux KiB/conn", "local", "local fds",
            "fanout s", "delivered",
            "2nd fanout s", "calls/s", "call err", "first msg s")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for row in doc["rows"]:
        if "error" in row and "controller" not in row:
            lines.append("%s | %d | FAILED: %s" % (row["topology"],
                                                   row["hosts"], row["error"]))
            continue
        ctl = row["controller"]
        first, second = row["fanout_first"], row["fanout"]
        per = row.get("controller_rss_per_conn")
        aux_per = _aux_max(row, "rss_per_conn")
        lines.append(" | ".join([
            row["topology"], str(row["hosts"]), str(ctl["fds"]),
            str(ctl["tcp"]), _n(per and per / 1024, "%.1f"),
            _n(_aux_max(row, "fds")), _n(_aux_max(row, "tcp")),
            _n(aux_per and aux_per / 1024, "%.1f"),
            str(_locals(row) or "-"), _n(_aux_max(row, "fds", True)),
            _n(first["all_s"], "%.3f"),
            "%d/%d" % (first["delivered"], row["hosts"]),
            _n(second["all_s"], "%.3f"), _n(row["calls_per_s"]),
            str(row["call_errors"]), _n(row["first_message_s"], "%.3f")]))
        if row.get("error"):
            lines.append("  (%s)" % row["error"])
    lines.append("")
    lines.append("aux = the central proxies (largest of them) or the "
                 "controller host's receiver (legacy); local = local "
                 "publishers (%d hosts each), local fds the largest's; "
                 "KiB/conn = RSS growth over established TCP connections "
                 "gained since idle (- for fewer than %d)"
                 % (GROUP, MIN_CONNS_PER_RSS))
    for name, why in doc.get("not_measured", {}).items():
        lines.append("%s: %s" % (name, why))
    for target in doc.get("targets", []):
        lines.append("target: %s: %s (%s)" % (target["name"],
                                              target["status"],
                                              target["detail"]))
    return "\n".join(lines) + "\n"


def targets(doc: dict, largest: int) -> list[dict]:
    """The issue's target at the largest size run: every topology the seed
    recommends at 2,000 hosts delivers every fanout, its controller under
    5,000 descriptors."""
    found = []
    for row in doc["rows"]:
        if row["hosts"] != largest or \
                row["topology"] not in RECOMMENDED_LARGE:
            continue
        ctl = row.get("controller")
        lost = [row[k]["lost"] for k in ("fanout_first", "fanout")
                if k in row]
        met = ctl is not None and ctl["fds"] < 5000 and lost == [0, 0]
        found.append({
            "name": "%s at %d hosts: fanout to every host, controller under "
                    "5,000 fds" % (row["topology"], largest),
            "status": "MET" if met else "NOT MET",
            "detail": row.get("error") or "fds %s, lost %s"
            % (ctl and ctl["fds"], lost)})
    return found


def chart(doc: dict, path: str) -> str | None:
    """A PNG of controller fds, proxy fds (local publishers dashed), fanout
    time and calls/s against N; None, or why there is none."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib)"
    panels: list[tuple[str, Callable[[dict], Any]]] = [
        ("controller open fds", lambda r: r["controller"]["fds"]),
        ("proxy / receiver open fds (largest; dashed: local publisher)",
         lambda r: _aux_max(r, "fds")),
        ("fanout to all hosts (s)", lambda r: r["fanout_first"]["all_s"]),
        ("calls/s to random hosts", lambda r: r["calls_per_s"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(19, 4.5))
    for ax, (title, value) in zip(axes, panels):
        for number, topology in enumerate(doc["topologies"]):
            rows = [r for r in doc["rows"] if r["topology"] == topology
                    and "controller" in r and value(r) is not None]
            if rows:
                # one colour per topology in every panel
                ax.plot([r["hosts"] for r in rows], [value(r) for r in rows],
                        marker="o", label=topology, color="C%d" % number)
            local = [r for r in rows if _aux_max(r, "fds", True) is not None]
            if title.startswith("proxy") and local:
                ax.plot([r["hosts"] for r in local],
                        [_aux_max(r, "fds", True) for r in local],
                        marker="s", linestyle="--", color="C%d" % number)
        if title.startswith("controller"):
            ax.axhline(5000, linestyle="--", color="grey", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("simulated hosts")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def write(doc: dict, output: str, png: bool) -> dict[str, str]:
    """JSON, table and chart of ``doc`` into ``output``; their paths."""
    os.makedirs(output, exist_ok=True)
    stem = os.path.join(output, "scale-%s" % time.strftime(
        "%Y%m%d-%H%M%S", time.gmtime(doc["started"])))
    paths = {"json": stem + ".json", "txt": stem + ".txt"}
    if png:
        why = chart(doc, stem + ".png")
        if why is None:
            paths["png"] = stem + ".png"
        else:
            doc["chart"] = why
    with open(paths["json"], "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    with open(paths["txt"], "w") as f:
        f.write(table(doc))
    return paths


# -- command line -------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", help="comma-separated host counts "
                        "(default %s; --smoke: %s)" % (
                            ",".join(map(str, SIZES)),
                            ",".join(map(str, SMOKE_SIZES))))
    parser.add_argument("--topologies", default=",".join(TOPOLOGIES),
                        help="comma-separated, of: %s" % ", ".join(TOPOLOGIES))
    parser.add_argument("--output", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results"),
        help="directory of the JSON, table and PNG (default "
             "benchmarks/results/)")
    parser.add_argument("--workers", type=int, default=4,
                        help="processes the simulated hosts are spread over")
    parser.add_argument("--callers", type=int, default=4,
                        help="concurrent calling threads in the controller")
    parser.add_argument("--window", type=float, default=3.0,
                        help="seconds of calls per row")
    parser.add_argument("--smoke", action="store_true",
                        help="N = 10, 50 with short windows: seconds")
    parser.add_argument("--no-png", action="store_true",
                        help="write no chart")
    args = parser.parse_args(argv)
    chosen = [t.strip() for t in args.topologies.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in TOPOLOGIES]
    if unknown:
        parser.error("--topologies: unknown %s; choose from %s"
                     % (", ".join(unknown), ", ".join(TOPOLOGIES)))
    args.topology_list = chosen
    try:
        args.size_list = [int(s) for s in args.sizes.split(",")] \
            if args.sizes else (SMOKE_SIZES if args.smoke else SIZES)
    except ValueError:
        parser.error("--sizes: %r is not a comma-separated list of "
                     "integers" % args.sizes)
    if any(not 1 <= n <= 60000 for n in args.size_list):
        parser.error("--sizes: each size must be between 1 and 60000")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the model; exit 1 when a row failed or lost a fanout message."""
    import multiprocessing

    from benchmarks.report import machine
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR,
                        format="%(asctime)s %(name)s %(message)s")
    nofile = raise_nofile()
    plan = Plan(workers=args.workers, callers=args.callers,
                window=1.0 if args.smoke else args.window,
                fanout_wait=15.0 if args.smoke else 60.0,
                first_wait=10.0 if args.smoke else 15.0)
    mp = multiprocessing.get_context("spawn")
    doc: dict[str, Any] = {
        "kind": "scale", "started": time.time(), "machine": machine(),
        "nofile": {"soft": nofile[0], "hard": nofile[1]},
        "workers": plan.workers, "callers": plan.callers,
        "window_s": plan.window, "sizes": args.size_list,
        "topologies": args.topology_list, "smoke": args.smoke,
        "not_measured": planned_status(), "rows": []}
    for size in args.size_list:
        for topology in args.topology_list:
            print("%s %s, %d hosts ..." % (time.strftime("%H:%M:%S"),
                                           topology, size), flush=True)
            row = measure(topology, size, plan, mp)
            doc["rows"].append(row)
            print("  %s" % json.dumps({k: row.get(k) for k in (
                "error", "setup_s", "fanout_first", "calls_per_s",
                "call_errors", "first_message_s", "controller")}),
                flush=True)
    doc["targets"] = targets(doc, max(args.size_list))
    paths = write(doc, args.output, not args.no_png)
    print(table(doc))
    print("written: %s" % ", ".join(sorted(paths.values())))
    bad = [r for r in doc["rows"] if r.get("error")
           or r.get("fanout_first", {}).get("lost")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
