"""The whole benchmark run: processes, repeats, medians and ratios.

``run_suite(options)`` starts a bench host (receiver plus three eventlet and
three threaded bench services), the two-host bench (``HostsBench``: the
callers' host 127.0.0.1 and three service hosts 127.0.0.2-4, each its own
receiver; one service of each mode per service host), the raw pyzmq peers
(on 127.0.0.1 for the same-host rows, on 127.0.0.2 for the two-host rows)
and, when asked and
possible, three oslo.messaging servers per oslo.messaging system: our
driver on ``zmq://127.0.0.1`` (``--driver oslo``, system ``oslo-zmq``),
oslo.messaging 8.1's zmq driver in its own venv with a private Redis
(``--peer om8zmq``) and the rabbit driver on a private RabbitMQ (``--peer
rabbit``).  Then for each repeat it runs, interleaved so drift hits every
system alike: the ring scale, the raw baselines (plain, green) of each
shape, our two-host and same-host workloads per mode, the oslo.messaging
systems' workloads, and the memory
workload on a fresh host per mode.  It returns the result document that
``benchmarks.report`` prints and saves.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from typing import Any, Callable

from benchmarks import measure, rawzmq, ringscale
from benchmarks.hosts import (CALLERS_CPU, SERVICES_CPU, BenchHost, ChildFailed,
                              HostsBench, child_env, host_cpus, pin_prefix,
                              run_python)
from benchmarks.measure import (MIB, OM8ZMQ, OSLO_ZMQ, OURS, PYZMQ, RABBIT, SAME_HOST,
                                TWO_HOST)

MODES = ("eventlet", "threads")
SERVICES = {"eventlet": ("bench_ev", ["ev1", "ev2", "ev3"]),
            "threads": ("bench_th", ["th1", "th2", "th3"])}
RABBIT_TOPIC = "bench_rabbit"
RABBIT_SERVERS = ["r1", "r2", "r3"]
#: the peers ``--peer`` takes
PEERS = ("rabbit", "om8zmq")
#: what ``--pin-hosts`` did, for the report
PINNED = ("two-host rows: the callers' host (callers, its receiver, the raw "
          "client) held on CPU %s, the service hosts (receivers, services, "
          "the raw peer) on CPU %s; same-host rows free"
          % (CALLERS_CPU, SERVICES_CPU))
#: our oslo.messaging driver on one host: the registry dir (a private temp
#: dir of the run) is how its servers find each other
OSLO_ZMQ_URL = "zmq://127.0.0.1"
REGISTRY_ENV = "NOVA_RPC_ZMQ_OSLO_REGISTRY_DIR"
#: oslo.messaging 8.1's zmq driver answers concurrent threaded callers
#: about once a second each (16 callers: ~16 calls/s, p50 ~1 s); with 64
#: the window's last calls outlast the workload's limit, and the child
#: killed then loses the workloads after it
OM8ZMQ_MAX_CALLERS = 16
#: seconds an oslo.messaging server may take to print READY
OSLO_SERVER_START_TIMEOUT = 90.0


@dataclasses.dataclass
class Profile:
    """Windows (seconds) and count bounds of every workload."""

    latency: tuple[float, int] = (2.0, 20000)
    throughput: tuple[float, int] = (2.0, 100000)
    callers: tuple[int, ...] = (1, 16, 64)
    cast: tuple[float, int] = (1.5, 30000)
    fanout: tuple[float, int] = (1.5, 15000)
    multicall: tuple[float, int] = (1.5, 2000)
    multicall_values: int = 10
    payload_sizes: tuple[int, ...] = (100, 10 * 1024, MIB)
    payload_window: float = 1.5
    payload_counts: tuple[int, ...] = (20000, 10000, 300)
    raw: tuple[float, int] = (2.0, 200000)
    in_flight: int = 10000
    topics: int = 1000
    hold: float = 12.0
    ring_sizes: tuple[int, ...] = (10, 5000)
    ring_calls: int = 100000
    drain_timeout: float = 60.0
    #: seconds a workload may run beyond its window before it is killed
    slack: float = 45.0
    #: the same for one size of the payload sweep (a caller that hangs on
    #: a large message should not cost the run much)
    payload_slack: float = 20.0


SMOKE = Profile(latency=(0.3, 300), throughput=(0.3, 2000),
                cast=(0.3, 1000), fanout=(0.3, 300), multicall=(0.3, 50),
                payload_window=0.3, payload_counts=(200, 100, 5),
                raw=(0.3, 2000), in_flight=300, topics=50, hold=2.5,
                ring_calls=5000, drain_timeout=20.0, slack=15.0,
                payload_slack=10.0)


@dataclasses.dataclass
class Options:
    """What the command line asked for."""

    repeat: int = 3
    modes: tuple[str, ...] = MODES
    #: of PEERS, each run when it can start (else SKIPPED with the reason)
    peers: tuple[str, ...] = ()
    #: ``--driver oslo``: our oslo.messaging driver too (system oslo-zmq)
    oslo_driver: bool = False
    #: ``--pin-hosts``: each two-host row's callers' host (caller, its
    #: receiver, the raw client) on CPU 0, its service hosts (receivers,
    #: services, the raw peer) on CPU 1; the same-host rows stay free
    pin_hosts: bool = False
    smoke: bool = False
    log: Callable[[str], None] = print

    @property
    def profile(self) -> Profile:
        return SMOKE if self.smoke else Profile()


# -- plans ------------------------------------------------------------------

def _limit(window: float, prof: Profile, drain: bool = False) -> float:
    return window + prof.slack + (prof.drain_timeout if drain else 0.0)


def ours_plan(mode: str, conf: str, prof: Profile,
              pids: dict[str, int] | None = None) -> dict:
    """Our workloads for one mode, against the shared bench host; ``pids``
    (receiver, service) are the processes whose CPU is measured too."""
    topic, names = SERVICES[mode]
    one = "%s_%s" % (topic, names[0])
    wl: list[dict] = [dict(name="call_latency", topic=one,
                           window=prof.latency[0], count=prof.latency[1],
                           limit=_limit(prof.latency[0], prof))]
    for n in prof.callers:
        wl.append(dict(name="call_throughput", label="call_throughput_%d" % n,
                       topic=one, callers=n, pids=pids,
                       window=prof.throughput[0], count=prof.throughput[1],
                       limit=_limit(prof.throughput[0], prof)))
    # the same calls through the receiver, as calls from another host go
    wl += [dict(name="call_latency", label="call_latency_via_receiver",
                topic=one, via_receiver=True, window=prof.latency[0],
                count=prof.latency[1], limit=_limit(prof.latency[0], prof)),
           dict(name="call_throughput", label="call_throughput_16_via_receiver",
                topic=one, callers=16, pids=pids, via_receiver=True,
                window=prof.throughput[0], count=prof.throughput[1],
                limit=_limit(prof.throughput[0], prof))]
    wl += [
        dict(name="cast", topic=one, window=prof.cast[0], count=prof.cast[1],
             drain_timeout=prof.drain_timeout, pids=pids,
             limit=_limit(prof.cast[0], prof, True)),
        dict(name="fanout", topic=topic, services=names,
             window=prof.fanout[0], count=prof.fanout[1],
             drain_timeout=prof.drain_timeout,
             limit=_limit(prof.fanout[0], prof, True)),
        dict(name="multicall", topic=one, values=prof.multicall_values,
             window=prof.multicall[0], count=prof.multicall[1],
             limit=_limit(prof.multicall[0], prof)),
    ]
    # one entry per size: a size that hangs the caller loses only itself
    from benchmarks.workloads import size_label
    for size, count in zip(prof.payload_sizes, prof.payload_counts):
        wl.append(dict(name="payload", label="payload_%s" % size_label(size),
                       topic=one, sizes=[size],
                       window=prof.payload_window, counts=[count],
                       limit=prof.payload_window + prof.payload_slack))
    return {"mode": mode, "config_file": conf, "shape": SAME_HOST,
            "workloads": wl}


def two_host_plan(mode: str, bench: HostsBench, prof: Profile) -> dict:
    """Our workloads for one mode between two hosts: callers on host A
    (127.0.0.1), the service ``<topic>_<names[0]>`` on host B, the fanout
    to three services on three hosts. The CPU of both receivers (A and B,
    all four for the fanout) and of the service is measured too."""
    topic, names = SERVICES[mode]
    one = "%s_%s" % (topic, names[0])
    pids = bench.pids(names[0])
    wl: list[dict] = [dict(name="call_latency", topic=one, pids=pids,
                           window=prof.latency[0], count=prof.latency[1],
                           limit=_limit(prof.latency[0], prof))]
    for n in prof.callers:
        wl.append(dict(name="call_throughput", label="call_throughput_%d" % n,
                       topic=one, callers=n, pids=pids,
                       window=prof.throughput[0], count=prof.throughput[1],
                       limit=_limit(prof.throughput[0], prof)))
    wl += [
        dict(name="cast", topic=one, window=prof.cast[0], count=prof.cast[1],
             drain_timeout=prof.drain_timeout, pids=pids,
             limit=_limit(prof.cast[0], prof, True)),
        dict(name="fanout", topic=topic, services=names,
             pids=bench.pids(names[0], hosts=len(bench.hosts)),
             window=prof.fanout[0], count=prof.fanout[1],
             drain_timeout=prof.drain_timeout,
             limit=_limit(prof.fanout[0], prof, True)),
        dict(name="multicall", topic=one, values=prof.multicall_values,
             window=prof.multicall[0], count=prof.multicall[1],
             limit=_limit(prof.multicall[0], prof)),
    ]
    from benchmarks.workloads import size_label
    for size, count in zip(prof.payload_sizes, prof.payload_counts):
        wl.append(dict(name="payload", label="payload_%s" % size_label(size),
                       topic=one, sizes=[size], pids=pids,
                       window=prof.payload_window, counts=[count],
                       limit=prof.payload_window + prof.payload_slack))
    return {"mode": mode, "config_file": bench.callers.conf_path,
            "shape": TWO_HOST, "workloads": wl}


def raw_plan(flavor: str, eps: list[str], prof: Profile,
             pids: dict[str, int] | None = None,
             shape: str = SAME_HOST) -> dict:
    """The raw pyzmq baselines for one flavor (``pids``: the peer) in
    one ``shape`` (the peer's endpoints say where it is)."""
    window, count = prof.raw
    wl: list[dict] = [
        dict(name="round_trip", window=window, count=count,
             limit=_limit(window, prof)),
        dict(name="in_flight", depth=16, window=window, count=count,
             pids=pids, limit=_limit(window, prof)),
        dict(name="one_way", window=window, count=count,
             drain_timeout=prof.drain_timeout, pids=pids,
             limit=_limit(window, prof, True)),
    ]
    from benchmarks.workloads import size_label
    for size, n in zip(prof.payload_sizes, prof.payload_counts):
        wl.append(dict(name="round_trip", label="payload_%s" % size_label(size),
                       window=prof.payload_window,
                       count=n, size=size,
                       workload="payload_%s" % size_label(size),
                       limit=_limit(prof.payload_window, prof)))
    return {"flavor": flavor, "echo": eps[0], "sink": eps[1],
            "control": eps[2], "shape": shape, "workloads": wl}


@dataclasses.dataclass
class OsloPeer:
    """One oslo.messaging system: its URL, servers and how to run them."""

    system: str
    url: str
    python: str = sys.executable
    env: dict[str, str] | None = None   # None: child_env()
    config_file: str | None = None
    om8_shims: bool = False
    servers: list[Any] = dataclasses.field(default_factory=list)
    #: stopped after the servers (broker, Redis)
    backing: Any = None


def oslo_plan(peer: OsloPeer, prof: Profile,
              pids: dict[str, int] | None = None) -> dict:
    """An oslo.messaging system on the workloads it can run (``pids``: the
    broker and the first server, whose CPU is measured too)."""
    wl: list[dict] = [dict(name="call_latency", window=prof.latency[0],
                           count=prof.latency[1],
                           limit=_limit(prof.latency[0], prof))]
    for n in prof.callers:
        if peer.system == OM8ZMQ and n > OM8ZMQ_MAX_CALLERS:
            continue
        wl.append(dict(name="call_throughput", label="call_throughput_%d" % n,
                       callers=n, pids=pids,
                       window=prof.throughput[0], count=prof.throughput[1],
                       limit=_limit(prof.throughput[0], prof)))
    wl += [dict(name="cast", window=prof.cast[0], count=prof.cast[1],
                drain_timeout=prof.drain_timeout, pids=pids,
                limit=_limit(prof.cast[0], prof, True)),
           dict(name="fanout", window=prof.fanout[0], count=prof.fanout[1],
                drain_timeout=prof.drain_timeout,
                limit=_limit(prof.fanout[0], prof, True)),
           dict(name="notify", window=prof.cast[0], count=prof.cast[1],
                drain_timeout=prof.drain_timeout,
                limit=_limit(prof.cast[0], prof, True))]
    return {"url": peer.url, "topic": RABBIT_TOPIC, "servers": RABBIT_SERVERS,
            "system": peer.system, "config_file": peer.config_file,
            "om8_shims": peer.om8_shims, "workloads": wl}


def rabbit_plan(url: str, prof: Profile,
                pids: dict[str, int] | None = None) -> dict:
    """oslo.messaging over RabbitMQ (``oslo_plan`` of the rabbit peer)."""
    return oslo_plan(OsloPeer(RABBIT, url), prof, pids)


def _free_ports(address: str, n: int) -> list[int]:
    """``n`` different TCP ports free on ``address`` now (all are held
    until every one is chosen, so none is handed out twice)."""
    import socket
    held: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            s.bind((address, 0))
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def _plan_timeout(plan: dict) -> float:
    return sum(w.get("limit") or 60.0 for w in plan["workloads"]) + 60.0


# -- the run ----------------------------------------------------------------

class Suite:
    """One benchmark run; ``run()`` returns the result document."""

    def __init__(self, options: Options) -> None:
        self.opt = options
        self.prof = options.profile
        self.log = options.log
        self.dir = tempfile.mkdtemp(prefix="nrz-bench-")
        self.host: BenchHost | None = None
        self.hosts: HostsBench | None = None
        #: raw pyzmq peers by (shape, flavor): the process, its endpoints
        self.peers: dict[tuple[str, str], tuple[Any, list[str]]] = {}
        #: the oslo.messaging systems that started, by system name
        self.oslo: dict[str, OsloPeer] = {}
        self.peer_status: dict[str, str] = {}
        self.runs: list[dict] = []

    # -- processes
    def _start_host(self) -> None:
        self.host = BenchHost(base_dir=self.dir)
        self.host.start_receiver()
        for mode in self.opt.modes:
            topic, names = SERVICES[mode]
            self.host.start_bench_services(topic, names,
                                           eventlet=(mode == "eventlet"))

    def _start_hosts(self) -> None:
        """The two-host bench: callers' host and three service hosts."""
        topics = {SERVICES[mode][0]: SERVICES[mode][1]
                  for mode in self.opt.modes}
        self.hosts = HostsBench(self.dir, topics, pin=self.opt.pin_hosts)
        self.hosts.start({SERVICES[mode][0]: mode == "eventlet"
                          for mode in self.opt.modes})

    def _start_raw_peers(self) -> None:
        """A raw peer per flavor and shape: bound on 127.0.0.1 for the
        same-host rows, on 127.0.0.2 (host B) for the two-host rows."""
        from nova_rpc_zmq.testing import Proc
        for shape, address in ((SAME_HOST, "127.0.0.1"),
                               (TWO_HOST, "127.0.0.2")):
            ports = _free_ports(address, 3 * len(rawzmq.FLAVORS))
            for flavor in rawzmq.FLAVORS:
                eps = ["tcp://%s:%d" % (address, ports.pop())
                       for _ in range(3)]
                proc = Proc("rawzmq peer %s %s" % (flavor, shape),
                            [sys.executable, "-m", "benchmarks.rawzmq", "peer",
                             "--flavor", flavor, "--echo", eps[0], "--sink",
                             eps[1], "--control", eps[2]],
                            os.path.join(self.dir, "rawzmq-peer-%s-%s.log"
                                         % (flavor, shape)),
                            env=child_env(),
                            prefix=pin_prefix(self._cpus(shape, False)))
                self.peers[(shape, flavor)] = (proc, eps)
        for proc, _eps in self.peers.values():
            proc.wait_for_line("READY", 60)

    def _start_oslo_servers(self, peer: OsloPeer) -> None:
        """Start the peer's three servers and wait for READY; raises
        RuntimeError (with the log tail) or OSError when one does not
        come up. Stopped by ``_stop_oslo``."""
        from nova_rpc_zmq.testing import Proc
        extra = ["--config-file", peer.config_file] if peer.config_file \
            else []
        if peer.om8_shims:
            extra.append("--om8-shims")
        for name in RABBIT_SERVERS:
            proc = Proc("%s server %s" % (peer.system, name),
                        [peer.python, "-m", "benchmarks.rabbit", "server",
                         "--url", peer.url, "--topic", RABBIT_TOPIC,
                         "--name", name] + extra,
                        os.path.join(self.dir, "%s-%s.log"
                                     % (peer.system, name)),
                        env=child_env() if peer.env is None else peer.env)
            peer.servers.append(proc)
        for proc in peer.servers:
            proc.wait_for_line("READY", OSLO_SERVER_START_TIMEOUT)

    def _start_peer(self, peer: OsloPeer, status: str, label: str,
                    start_backing: Callable[[], None] | None = None) -> None:
        """Start the backing server (broker, Redis) and the servers of
        ``peer``; on failure, stop what started and record it as skipped
        under ``label`` (with the reason), as the run goes on without it."""
        try:
            if start_backing is not None:
                start_backing()
            self._start_oslo_servers(peer)
        except (RuntimeError, OSError) as exc:
            reason = str(exc).splitlines()[0]
            self.peer_status[label] = "skipped: " + reason
            self.log("%s peer skipped: %s" % (label, reason))
            self._stop_oslo(peer)
            return
        self.oslo[peer.system] = peer
        self.peer_status[label] = status

    def _start_oslo_zmq(self) -> None:
        """Our oslo.messaging driver (``--driver oslo``) on zmq://127.0.0.1,
        its registry in a private dir of this run."""
        registry = os.path.join(self.dir, "oslo-registry")
        os.makedirs(registry, mode=0o700, exist_ok=True)
        peer = OsloPeer(OSLO_ZMQ, OSLO_ZMQ_URL,
                        env=child_env({REGISTRY_ENV: registry}))
        self.log("starting 3 oslo.messaging servers on %s ..." % peer.url)
        self._start_peer(peer, "used: %s, registry %s" % (peer.url, registry),
                         "oslo-zmq")

    def _start_rabbit(self) -> None:
        from benchmarks import rabbit
        problem = rabbit.broker_problem()
        if problem:
            self.peer_status["rabbit"] = "skipped: " + problem
            self.log("RabbitMQ peer skipped: %s" % problem)
            return
        broker = rabbit.RabbitBroker(self.dir)
        peer = OsloPeer(RABBIT, broker.url, backing=broker)
        self.log("starting a private RabbitMQ on 127.0.0.1:%d ..."
                 % broker.port)
        self._start_peer(peer, "used: rabbitmq-server %s, %s" % (
            rabbit.rabbit_version(), broker.url.split("@")[-1]), "rabbit",
            broker.start)

    def _start_om8zmq(self) -> None:
        from benchmarks import om8zmq
        from nova_rpc_zmq.testing import checkout_root
        root = checkout_root()
        problem = om8zmq.redis_problem()
        env = om8zmq.om8_env(self.dir, root)
        python, version = (None, problem) if problem else \
            om8zmq.venv_python(root, env, self.log)
        if python is None:
            self.peer_status["om8zmq"] = "skipped: %s" % version
            self.log("om8zmq peer skipped: %s" % version)
            return
        conf = os.path.join(self.dir, "om8zmq.conf")
        with open(conf, "w") as f:
            f.write(om8zmq.config_text())
        redis = om8zmq.RedisServer(self.dir)
        peer = OsloPeer(OM8ZMQ, redis.url, python=python, env=env,
                        config_file=conf, om8_shims=True, backing=redis)
        self.log("starting a private Redis on 127.0.0.1:%d and 3 "
                 "oslo.messaging %s servers ..." % (redis.port, version))
        self._start_peer(peer, "used: oslo.messaging %s zmq driver, %s"
                         % (version, redis.url), "om8zmq", redis.start)

    def _stop_oslo(self, peer: OsloPeer) -> None:
        for proc in peer.servers:
            proc.stop()
        peer.servers = []
        if peer.backing is not None:
            peer.backing.stop()
            peer.backing = None

    def close(self) -> None:
        """Stop every process this run started and remove its temp dir."""
        for peer in self.oslo.values():
            self._stop_oslo(peer)
        self.oslo.clear()
        for proc, _eps in self.peers.values():
            proc.stop()
        self.peers.clear()
        if self.hosts is not None:
            self.hosts.stop()
            self.hosts = None
        if self.host is not None:
            self.host.stop()
            self.host = None
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)

    def _cpus(self, shape: str, callers: bool) -> str | None:
        """The CPUs of a two-host process with ``--pin-hosts`` (the
        callers' host or a service host), else None."""
        return host_cpus(self.opt.pin_hosts and shape == TWO_HOST, callers)

    # -- one repeat
    def _child(self, module: str, plan: dict, name: str, run: dict,
               role: str | None = None, peer: OsloPeer | None = None,
               cpus: str | None = None) -> None:
        t = time.monotonic()
        try:
            result = run_python(module, plan, self.dir, name,
                                _plan_timeout(plan), role=role,
                                python=peer.python if peer else None,
                                env=peer.env if peer else None, cpus=cpus)
        except ChildFailed as exc:
            run["errors"].append({"workload": name, "mode": plan.get("mode"),
                                  "error": str(exc)[:4000]})
            self.log("  %-28s FAILED: %s" % (name, str(exc).splitlines()[0]))
            return
        run["figures"] += result.get("figures", [])
        run["errors"] += result.get("errors", [])
        bad = ", ".join(e["workload"] for e in result.get("errors", []))
        self.log("  %-28s %5.1f s%s" % (name, time.monotonic() - t,
                                        "  errors: " + bad if bad else ""))

    def _memory(self, mode: str, run: dict) -> None:
        host = BenchHost(base_dir=self.dir)
        try:
            receiver = host.start_receiver()
            topic = "bench_mem"
            host.start_bench_services(topic, ["m1"],
                                      eventlet=(mode == "eventlet"))
            prof = self.prof
            plan = {"mode": mode, "config_file": host.conf_path,
                    "workloads": [dict(
                        name="memory", topic="%s_m1" % topic,
                        in_flight=prof.in_flight, topics=prof.topics,
                        receiver_pid=receiver.pid, hold=prof.hold,
                        limit=prof.hold + prof.slack + 120)]}
            self._child("benchmarks.client", plan, "memory-%s" % mode, run)
        finally:
            host.stop()

    def _repeat(self, index: int) -> dict:
        run: dict = {"repeat": index, "figures": [], "errors": [],
                     "loadavg_start": os.getloadavg()}
        prof = self.prof
        t = time.monotonic()
        try:
            run["figures"] += ringscale.ring_scale(list(prof.ring_sizes),
                                                   prof.ring_calls)
            self.log("  %-28s %5.1f s" % ("ring scale",
                                          time.monotonic() - t))
        except Exception as exc:  # noqa: BLE001 - reported with the run
            run["errors"].append({"workload": "ring", "mode": "-",
                                  "error": "%s: %s" % (type(exc).__name__,
                                                       exc)})
        for (shape, flavor), (proc, eps) in self.peers.items():
            self._child("benchmarks.rawzmq",
                        raw_plan(flavor, eps, prof, {"service": proc.pid},
                                 shape),
                        "pyzmq-%s-%s" % (flavor, shape), run, role="client",
                        cpus=self._cpus(shape, True))
        if self.hosts is not None:
            for mode in self.opt.modes:
                self._child("benchmarks.client",
                            two_host_plan(mode, self.hosts, prof),
                            "ours-%s-two-host" % mode, run,
                            cpus=self.hosts.callers_cpus)
        host = self.host
        assert host is not None and host.receiver is not None
        for mode in self.opt.modes:
            first = host.services[SERVICES[mode][1][0]]
            pids = {"receiver": host.receiver.pid, "service": first.pid}
            self._child("benchmarks.client",
                        ours_plan(mode, host.conf_path, prof, pids),
                        "ours-%s" % mode, run)
        for system in (OSLO_ZMQ, OM8ZMQ, RABBIT):
            peer = self.oslo.get(system)
            if peer is None:
                continue
            pids = {"service": peer.servers[0].pid}
            if system == RABBIT:
                beam = peer.backing.pid()
                if beam:
                    pids["broker"] = beam
            self._child("benchmarks.rabbit", oslo_plan(peer, prof, pids),
                        system, run, role="client", peer=peer)
        for mode in self.opt.modes:
            self._memory(mode, run)
        run["loadavg_end"] = os.getloadavg()
        return run

    def run(self) -> dict:
        """Start everything, run the repeats, stop everything."""
        from benchmarks import report
        started = time.time()
        t0 = time.monotonic()
        machine = report.machine()     # before our load: the load average
        try:
            self.log("starting the receiver, %d bench services and the raw "
                     "pyzmq peers ..." % (3 * len(self.opt.modes)))
            self._start_host()
            self.log("starting 4 hosts on 127.0.0.1-4 (a receiver each) and "
                     "%d bench services on 127.0.0.2-4 ..."
                     % (3 * len(self.opt.modes)))
            self._start_hosts()
            self._start_raw_peers()
            if self.opt.oslo_driver:
                self._start_oslo_zmq()
            for name in self.opt.peers:
                if name == "rabbit":
                    self._start_rabbit()
                elif name == "om8zmq":
                    self._start_om8zmq()
                else:
                    self.peer_status[name] = "skipped: unknown peer"
            for i in range(self.opt.repeat):
                self.log("repeat %d of %d" % (i + 1, self.opt.repeat))
                self.runs.append(self._repeat(i + 1))
        finally:
            self.close()
        from benchmarks import targets
        medians = aggregate(self.runs)
        return {
            "suite": "nova-rpc-zmq bench",
            "machine": machine,
            "workdir": self.dir,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                     time.localtime(started)),
            "duration_s": round(time.monotonic() - t0, 1),
            "smoke": self.opt.smoke,
            "repeat": self.opt.repeat,
            "modes": list(self.opt.modes),
            "profile": dataclasses.asdict(self.prof),
            "peers": self.peer_status,
            "pinned": (PINNED if self.opt.pin_hosts else ""),
            "runs": self.runs,
            "medians": medians,
            "targets": targets.evaluate(medians, self.peer_status),
            "errors": [e for r in self.runs for e in r["errors"]],
        }


