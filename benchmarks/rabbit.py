"""The RabbitMQ peer: oslo.messaging's rabbit driver on the same workloads.

    python -m benchmarks.rabbit server --url URL --topic T --name N
    python -m benchmarks.rabbit client --plan plan.json --out result.json

``RabbitBroker`` starts a private ``rabbitmq-server`` (Debian package) with
its own epmd, ports, node name, mnesia and log directories under a temp
dir, and stops only what it started.  ``broker_problem()`` says in one line
why the peer cannot run here (no package, no oslo.messaging), or None.

The servers are oslo.messaging RPC servers with the threading executor;
the client uses native threads (the rabbit figures are of mode ``threads``).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

from benchmarks.measure import (RABBIT, CpuMeter, Window, concurrent_calls, figure,
                                latency_figures)
from nova_rpc_zmq.testing import free_port

RABBIT_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
#: Seconds the broker may take to accept AMQP connections.
BROKER_START_TIMEOUT = 90.0
MODE = "threads"


def _epmd() -> str | None:
    found = shutil.which("epmd") or sorted(glob.glob("/usr/lib/erlang/erts-*/bin/epmd"))
    if isinstance(found, list):
        return found[-1] if found else None
    return found


def broker_problem() -> str | None:
    """Why the RabbitMQ peer cannot run on this machine, or None."""
    if not os.path.exists(RABBIT_SERVER):
        return ("%s not found: install it with `apt-get install "
                "rabbitmq-server`" % RABBIT_SERVER)
    if _epmd() is None:
        return "epmd (Erlang) not found: install the erlang-base package"
    import importlib.util
    # found, not imported: importing it here would pull eventlet into the
    # suite's own process for nothing
    if importlib.util.find_spec("oslo_messaging") is None:
        return ("oslo.messaging is not installed: `pip install "
                "oslo.messaging` into this environment")
    return None


def rabbit_version() -> str:
    """The installed rabbitmq-server package version ('' if unknown)."""
    try:
        with open("/var/lib/dpkg/status") as f:
            text = f.read()
    except OSError:
        return ""
    block = text.split("Package: rabbitmq-server\n", 1)
    if len(block) < 2:
        return ""
    for line in block[1].split("\n\n", 1)[0].splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return ""


class RabbitBroker:
    """A private RabbitMQ node on free loopback ports, in a temp dir."""

    def __init__(self, base_dir: str) -> None:
        from nova_rpc_zmq.testing import Proc
        self._proc_cls = Proc
        self.dir = tempfile.mkdtemp(prefix="rabbit-", dir=base_dir)
        self.port = free_port()
        self.epmd_port = free_port()
        self.dist_port = free_port()
        self.node = "bench%d@localhost" % os.getpid()
        self.url = "rabbit://guest:guest@127.0.0.1:%d/" % self.port
        self.procs: list[Any] = []

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": self.dir,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": os.path.join(self.dir, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(self.dir, "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(self.dir, "plugins"),
            "RABBITMQ_CONFIG_FILE": os.path.join(self.dir, "rabbitmq"),
            "RABBITMQ_PID_FILE": os.path.join(self.dir, "rabbit.pid"),
        })
        return env

    def start(self) -> None:
        """Start epmd and the node; wait for AMQP. Raises RuntimeError with
        the reason and the log tail when it does not come up."""
        with open(os.path.join(self.dir, "plugins"), "w") as f:
            f.write("[].\n")
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
            f.write("listeners.tcp.default = 127.0.0.1:%d\n" % self.port)
        env = self._env()
        epmd = self._proc_cls("epmd", [_epmd() or "epmd", "-port",
                                       str(self.epmd_port), "-address",
                                       "127.0.0.1"],
                              os.path.join(self.dir, "epmd.log"), env=env)
        self.procs.append(epmd)
        proc = self._proc_cls("rabbitmq-server", [RABBIT_SERVER],
                              os.path.join(self.dir, "server.log"), env=env)
        self.procs.append(proc)
        deadline = time.monotonic() + BROKER_START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise RuntimeError("rabbitmq-server exited with %s:\n%s"
                                   % (proc.popen.returncode,
                                      proc.output()[-2000:]))
            if "Starting broker... completed" in proc.output() and \
                    self._amqp_ready():
                return
            time.sleep(0.25)
        raise RuntimeError("rabbitmq-server did not accept AMQP on port %d "
                           "within %.0fs:\n%s" % (self.port,
                                                  BROKER_START_TIMEOUT,
                                                  proc.output()[-2000:]))

    def _amqp_ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 1) as s:
                s.sendall(b"AMQP\x00\x00\x09\x01")
                s.settimeout(2)
                return len(s.recv(8)) > 0
        except OSError:
            return False

    def pid(self) -> int | None:
        """The Erlang VM's pid (for its RSS), if it wrote its pid file."""
        try:
            with open(os.path.join(self.dir, "rabbit.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """Stop the node and epmd (their process groups), remove the dir."""
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                try:
                    os.killpg(proc.popen.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            proc.stop(timeout=20)
            try:
                os.killpg(proc.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


# -- oslo.messaging processes ----------------------------------------------

def _transport(url: str) -> Any:
    import oslo_messaging
    from oslo_config import cfg
    # the process's global CONF: oslo.messaging registers options there
    # (tracing, rabbit) that its drivers read back
    cfg.CONF([], project="nova-rpc-zmq-bench")
    return oslo_messaging.get_rpc_transport(cfg.CONF, url=url)


def server(url: str, topic: str, name: str) -> int:
    """An oslo.messaging RPC server with the bench methods, until SIGTERM."""
    import oslo_messaging
    transport = _transport(url)
    tallies: dict[str, list[float]] = {}
    lock = threading.Lock()

    class Endpoint:
        target = oslo_messaging.Target(version="1.0")

        def echo(self, ctxt: Any, value: Any = None) -> Any:
            return value

        def tally(self, ctxt: Any, run: str = "") -> None:
            now = time.monotonic()
            with lock:
                entry = tallies.setdefault(run, [0, now, now])
                entry[0] += 1
                entry[2] = now

        def tally_stats(self, ctxt: Any, run: str = "") -> dict:
            with lock:
                entry = tallies.get(run)
            if entry is None:
                return {"count": 0, "first": None, "last": None}
            return {"count": int(entry[0]), "first": entry[1], "last": entry[2]}

    target = oslo_messaging.Target(topic=topic, server=name)
    srv = oslo_messaging.get_rpc_server(transport, target, [Endpoint()],
                                        executor="threading")
    srv.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    sys.stdout.write("READY %s %d\n" % (name, os.getpid()))
    sys.stdout.flush()
    while not stop.wait(0.2):
        pass
    srv.stop()
    srv.wait()
    transport.cleanup()
    return 0


class RabbitClient:
    """oslo.messaging's side of the workloads (native threads)."""

    def __init__(self, url: str, topic: str, servers: list[str]) -> None:
        import oslo_messaging
        self.om = oslo_messaging
        self.transport = _transport(url)
        self.topic = topic
        self.servers = servers
        target = oslo_messaging.Target(topic=topic, version="1.0")
        self.client = oslo_messaging.get_rpc_client(self.transport, target,
                                                    timeout=60)
        self.one = self.client.prepare(server=servers[0])

    def _warm(self, n: int = 20) -> None:
        from benchmarks.workloads import SMALL
        for _ in range(n):
            self.one.call({}, "echo", value=SMALL)

    def call_latency(self, window: float, count: int) -> list[dict]:
        from benchmarks.workloads import SMALL
        self._warm(50)
        samples: list[float] = []
        win = Window(window, count)
        clock = time.perf_counter
        while win.take():
            t = clock()
            self.one.call({}, "echo", value=SMALL)
            samples.append((clock() - t) * 1e6)
        return latency_figures(RABBIT, MODE, "call_latency", samples,
                               win.elapsed)

    def call_throughput(self, callers: int, window: float, count: int,
                        pids: dict[str, int] | None = None) -> list[dict]:
        from benchmarks.workloads import SMALL
        self._warm()
        cpu = CpuMeter(pids)
        samples, elapsed = concurrent_calls(
            callers, Window(window, count),
            lambda: self.one.call({}, "echo", value=SMALL), window + 120)
        name = "call_throughput_%d" % callers
        return latency_figures(RABBIT, MODE, name, samples, elapsed,
                               callers=callers) + \
            cpu.figures(RABBIT, MODE, name, len(samples), callers=callers)

    def _wait(self, servers: list[str], run: str, expected: int,
              timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            stats = [self.client.prepare(server=s).call({}, "tally_stats",
                                                        run=run)
                     for s in servers]
            if all(s["count"] >= expected for s in stats) or \
                    time.monotonic() > deadline:
                return stats
            time.sleep(0.05)

    def cast(self, window: float, count: int, drain_timeout: float = 60.0,
             pids: dict[str, int] | None = None) -> list[dict]:
        self._warm(10)
        run = uuid.uuid4().hex
        cpu = CpuMeter(pids)
        win = Window(window, count)
        sent = 0
        t0 = time.monotonic()
        while win.take():
            self.one.cast({}, "tally", run=run)
            sent += 1
        stats = self._wait(self.servers[:1], run, sent, drain_timeout)[0]
        cpu_figs = cpu.figures(RABBIT, MODE, "cast", sent)
        got = stats["count"]
        rate = got / (stats["last"] - t0) if got else 0.0
        return [figure(RABBIT, MODE, "cast", "rate", rate, "1/s", sent=sent,
                       delivered=got),
                figure(RABBIT, MODE, "cast", "lost", sent - got, "msgs",
                       "lower", sent=sent, delivered=got)] + cpu_figs

    def fanout(self, window: float, count: int,
               drain_timeout: float = 60.0) -> list[dict]:
        self._warm(10)
        run = uuid.uuid4().hex
        fan = self.client.prepare(fanout=True)
        win = Window(window, count)
        sent = 0
        t0 = time.monotonic()
        while win.take():
            fan.cast({}, "tally", run=run)
            sent += 1
        stats = self._wait(self.servers, run, sent, drain_timeout)
        got = sum(s["count"] for s in stats)
        last = max((s["last"] for s in stats if s["last"]), default=t0)
        rate = got / (last - t0) if got else 0.0
        name = "fanout_%d" % len(self.servers)
        expected = sent * len(self.servers)
        return [figure(RABBIT, MODE, name, "rate", rate, "1/s", sent=sent,
                       delivered=got, services=len(self.servers)),
                figure(RABBIT, MODE, name, "lost", expected - got, "msgs",
                       "lower", sent=sent, expected=expected, delivered=got)]

    def close(self) -> None:
        self.transport.cleanup()


def client(plan_path: str, out_path: str) -> int:
    """Run the plan's workloads against the broker; write the figures."""
    from benchmarks.client import run_plan
    with open(plan_path) as f:
        plan = json.load(f)
    rc = RabbitClient(plan["url"], plan["topic"], plan["servers"])
    try:
        run_plan(plan["workloads"], out_path, MODE,
                 lambda name, **params: getattr(rc, name)(**params))
    finally:
        rc.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``server`` or ``client``; see the module docstring."""
    parser = argparse.ArgumentParser(prog="benchmarks.rabbit")
    sub = parser.add_subparsers(dest="role", required=True)
    s = sub.add_parser("server")
    s.add_argument("--url", required=True)
    s.add_argument("--topic", required=True)
    s.add_argument("--name", required=True)
    c = sub.add_parser("client")
    c.add_argument("--plan", required=True)
    c.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.role == "server":
        return server(args.url, args.topic, args.name)
    return client(args.plan, args.out)


if __name__ == "__main__":
    sys.exit(main())
