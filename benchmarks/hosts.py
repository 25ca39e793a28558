"""Processes of a benchmark run: bench hosts and caller processes.

``BenchHost`` is a ``LocalHost`` (a temp dir, a nova.conf, a receiver) whose
services are ``benchmarks.service`` processes.  ``HostsBench`` is four of
them on 127.0.0.1-4, one ring file: the callers' host and three service
hosts, so a call crosses two receivers.  ``run_python`` starts any
module of this checkout as a child process with a plan in a JSON file and
reads back the JSON result it writes, killing it when it overstays.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import Any, Callable

from nova_rpc_zmq.testing import (LocalHost, Proc, child_env, free_port,
                                  loopback_address, service_argv)

__all__ = ["START_TIMEOUT", "BenchHost", "ChildFailed", "HostsBench",
           "child_env", "run_python"]

#: Seconds a process may take to print READY / "listening on".
START_TIMEOUT = 60.0


#: CPUs of the callers' host and of the service hosts with ``--pin-hosts``
CALLERS_CPU = "0"
SERVICES_CPU = "1"


def pin_problem() -> str | None:
    """Why ``--pin-hosts`` cannot run here, or None."""
    import shutil
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return "this system cannot set a process's CPU affinity"
    if not {0, 1} <= allowed:
        return ("it needs CPUs 0 and 1 and this process may use %s"
                % ",".join(str(c) for c in sorted(allowed)))
    if shutil.which("taskset") is None:
        return "taskset (util-linux) is not installed"
    return None


def host_cpus(pin: bool, callers: bool) -> str | None:
    """The CPUs of a two-host process with ``--pin-hosts`` (the callers'
    host or a service host), None when not pinned."""
    if not pin:
        return None
    return CALLERS_CPU if callers else SERVICES_CPU


def pin_prefix(cpus: str | None) -> list[str]:
    """The command prefix holding a process (and every thread it makes) on
    ``cpus``; nothing for None."""
    return ["taskset", "-c", cpus] if cpus else []


class BenchHost(LocalHost):
    """A host of bench services: ``<topic>_<name>`` reaches one of them, the
    fanout of ``<topic>`` reaches all. ``cpus`` (``taskset -c`` syntax)
    holds every process of the host on those CPUs."""

    def __init__(self, cpus: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("host", "localhost")
        super().__init__(**kwargs)
        self.cpus = cpus
        self.receiver: Proc | None = None
        self.services: dict[str, Proc] = {}

    def _prefix(self) -> list[str]:
        return super()._prefix() + pin_prefix(self.cpus)

    def start_receiver(self, timeout: float = START_TIMEOUT, *extra: str) -> Proc:
        """Start the receiver and wait until it listens."""
        self.receiver = super().start_receiver(timeout, *extra)
        return self.receiver

    def start_bench_services(self, topic: str, names: list[str],
                             eventlet: bool,
                             timeout: float = START_TIMEOUT) -> list[Proc]:
        """Start one bench service per name (all at once), wait for READY."""
        procs = []
        for name in names:
            argv = service_argv(self.conf_path, name, topic, eventlet,
                                module="benchmarks.service")
            proc = self.spawn("bench service %s" % name, argv, "service-%s.log" % name)
            self.services[name] = proc
            procs.append(proc)
        for proc in procs:
            proc.wait_for_line("READY", timeout)
        return procs


def common_port(addresses: list[str], tries: int = 50) -> int:
    """A TCP port free on every one of ``addresses`` (hosts of one ring
    share ``rpc_zmq_port``). Raises RuntimeError after ``tries``."""
    import socket
    for _ in range(tries):
        port = free_port(addresses[0])
        try:
            for address in addresses[1:]:
                with socket.socket() as s:
                    s.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no TCP port free on all of %s after %d tries"
                       % (", ".join(addresses), tries))


class HostsBench:
    """Hosts on 127.0.0.1-4 with one ring file, each its own receiver,
    IPC dir and nova.conf: host A (``callers``, 127.0.0.1) runs the
    callers; service host i (127.0.0.2 + i) runs the i-th service of each
    topic, so ``<topic>_<names[0]>`` is on host B (127.0.0.2) and the
    fanout of ``<topic>`` reaches three services on three hosts.

    ``topics`` maps a topic to its service names (at most three). The
    ring also names host A (topic ``bench_callers``), so the services
    know it and answer its calls.
    """

    CALLERS_TOPIC = "bench_callers"

    def __init__(self, base_dir: str, topics: dict[str, list[str]],
                 service_hosts: int = 3, pin: bool = False) -> None:
        import json
        self.topics = topics
        #: with ``pin``: host A's processes (callers included) on
        #: CALLERS_CPU, the service hosts' on SERVICES_CPU
        self.callers_cpus = host_cpus(pin, True)
        self.addresses = [loopback_address(n)
                          for n in range(1, 2 + service_hosts)]
        self.port = common_port(self.addresses)
        self.ringfile = os.path.join(base_dir, "ring-two-host.json")
        ring: dict[str, list[str]] = {self.CALLERS_TOPIC: [self.addresses[0]]}
        for topic, names in topics.items():
            hosts = self.addresses[1:1 + len(names)]
            ring[topic] = hosts
            for name, address in zip(names, hosts):
                ring["%s_%s" % (topic, name)] = [address]
        with open(self.ringfile, "w") as f:
            json.dump(ring, f, indent=1)
        self.hosts = [BenchHost(host=address, address=address, port=self.port,
                                matchmaker="ring", ringfile=self.ringfile,
                                base_dir=base_dir,
                                cpus=host_cpus(pin, i == 0))
                      for i, address in enumerate(self.addresses)]

    @property
    def callers(self) -> BenchHost:
        """Host A: its nova.conf is the callers' config file."""
        return self.hosts[0]

    def start(self, eventlet: dict[str, bool],
              timeout: float = START_TIMEOUT) -> None:
        """Start every receiver, then every topic's services (``eventlet``:
        topic -> monkey-patched or not), waiting for each."""
        for host in self.hosts:
            host.start_receiver(timeout)
        for topic, names in self.topics.items():
            for name, host in zip(names, self.hosts[1:]):
                host.start_bench_services(topic, [name], eventlet[topic],
                                          timeout)

    def service(self, name: str) -> Proc:
        """The service process ``name``, on whichever host runs it."""
        for host in self.hosts[1:]:
            if name in host.services:
                return host.services[name]
        raise KeyError(name)

    def pids(self, name: str, hosts: int = 2) -> dict[str, int]:
        """The processes whose CPU a workload measures besides its caller:
        the receivers of the first ``hosts`` hosts (``receiver_a``,
        ``receiver_b``, ...) and the service ``name``."""
        out = {"receiver_%s" % chr(ord("a") + i): h.receiver.pid
               for i, h in enumerate(self.hosts[:hosts])
               if h.receiver is not None}
        out["service"] = self.service(name).pid
        return out

    def stop(self) -> None:
        """Stop every process of every host (services first)."""
        for host in reversed(self.hosts):
            host.stop()


