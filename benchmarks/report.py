"""The report of a run: a table for people, JSON for machines, a PNG chart.

``finish(doc, output_dir)`` adds the machine and the versions to the result
document of ``benchmarks.suite``, writes ``bench-<time>.json``, ``.txt``
(the table) and ``.png`` (when matplotlib is installed) into
``output_dir``, and returns the paths with the table text.
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Any

from benchmarks.measure import OM8ZMQ, OSLO_ZMQ, OURS, PYZMQ, RABBIT, SAME_HOST, TWO_HOST
from benchmarks.measure import shape as figure_shape

NAMES = {OURS: "nova-rpc-zmq", PYZMQ: "pyzmq", RABBIT: "rabbit",
         OSLO_ZMQ: OSLO_ZMQ, OM8ZMQ: OM8ZMQ}


def cpu_busy(seconds: float = 0.5) -> float:
    """Percent of all CPUs busy over ``seconds`` (other programs included):
    unlike the load average, it is not inflated by sleeping threads."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values), idle
    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return -1.0
    total = total1 - total0
    return 100.0 * (total - (idle1 - idle0)) / total if total else 0.0


def machine() -> dict:
    """What ran the suite: CPU, cores, memory, kernel, Python, load."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_bytes": mem,
            "kernel": platform.release(), "system": platform.platform(),
            "python": platform.python_version(),
            "loadavg": list(os.getloadavg()), "cpu_busy_pct": cpu_busy()}


def versions() -> dict:
    """Versions of everything measured (missing packages left out)."""
    from importlib import metadata
    out: dict[str, str] = {}
    for dist in ("nova-rpc-zmq", "pyzmq", "eventlet", "oslo.messaging",
                 "kombu", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        import zmq
        out["libzmq"] = zmq.zmq_version()
    except ImportError:
        pass
    from benchmarks.rabbit import rabbit_version
    rv = rabbit_version()
    if rv:
        out["rabbitmq-server"] = rv
    return out


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit in ("msgs", "calls") or abs(value) >= 1000:
        return "{:,.0f}".format(value)
    if abs(value) >= 10:
        return "%.1f" % value
    return "%.2f" % value


def _ratio(value: float | None) -> str:
    return "-" if value is None else "%.2fx" % value


def figures_table(medians: list[dict]) -> str:
    """One line per figure: median, spread over repeats, ratios."""
    width = max([18] + [len(f["workload"]) for f in medians])
    row = "%-*s %-9s %-12s %-8s %-16s %12s %-5s %19s %9s %9s"
    head = row % (width, "workload", "shape", "system", "mode", "metric",
                  "median", "unit", "min .. max", "vs base", "vs green")
    lines = [head, "-" * len(head)]
    for f in medians:
        spread = "%s .. %s" % (_num(f["min"], f["unit"]),
                               _num(f["max"], f["unit"]))
        lines.append(row % (
            width, f["workload"], figure_shape(f),
            NAMES.get(f["system"], f["system"]),
            f["mode"], f["metric"], _num(f["value"], f["unit"]), f["unit"],
            spread, _ratio(f.get("ratio")), _ratio(f.get("ratio_green"))))
    return "\n".join(lines)


#: the workloads of the headline table, in its order
HEADLINE = ["call_latency", "call_throughput_1", "call_throughput_16",
            "call_throughput_64", "call_latency_via_receiver",
            "call_throughput_16_via_receiver", "cast", "fanout_3",
            "payload_100B", "payload_10KiB", "payload_1MiB",
            "rt_1", "rt_16", "push"]


def headline_table(medians: list[dict]) -> str:
    """One line per system, shape, mode and workload: latency, rate, its
    ratio to raw pyzmq of the same shape, and µs of CPU per message in the
    caller, the receivers (both hosts' for a two-host call) and the
    service (for raw pyzmq: its peer)."""
    rows: dict[tuple, dict[str, dict]] = {}
    for f in medians:
        if f["system"] not in (OURS, PYZMQ) or f["workload"] not in HEADLINE:
            continue
        k = (f["system"], figure_shape(f), f["mode"], f["workload"])
        rows.setdefault(k, {})[f["metric"]] = f
    row = "%-9s %-12s %-8s %-31s %9s %9s %9s %8s %7s %7s %7s %7s"
    head = row % ("shape", "system", "mode", "workload", "p50 µs", "p99 µs",
                  "rate/s", "vs raw", "cpu cl", "cpu rcv", "cpu svc",
                  "lost")
    lines = [head, "-" * len(head)]
    shapes = [TWO_HOST, SAME_HOST]
    systems = [OURS, PYZMQ]
    for k in sorted(rows, key=lambda k: (shapes.index(k[1]) if k[1] in shapes
                                         else 9, systems.index(k[0]), k[2],
                                         HEADLINE.index(k[3]))):
        m = rows[k]

        def val(metric: str) -> str:
            f = m.get(metric)
            return _num(f["value"], f["unit"]) if f else "-"
        main = m.get("p50") if k[3] in ("call_latency", "rt_1") or \
            k[3].startswith("call_latency") else m.get("rate")
        lines.append(row % (
            k[1], NAMES.get(k[0], k[0]), k[2], k[3], val("p50"), val("p99"),
            val("rate"), _ratio(main.get("ratio")) if main else "-",
            val("cpu_caller"),
            val("cpu_receivers") if "cpu_receivers" in m else val("cpu_receiver"),
            val("cpu_service"), val("lost")))
    return "\n".join(lines)


def targets_table(targets: list[dict]) -> str:
    """One line per target and mode: value, threshold, ratio, verdict."""
    head = "%-50s %-8s %14s  %-38s %8s  %s" % (
        "target", "mode", "value", "threshold", "ratio", "status")
    lines = [head, "-" * len(head)]
    for t in targets:
        value = "%s %s" % (_num(t["value"], t["unit"]), t["unit"]) \
            if t["value"] is not None else "-"
        line = "%-50s %-8s %14s  %-38s %8s  %s" % (
            t["target"], t["mode"], value, t["threshold"],
            _ratio(t["ratio"]), t["status"])
        if t["detail"] and (t["status"] in ("SKIPPED", "MISSING")
                            or "not reached" in t["detail"]
                            or "that finished" in t["detail"]):
            line += " (%s)" % t["detail"]
        lines.append(line)
    return "\n".join(lines)


def render(doc: dict) -> str:
    """The whole text report of a run."""
    m = doc.get("machine", {})
    v = doc.get("versions", {})
    parts = [
        "nova-rpc-zmq bench: %s%d repeat(s), medians; %s"
        % ("SMOKE, " if doc.get("smoke") else "", doc.get("repeat", 0),
           doc.get("started", "")),
        "machine: %s, %s cores, %.1f GiB, Linux %s, Python %s; at start: "
        "CPU %.0f%% busy, load average %s"
        % (m.get("cpu", "?"), m.get("cores", "?"),
           m.get("memory_bytes", 0) / 2 ** 30, m.get("kernel", "?"),
           m.get("python", "?"), m.get("cpu_busy_pct", -1),
           " ".join("%.2f" % x for x in m.get("loadavg", []))),
        "versions: " + ", ".join("%s %s" % kv for kv in sorted(v.items())),
        "peers: " + (", ".join("%s %s" % kv for kv in doc.get("peers", {}).items())
                     or "none asked (--peer rabbit adds oslo.messaging+RabbitMQ)"),
        "vs base = value / its baseline in this run (raw pyzmq of the same "
        "shape; ring: the 10-host ring; RSS: the same process idle; "
        "in_flight: the target count); vs green = value / raw "
        "eventlet.green.zmq. Latency 3.00x = three times slower; rate "
        "0.25x = a quarter of the baseline's rate.",
        "headline: two-host rows = caller on 127.0.0.1, service on "
        "127.0.0.2, a receiver each (casts and fanout cross both; calls go "
        "direct once the service named its port); same-host rows = "
        "caller and service on one host. cpu = µs of CPU per message: "
        "cl caller, rcv receivers (all hosts'), svc service (raw: its peer)."
        + ("\npinned (--pin-hosts): " + doc["pinned"] if doc.get("pinned")
           else ""),
        "",
        headline_table(doc.get("medians", [])),
        "",
        figures_table(doc.get("medians", [])),
        "",
        targets_table(doc.get("targets", [])),
    ]
    errors = doc.get("errors", [])
    if errors:
        seen: dict[str, int] = {}
        for e in errors:
            line = "%s [%s]: %s" % (e.get("workload"), e.get("mode"),
                                    str(e.get("error") or "?").splitlines()[0])
            seen[line] = seen.get(line, 0) + 1
        parts += ["", "errors (%d):" % len(errors)]
        parts += ["  %s%s" % (line, " (in %d repeats)" % n if n > 1 else "")
                  for line, n in seen.items()]
    if doc.get("duration_s") is not None:
        parts += ["", "run time %.0f s" % doc["duration_s"]]
    return "\n".join(parts)


def chart(doc: dict, path: str) -> str | None:
    """Write the PNG (latency and throughput against the baselines);
    returns None, or why there is no chart."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib)"
    if "soak" in doc:
        _soak_chart(doc, plt, path)
        return None
    index = {(f["system"], f["mode"], f["workload"], f["metric"],
              figure_shape(f)): f["value"] for f in doc.get("medians", [])}
    series = [("raw pyzmq, two hosts", (PYZMQ, "plain", TWO_HOST)),
              ("nova-rpc-zmq threads, two hosts", (OURS, "threads", TWO_HOST)),
              ("nova-rpc-zmq eventlet, two hosts", (OURS, "eventlet", TWO_HOST)),
              ("raw pyzmq", (PYZMQ, "plain", SAME_HOST)),
              ("raw eventlet.green.zmq", (PYZMQ, "green", SAME_HOST)),
              ("nova-rpc-zmq threads", (OURS, "threads", SAME_HOST)),
              ("nova-rpc-zmq eventlet", (OURS, "eventlet", SAME_HOST)),
              ("oslo.messaging rabbit", (RABBIT, "threads", SAME_HOST)),
              ("oslo.messaging zmq:// (ours)", (OSLO_ZMQ, "threads", SAME_HOST)),
              ("oslo.messaging 8.1 zmq", (OM8ZMQ, "threads", SAME_HOST))]
    colors = ["#17becf", "#aec7e8", "#98df8a", "#7f7f7f", "#bcbd22",
              "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    lat_rows = [("call p50", "call_latency", "rt_1", "p50"),
                ("call p99", "call_latency", "rt_1", "p99")]
    tput_rows = [("calls/s 1 caller", "call_throughput_1", "rt_1"),
                 ("calls/s 16 callers", "call_throughput_16", "rt_16"),
                 ("casts/s", "cast", "push"),
                 ("fanout-3 deliveries/s", "fanout_3", "push")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.5))
    width = 0.8 / len(series)
    for i, (label, (system, mode, shape)) in enumerate(series):
        lat = [index.get((system, mode, raw if system == PYZMQ else ours, m,
                          shape)) for _, ours, raw, m in lat_rows]
        tput = [index.get((system, mode, raw if system == PYZMQ else ours,
                           "rate", shape)) for _, ours, raw in tput_rows]
        if not any(lat + tput):
            continue
        for ax, values in ((ax1, lat), (ax2, tput)):
            xs = [j + i * width for j in range(len(values))]
            ax.bar(xs, [v or 0 for v in values], width, label=label,
                   color=colors[i])
            for x, v in zip(xs, values):
                if v:
                    ax.text(x, v, "{:,.0f}".format(v), ha="center",
                            va="bottom", fontsize=6, rotation=90)
    # the targets, as dashes over their group
    from benchmarks import targets as tg
    # the two-host targets where there are two-host rows, else same-host
    two = (PYZMQ, "plain", "rt_1", "p50", TWO_HOST) in index
    lat_x, tput_of, shape = (tg.TWO_HOST_LATENCY_X_RAW,
                             tg.TWO_HOST_THROUGHPUT_OF_RAW, TWO_HOST) if two \
        else (tg.LATENCY_X_RAW, tg.THROUGHPUT_OF_RAW, SAME_HOST)
    marks = [(ax1, 0, lat_x * (index.get((PYZMQ, "plain", "rt_1", "p50",
                                          shape)) or 0)),
             (ax2, 1, tput_of * (index.get((PYZMQ, "plain", "rt_16", "rate",
                                            shape)) or 0)),
             (ax2, 2, tg.CAST_OF_RAW * (index.get((PYZMQ, "plain", "push",
                                                   "rate", SAME_HOST)) or 0)),
             (ax2, 3, tg.FANOUT_OF_RAW * (index.get((PYZMQ, "plain", "push",
                                                     "rate", SAME_HOST)) or 0))]
    for n, (ax, group, level) in enumerate(marks):
        if level:
            ax.hlines(level, group - width, group + 0.8, colors="black",
                      linestyles="dashed", linewidth=1,
                      label="target" if n == 0 else None)
    ax1.set_title("latency, one call in flight (µs, lower is better)")
    ax1.set_xticks([j + 0.4 - width / 2 for j in range(len(lat_rows))])
    ax1.set_xticklabels([r[0] for r in lat_rows])
    ax2.set_title("throughput (per second, higher is better; log scale)")
    ax2.set_yscale("log")
    ax2.set_xticks([j + 0.4 - width / 2 for j in range(len(tput_rows))])
    ax2.set_xticklabels([r[0] for r in tput_rows], fontsize=8)
    ax1.legend(fontsize=8)
    fig.suptitle("nova-rpc-zmq bench %s (medians of %d; pyzmq = raw sockets "
                 "baseline)" % (doc.get("started", ""), doc.get("repeat", 0)))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def _soak_chart(doc: dict, plt: Any, path: str) -> None:
    """RSS of every process against time, for ``--soak``."""
    fig, ax = plt.subplots(figsize=(11, 5))
    series = dict(doc["soak"]["samples"])
    for mode, samples in doc["soak"].get("callers", {}).items():
        series["caller %s" % mode] = samples
    for name, samples in sorted(series.items()):
        if samples:
            ax.plot([t for t, _ in samples], [v for _, v in samples],
                    label=name, linewidth=1.2)
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title("nova-rpc-zmq bench --soak %s: RSS under steady load"
                 % doc.get("started", ""))
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def finish(doc: dict, output_dir: str, png: bool = True) -> dict[str, Any]:
    """Add machine and versions, write JSON, text and PNG; return paths."""
    doc.setdefault("machine", machine())
    doc.setdefault("versions", versions())
    os.makedirs(output_dir, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kind = "-soak" if "soak" in doc else ""
    base = os.path.join(output_dir, "bench-%s%s%s" % (
        stamp, kind, "-smoke" if doc.get("smoke") else ""))
    text = render(doc)
    out: dict[str, Any] = {"table": text, "json": base + ".json",
                           "txt": base + ".txt", "png": None,
                           "png_problem": None}
    if png:
        problem = chart(doc, base + ".png")
        if problem is None:
            out["png"] = base + ".png"
        out["png_problem"] = problem
    doc["files"] = {k: out[k] for k in ("json", "txt", "png")}
    with open(base + ".json", "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    with open(base + ".txt", "w") as f:
        f.write(text + "\n")
    return out
