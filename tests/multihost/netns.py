"""Test hosts as Linux network namespaces: several RPC hosts on one machine.

Each host is a namespace with its own address, receiver, IPC directory and
service processes, all started with ``ip netns exec``; the hosts talk over
veth pairs plugged into a bridge that lives in a fourth, "switch", namespace.
Nothing is created in the root namespace: its interfaces and routes are
never touched, and the pytest process (which stays there) sends no traffic
beyond loopback; clients run as subprocesses inside a host's namespace.

API (the fixtures in ``conftest.py`` wrap it)::

    netns_unavailable() -> str | None
        Why namespaces cannot be used here (not root, no ``ip``, ``ip netns
        add`` refused), or None. Use it to skip.
    remove_leftovers() -> list[str]
        Delete namespaces and temp dirs of earlier runs whose owning process
        is gone (their processes are killed by pid first); returns the
        deleted namespace names. Live parallel runs are left alone.

    cluster = NetnsCluster(hosts=3, topic="demo", options=None,
                           options_for=None, eventlet=False,
                           port=9501, start_services=True)
        ``options``: extra nova.conf options for every host, as
        {"name": value} for [DEFAULT] or {"group.name": value} for a group
        (e.g. {"servicegroup_driver": "zk", "zookeeper.address": ...}).
        ``options_for(host) -> dict``: options for one host (given the
        NetnsHost, whose ``name`` and ``ip`` are set), e.g. its CURVE key.
    cluster.start() -> cluster        (also ``with NetnsCluster(...) as c``)
        Namespaces, network, ring file, receivers, one service per host
        (named like its host: h1, h2, ...), then waits until host 1 gets
        answers from every host. Raises NetnsError; cleans up on failure.
    cluster.close()
        Kills every process, deletes every namespace, device and temp dir.
        Idempotent; raises NetnsError after trying everything if something
        could not be deleted.
    cluster.hosts: list[NetnsHost]   cluster.host(n): the n-th, from 1
    cluster.ring: dict, cluster.ring_path; cluster.write_ring(mapping)
    cluster.switch_ip, cluster.spawn_in_switch(name, argv) -> Proc
        An address and a way to run a shared server (ZooKeeper, memcached)
        that every host can reach.
    cluster.host_of_pid(pid) -> str | None   the host whose service has pid
    cluster.logs(tail=3000) -> str           every process's log, for asserts

    host.name ("h1"), host.ip, host.netns, host.conf_path, host.local
    host.start_service(name=None, topic=None, eventlet=None) -> Proc
    host.service(name=None) -> Proc
    host.stop_service(name=None) / host.kill_service(name=None)
    host.restart_service(name=None) -> Proc
        ``name`` defaults to the host's own service. ``restart_service``
        waits for the new process's own READY line.
    host.client(ops, timeout=60, eventlet=False) -> dict
        Runs ``remote_client.py`` (see its docstring for OPS_JSON) in this
        host; returns its JSON answer. Raises NetnsError with the client's
        stderr and the cluster's logs when it fails.
    host.run_script(path, *args, timeout=60) -> CompletedProcess
        Any Python script in this host's namespace (PYTHONPATH set).
    host.spawn(name, argv) -> Proc    a long-lived process in this host
    host.pids() -> list[int]          every process in the namespace

    op(kind, topic, method, repeat=1, **fields) -> dict   one client op
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

from nova_rpc_zmq.testing import LocalHost, Proc, child_env
from tests.support import scaled, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "remote_client.py")

#: Every namespace and temp dir of this library starts with this.
PREFIX = "nrzt-"
#: "nrzt-<owner pid>-<random>-<role>": the owner pid tells leftovers from
#: the namespaces of a run still in progress.
_NAME_RE = re.compile(r"^%s(\d+)-([0-9a-f]+)-(\w+)$" % re.escape(PREFIX))
_DIR_RE = re.compile(r"^%s(\d+)-([0-9a-f]+)-" % re.escape(PREFIX))
BRIDGE = "br0"
#: Seconds any single ``ip`` command may take.
IP_TIMEOUT = 30.0


class NetnsError(RuntimeError):
    """A namespace, device or process of the test network misbehaved."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``ip ARGS``; raise NetnsError with its stderr when it fails."""
    try:
        out = subprocess.run(["ip", *args], capture_output=True, text=True,
                             timeout=IP_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise NetnsError("ip %s hung for %.0fs" % (" ".join(args),
                                                   IP_TIMEOUT)) from exc
    if check and out.returncode != 0:
        raise NetnsError("ip %s failed (%d): %s" % (
            " ".join(args), out.returncode, out.stderr.strip()))
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_namespaces() -> list[str]:
    """Names of the named network namespaces (``ip netns list``)."""
    out = _ip("netns", "list")
    # lines look like "name (id: 3)" or just "name"
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def namespace_pids(netns: str) -> list[int]:
    """Pids of the processes in ``netns`` (empty if it is gone)."""
    out = _ip("netns", "pids", netns, check=False)
    return [int(p) for p in out.stdout.split() if p.isdigit()]


def _kill_namespace_processes(netns: str, timeout: float = 10.0) -> list[int]:
    """SIGKILL every process in ``netns`` by pid and wait until none is
    left (bounded); returns the pids still there at the deadline."""
    deadline = time.monotonic() + timeout
    pids = namespace_pids(netns)
    while pids and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
        pids = namespace_pids(netns)
    return pids


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (running as uid %d)" % os.geteuid()
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    probe = "%s%d-%s-probe" % (PREFIX, os.getpid(), secrets.token_hex(3))
    try:
        out = _ip("netns", "add", probe, check=False)
    except (NetnsError, OSError) as exc:
        return "'ip netns add' cannot run: %s" % exc
    if out.returncode != 0:
        return "'ip netns add' is refused here: %s" % out.stderr.strip()
    _ip("netns", "del", probe, check=False)
    return None


def remove_leftovers() -> list[str]:
    """Delete what earlier runs left behind (namespaces of a dead owner
    process, their processes, their temp dirs); returns namespace names."""
    removed = []
    for netns in list_namespaces():
        found = _NAME_RE.match(netns)
        if not found or _pid_alive(int(found.group(1))):
            continue
        _kill_namespace_processes(netns)
        _ip("netns", "del", netns, check=False)
        removed.append(netns)
    tmp = tempfile.gettempdir()
    for entry in os.listdir(tmp):
        found = _DIR_RE.match(entry)
        if found and not _pid_alive(int(found.group(1))):
            shutil.rmtree(os.path.join(tmp, entry), ignore_errors=True)
    return removed


def op(kind: str, topic: str, method: str, repeat: int = 1,
       **fields: Any) -> dict:
    """One operation for ``NetnsHost.client`` (see remote_client.py)."""
    return dict(fields, op=kind, topic=topic, method=method, repeat=repeat)


def _env() -> dict[str, str]:
    return child_env()


class NetnsHost:
    """One test host: a namespace, an address, a LocalHost of processes."""

    def __init__(self, cluster: "NetnsCluster", index: int, netns: str,
                 ip: str) -> None:
        self.cluster = cluster
        self.index = index
        self.name = "h%d" % index
        self.netns = netns
        self.ip = ip
        self.local: LocalHost | None = None
        self.services: dict[str, Proc] = {}
        self._service_args: dict[str, tuple[str, bool]] = {}

    # -- configuration and processes ---------------------------------------

    @property
    def conf_path(self) -> str:
        """This host's nova.conf."""
        return self._local().conf_path

    def _local(self) -> LocalHost:
        if self.local is None:
            raise NetnsError("host %s is not configured yet; call "
                             "cluster.start() first" % self.name)
        return self.local

    def configure(self, options: dict[str, Any]) -> None:
        """Write this host's nova.conf: its IP as name and bind address."""
        self.local = LocalHost(
            host=self.ip, address=self.ip, port=self.cluster.port,
            matchmaker="ring", ringfile=self.cluster.ring_path,
            extra=options, base_dir=self.cluster.dir, netns=self.netns)

    def start_receiver(self, timeout: float = 30.0) -> Proc:
        """Start this host's receiver; returns once it listens."""
        return self._local().start_receiver(scaled(timeout))

    def start_service(self, name: str | None = None, topic: str | None = None,
                      eventlet: bool | None = None,
                      timeout: float = 30.0) -> Proc:
        """Start a demo service in this host; returns once it consumes.

        ``name`` defaults to the host's name, ``topic`` to the cluster's.
        """
        name = name or self.name
        if name in self.services and self.services[name].popen.poll() is None:
            raise NetnsError("service %s of host %s is already running"
                             % (name, self.name))
        topic = topic or self.cluster.topic
        green = self.cluster.eventlet if eventlet is None else eventlet
        proc = self._local().start_service(name, topic=topic, eventlet=green,
                                           wait=False)
        self.services[name] = proc
        self._service_args[name] = (topic, green)
        # the log is appended to across restarts: wait for this pid's line
        proc.wait_for_line("READY %s %d" % (name, proc.pid), scaled(timeout))
        return proc

    def service(self, name: str | None = None) -> Proc:
        """The process of service ``name`` (default: the host's own)."""
        name = name or self.name
        if name not in self.services:
            raise NetnsError("host %s has no service %s" % (self.name, name))
        return self.services[name]

    def stop_service(self, name: str | None = None) -> int | None:
        """SIGTERM the service and reap it; returns its exit status."""
        return self.service(name).stop()

    def kill_service(self, name: str | None = None) -> None:
        """SIGKILL the service (a crash: no clean shutdown) and reap it."""
        self.service(name).kill()

    def restart_service(self, name: str | None = None,
                        timeout: float = 30.0) -> Proc:
        """Stop the service if it runs, start it again with the same topic
        and mode; returns the new process once it consumes."""
        name = name or self.name
        self.service(name).stop()
        topic, green = self._service_args[name]
        return self.start_service(name, topic=topic, eventlet=green,
                                  timeout=timeout)

    def spawn(self, name: str, argv: Sequence[str]) -> Proc:
        """Start a long-lived process in this host, killed at close."""
        local = self._local()
        proc = Proc("%s@%s" % (name, self.name), list(argv),
                    os.path.join(local.dir, "%s.log" % name), env=_env(),
                    prefix=["ip", "netns", "exec", self.netns])
        local.procs.append(proc)
        return proc

    def pids(self) -> list[int]:
        """Every process running in this host's namespace."""
        return namespace_pids(self.netns)

    # -- clients -----------------------------------------------------------

    def run_script(self, path: str, *args: str,
                   timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run ``python PATH ARGS`` in this host and wait for it (killed
        after the scaled ``timeout``, raising NetnsError)."""
        argv = ["ip", "netns", "exec", self.netns, sys.executable, path,
                *args]
        try:
            return subprocess.run(argv, capture_output=True, text=True,
                                  timeout=scaled(timeout), env=_env())
        except subprocess.TimeoutExpired as exc:
            raise NetnsError("%s in host %s did not finish within %.0fs; "
                             "stderr:\n%s\n%s" % (
                                 os.path.basename(path), self.name,
                                 scaled(timeout), _text(exc.stderr)[-3000:],
                                 self.cluster.logs())) from exc

    def client(self, ops: list[dict], timeout: float = 60.0,
               eventlet: bool = False) -> dict:
        """Run the client operations ``ops`` in this host; its JSON answer.

        RPC errors are part of the answer; a crash, a bad exit status or
        no JSON line raises NetnsError with stderr and the cluster's logs.
        """
        args = ["--config-file", self.conf_path]
        if eventlet:
            args.append("--eventlet")
        out = self.run_script(CLIENT, *args, json.dumps(ops), timeout=timeout)
        lines = out.stdout.strip().splitlines()
        if out.returncode != 0 or not lines:
            raise NetnsError("client in host %s exited with %d; stderr:\n%s\n%s"
                             % (self.name, out.returncode, out.stderr[-3000:],
                                self.cluster.logs()))
        try:
            return json.loads(lines[-1])
        except ValueError as exc:
            raise NetnsError("client in host %s printed no JSON: %r"
                             % (self.name, lines[-1][:500])) from exc


def _text(data: Any) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)


class NetnsCluster:
    """Several test hosts in namespaces joined by a bridge; see the module
    docstring. Not thread-safe; one test module or test owns it."""

    def __init__(self, hosts: int = 3, topic: str = "demo",
                 options: dict[str, Any] | None = None,
                 options_for: Callable[[NetnsHost], dict[str, Any]] | None = None,
                 eventlet: bool = False, port: int = 9501,
                 start_services: bool = True) -> None:
        if not 1 <= hosts <= 200:
            raise ValueError("hosts must be 1..200, not %r" % hosts)
        self.topic = topic
        self.options = dict(options or {})
        self.options_for = options_for
        self.eventlet = eventlet
        # every host uses the same port: a sender reaches a peer's receiver
        # on its own rpc_zmq_port
        self.port = port
        self.start_services = start_services
        self.tag = "%s%d-%s" % (PREFIX, os.getpid(), secrets.token_hex(3))
        self.subnet = "10.231.%d" % (secrets.randbelow(254) + 1)
        self.switch = self.tag + "-sw"
        self.switch_ip = self.subnet + ".1"
        self.dir = tempfile.mkdtemp(prefix=self.tag + "-")
        self.ring_path = os.path.join(self.dir, "ring.json")
        self.hosts = [NetnsHost(self, i, "%s-h%d" % (self.tag, i),
                                "%s.%d" % (self.subnet, 10 + i))
                      for i in range(1, hosts + 1)]
        self.ring: dict[str, list[str]] = {}
        self._created: list[str] = []     # namespaces, in creation order
        self._switch_procs: list[Proc] = []
        self._closed = False

    def __enter__(self) -> "NetnsCluster":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def host(self, n: int) -> NetnsHost:
        """The ``n``-th host, counting from 1 (``h1`` is ``host(1)``)."""
        return self.hosts[n - 1]

    @property
    def ips(self) -> list[str]:
        """Every host's address, in host order."""
        return [h.ip for h in self.hosts]

    # -- building ----------------------------------------------------------

    def start(self) -> "NetnsCluster":
        """Build the network, start receivers and services, wait until host
        1 hears from every host. On any failure everything is removed."""
        try:
            self._build_network()
            self.write_ring(self.default_ring())
            for host in self.hosts:
                options = dict(self.options)
                if self.options_for is not None:
                    options.update(self.options_for(host))
                host.configure(options)
            for host in self.hosts:
                host.start_receiver()
            if self.start_services:
                for host in self.hosts:
                    host.start_service()
                self.wait_until_connected()
        except BaseException:
            self.close()
            raise
        return self

    def _add_namespace(self, netns: str) -> None:
        _ip("netns", "add", netns)
        self._created.append(netns)
        _ip("-n", netns, "link", "set", "lo", "up")

    def _build_network(self) -> None:
        self._add_namespace(self.switch)
        _ip("-n", self.switch, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", self.switch, "addr", "add", self.switch_ip + "/24",
            "dev", BRIDGE)
        _ip("-n", self.switch, "link", "set", BRIDGE, "up")
        for host in self.hosts:
            self._add_namespace(host.netns)
            port = "p%d" % host.index
            # both ends are created away from the root namespace: the
            # switch end in the switch, the other straight into the host
            _ip("-n", self.switch, "link", "add", port, "type", "veth",
                "peer", "name", "eth0", "netns", host.netns)
            _ip("-n", self.switch, "link", "set", port, "master", BRIDGE)
            _ip("-n", self.switch, "link", "set", port, "up")
            _ip("-n", host.netns, "addr", "add", host.ip + "/24",
                "dev", "eth0")
            _ip("-n", host.netns, "link", "set", "eth0", "up")

    def default_ring(self) -> dict[str, list[str]]:
        """``{topic: [every ip], topic_<host name>: [its ip], ...}``."""
        ring = {self.topic: self.ips}
        for host in self.hosts:
            ring["%s_%s" % (self.topic, host.name)] = [host.ip]
        return ring

    def write_ring(self, ring: dict[str, list[str]]) -> None:
        """Replace the shared ring file atomically (readers reload it)."""
        tmp = self.ring_path + ".new"
        with open(tmp, "w") as f:
            json.dump(ring, f, indent=1)
        os.replace(tmp, self.ring_path)
        self.ring = {k: list(v) for k, v in ring.items()}

    def wait_until_connected(self, timeout: float = 60.0) -> None:
        """Poll from host 1 until each host's own service answers."""
        first = self.hosts[0]
        ops = [op("call", "%s_%s" % (self.topic, h.name), "whoami",
                  timeout=5) for h in self.hosts]
        last: list[Any] = []

        def all_answer() -> bool:
            last[:] = first.client(ops)["results"]
            return all("ok" in r[0] for r in last)
        try:
            wait_for(all_answer, timeout=timeout, interval=0.2,
                     what="every host to answer host 1")
        except AssertionError as exc:
            raise NetnsError("%s; last answers %r\n%s"
                             % (exc, last, self.logs())) from exc

    def spawn_in_switch(self, name: str, argv: Sequence[str]) -> Proc:
        """Start a long-lived process (a shared server) in the switch
        namespace, reachable from every host at ``switch_ip``."""
        proc = Proc("%s@switch" % name, list(argv),
                    os.path.join(self.dir, "%s.log" % name), env=_env(),
                    prefix=["ip", "netns", "exec", self.switch])
        self._switch_procs.append(proc)
        return proc

    # -- inspection --------------------------------------------------------

    def host_of_pid(self, pid: int) -> str | None:
        """The name of the host running the service process ``pid``."""
        for host in self.hosts:
            if any(p.pid == pid for p in host.services.values()):
                return host.name
        return None

    def logs(self, tail: int = 3000) -> str:
        """The end of every process's log, for assertion messages."""
        parts = []
        procs = list(self._switch_procs)
        for host in self.hosts:
            if host.local is not None:
                procs += host.local.procs
        for proc in procs:
            try:
                text = proc.output()[-tail:]
            except OSError as exc:
                text = "(no log: %s)" % exc
            parts.append("--- %s (pid %d, exit %s) ---\n%s"
                         % (proc.name, proc.pid, proc.popen.poll(), text))
        return "\n".join(parts)

    # -- teardown ----------------------------------------------------------

    def close(self) -> None:
        """Kill every process, delete every namespace, device and temp dir.

        Tries everything, then raises NetnsError listing what is left.
        """
        if self._closed:
            return
        self._closed = True
        problems = []
        for host in self.hosts:
            if host.local is not None:
                try:
                    host.local.stop()   # SIGTERM, SIGKILL after a grace
                except Exception as exc:  # noqa: BLE001 - keep cleaning
                    problems.append("stopping %s: %s" % (host.name, exc))
        for proc in self._switch_procs:
            try:
                proc.stop()
            except Exception as exc:  # noqa: BLE001 - keep cleaning
                problems.append("stopping %s: %s" % (proc.name, exc))
        # anything else still inside (a client left behind): kill by pid
        for netns in self._created:
            left = _kill_namespace_processes(netns)
            if left:
                problems.append("processes %s survive in %s" % (left, netns))
        if self.switch in self._created:
            # the veth pairs and the bridge would go with the namespaces;
            # delete them explicitly so nothing depends on that
            for host in self.hosts:
                _ip("-n", self.switch, "link", "del", "p%d" % host.index,
                    check=False)
            _ip("-n", self.switch, "link", "del", BRIDGE, check=False)
        for netns in reversed(self._created):
            _ip("netns", "del", netns, check=False)
        existing = set(list_namespaces())
        problems += ["namespace %s could not be deleted" % n
                     for n in self._created if n in existing]
        self._created.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
        if problems:
            raise NetnsError("cleanup of %s incomplete: %s"
                             % (self.tag, "; ".join(problems)))