# -- aggregation ------------------------------------------------------------

def aggregate(runs: list[dict]) -> list[dict]:
    """One figure per key: the median over repeats (``lost``: the sum, so
    a loss in any repeat shows), with min, max and every value, its
    ``shape`` (same-host when the figure did not say), and the ratios to
    the baselines of the same run and shape (``benchmarks.targets``)."""
    from benchmarks import targets
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        for fig in run["figures"]:
            groups.setdefault(measure.key(fig), []).append(fig)
    out = []
    for figs in groups.values():
        values = [f["value"] for f in figs]
        agg = dict(figs[0])
        agg["shape"] = measure.shape(figs[0])
        agg["values"] = values
        agg["value"] = sum(values) if agg["metric"] == "lost" else \
            measure.median(values)
        agg["min"] = min(values)
        agg["max"] = max(values)
        out.append(agg)
    index = {measure.key(f): f for f in out}
    for fig in out:
        fig["baseline"], fig["ratio"] = targets.ratio(fig, index)
        fig["green_baseline"], fig["ratio_green"] = targets.ratio(
            fig, index, flavor="green")
    out.sort(key=targets.order)
    return out


__all__ = ["Options", "OsloPeer", "PEERS", "Profile", "SMOKE", "Suite",
           "aggregate", "oslo_plan", "two_host_plan", "MODES", "OURS", "PYZMQ", "RABBIT",
           "OSLO_ZMQ", "OM8ZMQ"]
