"""The oslo.messaging peers: the same workloads over oslo.messaging's API.

    python -m benchmarks.rabbit server --url URL --topic T --name N
           [--config-file F] [--om8-shims]
    python -m benchmarks.rabbit client --plan plan.json --out result.json

The programs are generic oslo.messaging programs: the transport URL picks
the driver.  The suite runs them over RabbitMQ (system ``rabbit``), over
this project's driver on ``zmq://127.0.0.1`` (system ``oslo-zmq``, its
registry in a private temp dir) and, in the ``.venv-om8zmq`` venv, over
oslo.messaging 8.1's own zmq driver (system ``om8zmq``; ``--om8-shims``,
or ``"om8_shims"`` in the plan, applies what 8.1 needs on this Python, see
``apply_om8_shims``).  They import nothing of ``nova_rpc_zmq`` at module
level, so that the om8zmq venv can run them.

``RabbitBroker`` starts a private ``rabbitmq-server`` (Debian package) with
its own epmd, ports, node name, mnesia and log directories under a temp
dir, and stops only what it started.  ``broker_problem()`` says in one line
why the peer cannot run here (no package, no oslo.messaging), or None.

The servers are oslo.messaging RPC servers with the threading executor,
each with a notification listener on ``<topic>_notify``; the client uses
native threads (the figures are of mode ``threads``).
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
        from nova_rpc_zmq.testing import Proc, free_port
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

#: the argument of every ``echo`` call: a small dict, as Nova's calls carry
#: (the same value as ``benchmarks.workloads.SMALL``, which imports
#: nova_rpc_zmq and so cannot be imported in the om8zmq venv)
SMALL = {"instance_uuid": "3f0c8f3e-7d6f-4a51-9c7b-0d3b2a1c9e55",
         "host": "compute-017"}
#: seconds every server has to answer a first call (``wait_ready``), and
#: the timeout of each try: oslo.messaging 8.1's zmq client loses a call
#: made before the server's registration reached its matchmaker
READY_TIMEOUT = 45.0
READY_TRY_TIMEOUT = 2
#: seconds a workload's call may take before it counts as failed: far
#: above any loopback call, and below the smoke profile's slack, so that a
#: driver that loses calls (8.1's zmq with 16 threaded callers) fails that
#: workload with MessagingTimeout instead of having its process killed
#: with the workloads after it
CALL_TIMEOUT = 10
#: the notification listeners' topic is the RPC topic with this suffix
NOTIFY_SUFFIX = "_notify"
#: names Python 3.10 removed from ``collections`` that oslo.messaging 8.1
#: (and the oslo libraries of its time) still import from there
_ABC_NAMES = ("Mapping", "MutableMapping", "Sequence", "MutableSequence",
              "Set", "MutableSet", "Iterable", "Callable", "Hashable")


def apply_om8_shims() -> None:
    """Make oslo.messaging 8.1's zmq driver run here; call before
    importing ``oslo_messaging``.

    8.1 predates Python 3.10: alias ``collections.Mapping`` and friends to
    ``collections.abc``.  And its own ``Transport._send`` passes
    ``call_monitor_timeout`` to a ``ZmqDriver.send`` that does not take it:
    wrap ``send`` to drop that keyword.  Applied in the bench process, not
    in 8.1's files.
    """
    import collections
    import collections.abc
    for name in _ABC_NAMES:
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
    from oslo_messaging._drivers import impl_zmq
    send = impl_zmq.ZmqDriver.send
    if getattr(send, "_bench_shim", False):
        return

    def send_without_monitor(self: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("call_monitor_timeout", None)
        return send(self, *args, **kwargs)

    send_without_monitor._bench_shim = True  # type: ignore[attr-defined]
    impl_zmq.ZmqDriver.send = send_without_monitor


def _parse_conf(config_file: str | None) -> Any:
    from oslo_config import cfg
    # the process's global CONF: oslo.messaging registers options there
    # (tracing, rabbit, zmq) that its drivers read back
    cfg.CONF(["--config-file", config_file] if config_file else [],
             project="nova-rpc-zmq-bench")
    return cfg.CONF


def _transport(url: str, config_file: str | None = None) -> Any:
    import oslo_messaging
    return oslo_messaging.get_rpc_transport(_parse_conf(config_file), url=url)


def server(url: str, topic: str, name: str,
           config_file: str | None = None) -> int:
    """An oslo.messaging RPC server with the bench methods and a
    notification listener on ``<topic>_notify``, until SIGTERM."""
    import oslo_messaging
    transport = _transport(url, config_file)
    notify_transport = oslo_messaging.get_notification_transport(
        _parse_conf(config_file), url=url)
    tallies: dict[str, list[float]] = {}
    lock = threading.Lock()

    def count(run: str) -> None:
        now = time.monotonic()
        with lock:
            entry = tallies.setdefault(run, [0, now, now])
            entry[0] += 1
            entry[2] = now

    class Endpoint:
        target = oslo_messaging.Target(version="1.0")

        def echo(self, ctxt: Any, value: Any = None) -> Any:
            return value

        def tally(self, ctxt: Any, run: str = "") -> None:
            count(run)

        def tally_stats(self, ctxt: Any, run: str = "") -> dict:
            with lock:
                entry = tallies.get(run)
            if entry is None:
                return {"count": 0, "first": None, "last": None}
            return {"count": int(entry[0]), "first": entry[1], "last": entry[2]}

    class NotifyEndpoint:
        """Counts ``info`` notifications under ``notify:<run>``."""

        def info(self, ctxt: Any, publisher_id: str, event_type: str,
                 payload: Any, metadata: Any) -> None:
            count("notify:%s" % (payload or {}).get("run", ""))

    target = oslo_messaging.Target(topic=topic, server=name)
    srv = oslo_messaging.get_rpc_server(transport, target, [Endpoint()],
                                        executor="threading")
    listener = oslo_messaging.get_notification_listener(
        notify_transport, [oslo_messaging.Target(topic=topic + NOTIFY_SUFFIX)],
        [NotifyEndpoint()], executor="threading")
    srv.start()
    listener.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    sys.stdout.write("READY %s %d\n" % (name, os.getpid()))
    sys.stdout.flush()
    while not stop.wait(0.2):
        pass
    for running in (listener, srv):
        running.stop()
        running.wait()
    notify_transport.cleanup()
    transport.cleanup()
    return 0


class RabbitClient:
    """oslo.messaging's side of the workloads (native threads), over any
    transport URL; figures carry ``system``."""

    def __init__(self, url: str, topic: str, servers: list[str],
                 system: str = RABBIT,
                 config_file: str | None = None) -> None:
        import oslo_messaging
        self.om = oslo_messaging
        self.system = system
        self.url = url
        self.transport = _transport(url, config_file)
        self.notify_transport = oslo_messaging.get_notification_transport(
            _parse_conf(config_file), url=url)
        self.topic = topic
        self.servers = servers
        target = oslo_messaging.Target(topic=topic, version="1.0")
        # get_rpc_client came after 8.1; RPCClient is what 8.1 has
        make = getattr(oslo_messaging, "get_rpc_client", None) or \
            oslo_messaging.RPCClient
        self.client = make(self.transport, target, timeout=CALL_TIMEOUT)
        self.one = self.client.prepare(server=servers[0])

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until every server answered a call (each try with a short
        timeout); raises RuntimeError naming the first that did not."""
        deadline = time.monotonic() + timeout
        for name in self.servers:
            one = self.client.prepare(server=name, timeout=READY_TRY_TIMEOUT)
            while True:
                try:
                    one.call({}, "echo", value=SMALL)
                    break
                except self.om.MessagingTimeout:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            "oslo.messaging server %s did not answer over %s "
                            "within %.0fs" % (name, self.url, timeout))

    def _warm(self, n: int = 20) -> None:
        for _ in range(n):
            self.one.call({}, "echo", value=SMALL)

    def call_latency(self, window: float, count: int) -> list[dict]:
        self._warm(50)
        samples: list[float] = []
        win = Window(window, count)
        clock = time.perf_counter
        while win.take():
            t = clock()
            self.one.call({}, "echo", value=SMALL)
            samples.append((clock() - t) * 1e6)
        return latency_figures(self.system, MODE, "call_latency", samples,
                               win.elapsed)

    def call_throughput(self, callers: int, window: float, count: int,
                        pids: dict[str, int] | None = None) -> list[dict]:
        self._warm()
        cpu = CpuMeter(pids)
        samples, elapsed = concurrent_calls(
            callers, Window(window, count),
            lambda: self.one.call({}, "echo", value=SMALL), window + 120)
        name = "call_throughput_%d" % callers
        return latency_figures(self.system, MODE, name, samples, elapsed,
                               callers=callers) + \
            cpu.figures(self.system, MODE, name, len(samples), callers=callers)

    def _wait(self, servers: list[str], run: str, expected: int,
              timeout: float, total: bool = False) -> list[dict]:
        """Each server's tally of ``run`` once each has ``expected`` (or,
        with ``total``, all together have), or at ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            stats = [self.client.prepare(server=s).call({}, "tally_stats",
                                                        run=run)
                     for s in servers]
            counts = [s["count"] for s in stats]
            done = sum(counts) >= expected if total else \
                all(c >= expected for c in counts)
            if done or time.monotonic() > deadline:
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
        cpu_figs = cpu.figures(self.system, MODE, "cast", sent)
        got = stats["count"]
        rate = got / (stats["last"] - t0) if got else 0.0
        return [figure(self.system, MODE, "cast", "rate", rate, "1/s",
                       sent=sent, delivered=got),
                figure(self.system, MODE, "cast", "lost", sent - got, "msgs",
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
        return [figure(self.system, MODE, name, "rate", rate, "1/s",
                       sent=sent, delivered=got, services=len(self.servers)),
                figure(self.system, MODE, name, "lost", expected - got,
                       "msgs", "lower", sent=sent, expected=expected,
                       delivered=got)]

    def notify(self, window: float, count: int,
               drain_timeout: float = 60.0) -> list[dict]:
        """``info`` notifications to ``<topic>_notify`` (the servers'
        listeners share them): notifications/s counted where they arrive."""
        self._warm(10)
        run = uuid.uuid4().hex
        notifier = self.om.Notifier(self.notify_transport,
                                    publisher_id="bench.%d" % os.getpid(),
                                    driver="messaging",
                                    topics=[self.topic + NOTIFY_SUFFIX])
        win = Window(window, count)
        sent = 0
        t0 = time.monotonic()
        while win.take():
            notifier.info({}, "bench.tally", {"run": run})
            sent += 1
        stats = self._wait(self.servers, "notify:" + run, sent,
                           drain_timeout, total=True)
        got = sum(s["count"] for s in stats)
        last = max((s["last"] for s in stats if s["last"]), default=t0)
        # oslo.messaging 8.1's zmq driver hands some notifications to more
        # than one listener of the topic: a copy is counted apart, not as
        # a delivery (nor as a negative loss)
        once = min(got, sent)
        rate = once / (last - t0) if once else 0.0
        return [figure(self.system, MODE, "notify", "rate", rate, "1/s",
                       sent=sent, delivered=got),
                figure(self.system, MODE, "notify", "lost", sent - once,
                       "msgs", "lower", sent=sent, delivered=got),
                figure(self.system, MODE, "notify", "duplicated",
                       got - once, "msgs", "lower", sent=sent,
                       delivered=got)]

    def close(self) -> None:
        self.notify_transport.cleanup()
        self.transport.cleanup()


def client(plan_path: str, out_path: str) -> int:
    """Run the plan's workloads over its URL; write the figures."""
    from benchmarks.client import run_plan
    with open(plan_path) as f:
        plan = json.load(f)
    if plan.get("om8_shims"):
        apply_om8_shims()
    rc = RabbitClient(plan["url"], plan["topic"], plan["servers"],
                      plan.get("system", RABBIT), plan.get("config_file"))
    try:
        rc.wait_ready()
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
    s.add_argument("--config-file")
    s.add_argument("--om8-shims", action="store_true")
    c = sub.add_parser("client")
    c.add_argument("--plan", required=True)
    c.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.role == "server":
        if args.om8_shims:
            apply_om8_shims()
        return server(args.url, args.topic, args.name, args.config_file)
    return client(args.plan, args.out)


if __name__ == "__main__":
    sys.exit(main())
