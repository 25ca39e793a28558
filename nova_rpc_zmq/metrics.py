"""Counters, and their exposition in the Prometheus text format 0.0.4.

Every drop, refusal and late reply is counted in a ``Counters`` object, a
named bag of integers (names are dotted: ``dropped.no_consumer``,
``replies.late``). ``render`` turns ``Family`` objects into the text a
Prometheus server scrapes; ``counter_families`` maps a ``Counters`` onto
families: ``<subsystem>.<name>`` becomes ``nova_rpc_zmq_<subsystem>_<name>_total``
and a name of the form ``<head>dropped.<reason>`` (or ``refused.<reason>``)
becomes the family ``<head>dropped`` with a ``reason`` label.
``process_families`` adds ``process_start_time_seconds`` and
``nova_rpc_zmq_build_info``. ``parse`` reads the text back (tests, `status`).
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable

#: Content-Type of the Prometheus text exposition format 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Prefix of every metric of ours.
NAMESPACE = "nova_rpc_zmq"
#: Counter name segments that take the rest of the name as a label.
LABELLED = {"dropped": "reason", "refused": "reason"}

_IMPORTED_AT = time.time()
_BAD_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_:]")


class Counters:
    """Named integer counters, grouped by a prefix (the subsystem).

    Thread-safe and green-safe: ``incr(name)`` advances an
    ``itertools.count``, one C call that the GIL never splits, so
    concurrent increments lose nothing without a lock on the hot path;
    ``incr(name, n)`` with n > 1 (rare: batches) takes a lock. Reading
    (``get``, ``snapshot``) takes no lock and may run in any thread.
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._counts: dict[str, itertools.count] = {}
        self._added: dict[str, int] = {}
        self._lock = threading.Lock()

    def incr(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` (a non-negative int) to counter ``name``."""
        if amount == 1:
            count = self._counts.get(name)
            if count is None:
                # setdefault is atomic: two racing first increments share one
                count = self._counts.setdefault(name, itertools.count())
            next(count)
        elif amount:
            with self._lock:
                self._added[name] = self._added.get(name, 0) + amount

    def get(self, name: str) -> int:
        """The value of counter ``name`` (0 when never incremented)."""
        count = self._counts.get(name)
        return (_count_value(count) if count is not None else 0) \
            + self._added.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        """Every counter's value, as a new dict."""
        # dict() copies under the GIL in one C call: no lock needed
        counts, added = dict(self._counts), dict(self._added)
        out = {name: _count_value(c) for name, c in counts.items()}
        for name, n in added.items():
            out[name] = out.get(name, 0) + n
        return out


def _count_value(count: itertools.count) -> int:
    """How many times ``next`` was called on a count started at 0."""
    # repr is the one public way to read a count without advancing it
    return int(repr(count)[6:-1])


@dataclass
class Family:
    """One metric family: a name, a type, a help line and its samples."""

    name: str
    kind: str  # "counter" or "gauge"
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> "Family":
        self.samples.append((labels, value))
        return self


def metric_name(*parts: str) -> str:
    """``nova_rpc_zmq_<parts joined by _>`` with invalid characters as ``_``."""
    return _BAD_NAME_CHARS.sub("_", "_".join((NAMESPACE,) + parts))


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def sample_key(name: str, labels: dict[str, str] | None = None) -> str:
    """A sample as written on its line: ``name{a="x",b="y"}`` (labels sorted)."""
    if not labels:
        return name
    return "%s{%s}" % (name, ",".join('%s="%s"' % (k, _escape(str(v)))
                                      for k, v in sorted(labels.items())))


def render(families: Iterable[Family]) -> str:
    """The Prometheus text format 0.0.4 of ``families`` (HELP, TYPE, samples)."""
    lines: list[str] = []
    for fam in families:
        lines.append("# HELP %s %s" % (fam.name,
                                       fam.help.replace("\\", r"\\").replace("\n", " ")))
        lines.append("# TYPE %s %s" % (fam.name, fam.kind))
        for labels, value in fam.samples:
            lines.append("%s %s" % (sample_key(fam.name, labels), _number(value)))
    return "\n".join(lines) + "\n"


def counter_families(counters: Counters, helps: dict[str, str] | None = None,
                     always: Iterable[str] = ()) -> list[Family]:
    """Families of the counters of ``counters`` (subsystem: its prefix).

    ``helps``: family name (without namespace and ``_total``, e.g.
    ``dropped``) -> help text. ``always``: counter names shown even at 0,
    so that a rate can be taken from the first scrape on.
    """
    helps = helps or {}
    values = dict.fromkeys(always, 0)
    values.update(counters.snapshot())
    families: dict[str, Family] = {}
    for name in sorted(values):
        base, labels = _split(name)
        full = metric_name(*([counters.prefix] if counters.prefix else []),
                           base.replace(".", "_")) + "_total"
        fam = families.get(full)
        if fam is None:
            fam = families[full] = Family(
                full, "counter", helps.get(base) or "Count of %s%s events."
                % ("%s." % counters.prefix if counters.prefix else "", base))
        fam.add(values[name], **labels)
    return list(families.values())


def counter_key(subsystem: str, name: str) -> str:
    """The sample key (``sample_key``) of counter ``name`` of ``subsystem``:
    ``("receiver", "dropped.bad_json")`` ->
    ``nova_rpc_zmq_receiver_dropped_total{reason="bad_json"}``."""
    base, labels = _split(name)
    return sample_key(metric_name(subsystem, base.replace(".", "_")) + "_total",
                      labels)


def _split(name: str) -> tuple[str, dict[str, str]]:
    """``consumer.dropped.bad_call`` -> (``consumer.dropped``, reason=bad_call)."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        label = LABELLED.get(part)
        if label:
            return ".".join(parts[:i + 1]), {label: ".".join(parts[i + 1:])}
    return name, {}


def process_start_time() -> float:
    """When this process started (seconds since the epoch): from /proc where
    there is one, else when this module was imported."""
    try:
        with open("/proc/self/stat", "rb") as f:
            # the command name may hold spaces: fields count after its ')'
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f
                        if line.startswith(b"btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED_AT


def process_families() -> list[Family]:
    """``process_start_time_seconds`` and ``nova_rpc_zmq_build_info``."""
    from nova_rpc_zmq import __version__
    import platform
    return [
        Family("process_start_time_seconds", "gauge",
               "Start time of the process since unix epoch in seconds."
               ).add(round(process_start_time(), 2)),
        Family(metric_name("build_info"), "gauge",
               "Always 1; the labels say which version runs.").add(
                   1, version=__version__, python=platform.python_version()),
    ]


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?)\s+(\S+)(?:\s+\d+)?$")


def parse(text: str) -> dict[str, float]:
    """Sample key (``sample_key``) -> value of every sample line of ``text``
    as ``render`` writes it (used by tests and scripts)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and not line.startswith("#"):
            value = float(m.group(2))
            out[m.group(1)] = int(value) if value.is_integer() else value
    return out