class ChildFailed(RuntimeError):
    """A child process of the suite failed; the message holds its log tail."""


def _read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_python(module: str, plan: dict, log_dir: str, name: str,
               timeout: float, role: str | None = None,
               tick: Callable[[], None] | None = None,
               python: str | None = None,
               env: dict[str, str] | None = None,
               cpus: str | None = None) -> Any:
    """Run ``python -m module [role] --plan P --out O``; return O's JSON.

    Blocks until the process exits.  It is killed after ``timeout`` seconds,
    or when the workload it reports as ``current`` in O overstays that
    workload's ``limit``; then the partial result is returned with an error
    naming the workload (or ChildFailed raised when there is none).
    ``tick`` is called about every 0.1 s while it runs (sampling).
    ``python`` (default: this interpreter) and ``env`` (default:
    ``child_env()``) run it in another venv or environment; ``cpus``
    holds it on those CPUs (``taskset -c`` syntax).
    Raises ChildFailed with the tail of its log when it fails.
    """
    fd, plan_path = tempfile.mkstemp(prefix=name + "-", suffix=".plan.json",
                                     dir=log_dir)
    with os.fdopen(fd, "w") as f:
        json.dump(plan, f)
    base = plan_path[:-len(".plan.json")]
    out_path = base + ".out.json"
    argv = [python or sys.executable, "-m", module] + ([role] if role else []) + [
        "--plan", plan_path, "--out", out_path]
    proc = Proc(name, argv, base + ".log",
                env=child_env() if env is None else env,
                prefix=pin_prefix(cpus))
    deadline = time.monotonic() + timeout
    overstayed: dict | None = None
    try:
        while proc.popen.poll() is None:
            time.sleep(0.1)
            if tick is not None:
                tick()
            now = time.monotonic()
            if now > deadline:
                overstayed = {"workload": "(all)", "limit": timeout}
                break
            progress = _read_json(out_path)
            current = (progress or {}).get("current")
            if current and current.get("limit") and \
                    time.time() - current["started"] > current["limit"]:
                overstayed = current
                break
        if overstayed is not None:
            proc.kill()
            result = _read_json(out_path)
            if result is None:
                raise ChildFailed("%s did not finish within %.0fs:\n%s"
                                  % (name, timeout, proc.output()[-4000:]))
            result.setdefault("errors", []).append({
                "workload": overstayed.get("workload"),
                "mode": plan.get("mode"),
                "error": "did not finish within %.0fs; the process was "
                         "killed (its log tail is in the JSON)"
                         % (overstayed.get("limit") or 0),
                "traceback": proc.output()[-2000:]})
            return result
        code = proc.stop()
        result = _read_json(out_path)
        if code != 0 or result is None:
            raise ChildFailed("%s exited with %s:\n%s"
                              % (name, code, proc.output()[-4000:]))
        return result
    finally:
        if proc.popen.poll() is None:
            proc.kill()
