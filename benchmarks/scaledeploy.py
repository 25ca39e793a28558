"""What each topology of the scale model runs besides the simulated
hosts, and the controller's client of it (``benchmarks/scale.py``).

* ``OsloDeployment``: the oslo.messaging driver on ``zmq://`` with a
  private registry directory (``NOVA_RPC_ZMQ_OSLO_REGISTRY_DIR``), a real
  ``get_rpc_client`` in this process (``use_dynamic_connections`` for
  ``dynamic-direct``); with proxies, that many
  ``nova-rpc-zmq-proxy`` processes started from their command line with a
  configuration file (with their publishers for ``pub-sub-3``,
  ``dynamic-pub-sub-3`` and ``pub-sub-local``), and the controller's
  client made only once every host is connected to every proxy (their
  ``/metrics`` peers gauges). ``dynamic-pub-sub-3`` runs the proxies for
  their publishers only: the controller has ``use_dynamic_connections``
  and ``use_pub_sub``, no ``use_router_proxy``. ``pub-sub-local`` adds
  one ``nova-rpc-zmq-proxy --local-publisher`` per ``GROUP`` hosts, each
  on its own loopback address (127.20.0.x, a node), fed by the three
  central publishers.
* ``LegacyDeployment``: the Nova-era driver (``impl_zmq``) with a ring
  file naming the hosts by address and a real receiver for the
  controller's host, 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from benchmarks.scalehosts import (DYNAMIC, DYNPUBSUB, EXCHANGE, FANOUT,
                                   FIRST, GROUP, LEGACY, LOCALPUB, PUBSUB,
                                   REGISTRY_ENV, TOPIC, TOPOLOGIES, TTL,
                                   WHOAMI, host_address)


def _oslo_conf(**zmq_options: Any) -> Any:
    """A parsed ConfigOpts with the driver's options set (rpc_zmq_host
    127.0.0.1, where the simulated hosts send replies)."""
    import oslo_messaging.opts
    from oslo_config import cfg
    from oslo_messaging._metrics import client as om_metrics
    from oslo_messaging._tracing import client as om_tracing

    from nova_rpc_zmq.oslo_driver import options
    conf = cfg.ConfigOpts()
    # as a service has them on cfg.CONF (some are registered only when
    # their modules are imported)
    for group, opts in oslo_messaging.opts.list_opts():
        conf.register_opts(opts, group=group)
    conf.register_opts(om_tracing.oslo_messaging_tracing,
                       group="oslo_messaging_tracing")
    conf.register_opts(om_metrics.oslo_messaging_metrics,
                       group="oslo_messaging_metrics")
    conf([], project="nova-rpc-zmq-scale")
    options.register(conf)
    conf.set_override("rpc_zmq_host", "127.0.0.1", group=options.GROUP)
    for name, value in zmq_options.items():
        conf.set_override(name, value, group=options.GROUP)
    return conf


def local_address(group: int) -> str:
    """The loopback address of local publisher ``group`` (0-based): the
    node its hosts run on."""
    if not 0 <= group < 250:
        raise ValueError("local publisher %d out of range" % group)
    return "127.20.0.%d" % (group + 1)


def groups(hosts: int) -> list[int]:
    """Hosts of each local publisher's group for ``hosts`` hosts (as
    ``scalehosts.subscribe_endpoints`` assigns them)."""
    count = max(1, -(-hosts // GROUP))
    sizes = [0] * count
    for index in range(hosts):
        sizes[min(index // GROUP, count - 1)] += 1
    return sizes


def proxy_argv(conf_path: str, health_port: int) -> list[str]:
    """The command line of a router proxy (the installed script, or its
    module when not installed)."""
    script = os.path.join(os.path.dirname(sys.executable),
                          "nova-rpc-zmq-proxy")
    argv = [script] if os.path.exists(script) else \
        [sys.executable, "-m", "nova_rpc_zmq.cli.proxy"]
    return argv + ["--config-file", conf_path, "--health-port",
                   str(health_port)]


class DetachedProc:
    """A child process whose output goes to a log file this process does
    not keep open (a local publisher: one per group, so the controller's
    descriptor count holds none of theirs). ``stop`` like ``Proc``'s."""

    def __init__(self, name: str, argv: list[str], log_path: str,
                 env: dict[str, str]) -> None:
        import subprocess
        self.name = name
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(argv, stdout=log,
                                          stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_for_line(self, text: str, timeout: float) -> None:
        """Wait until the log holds ``text``; RuntimeError with the log's
        tail when the process exits first or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            with open(self.log_path, "rb") as f:
                output = f.read().decode("utf-8", "replace")
            if text in output:
                return
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("%s did not print %r (exit status %s):\n%s"
                                   % (self.name, text, self.popen.returncode,
                                      output[-3000:]))
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM and reap (SIGKILL after 10 s)."""
        from nova_rpc_zmq.testing import stop_process
        stop_process(self.popen)


class Deployment:
    """What one topology runs besides the simulated hosts, and the
    controller's client of it. ``aux`` maps a process name to its pid
    (proxies, the controller's receiver)."""

    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.aux: dict[str, int] = {}

    def names(self, count: int, start: int = 0) -> list[tuple[str, str]]:
        """(name, address) of hosts ``start`` .. ``start + count - 1``."""
        return [("sim%05d" % i, host_address(i))
                for i in range(start, start + count)]

    def start(self, hosts: list[tuple[str, str]]) -> dict:
        """Start the infrastructure; the worker spec's shared part."""
        raise NotImplementedError

    def connect(self, hosts: int) -> None:
        """Make the controller's client once the hosts are up."""
        raise NotImplementedError

    def call(self, name: str) -> Any:
        """Call ``whoami`` on host ``name`` (blocks; raises the
        transport's timeout or error)."""
        raise NotImplementedError

    def fanout(self, rnd: int) -> None:
        """Fan ``scale_fanout(round=rnd)`` out to every host of the topic."""
        raise NotImplementedError

    def cast_first(self, name: str) -> None:
        """Cast ``scale_first`` to host ``name`` once (it may not be
        there yet: the message may be dropped, or raise)."""
        raise NotImplementedError

    def registered(self, name: str, address: str) -> float:
        """After a new host's worker registered it: anything else its
        registration needs; the CLOCK_MONOTONIC time that was done."""
        return time.monotonic()

    def close(self) -> None:
        """Close the client and stop every process started here."""
        raise NotImplementedError


class OsloDeployment(Deployment):
    """The oslo.messaging driver on ``zmq://`` with a private registry
    directory; with ``proxies`` > 0 that many proxies, through which calls
    go when ``router``; ``local``: local publishers, one per group."""

    def __init__(self, tmp: str, proxies: int, pub_sub: bool = False,
                 dynamic: bool = False, router: bool | None = None,
                 local: bool = False) -> None:
        super().__init__(tmp)
        self.proxies = proxies
        self.pub_sub = pub_sub
        self.dynamic = dynamic
        self.router = bool(proxies) if router is None else router
        self.local = local
        #: (health address, health port, group size) per local publisher
        self.local_health: list[tuple[str, int, int]] = []
        self.registry_dir = os.path.join(tmp, "registry")
        os.makedirs(self.registry_dir, mode=0o700)
        self.procs: list[Any] = []
        self.health: list[int] = []
        self.transport: Any = None
        self.client: Any = None
        self._saved_env = os.environ.get(REGISTRY_ENV)

    def start(self, hosts: list[tuple[str, str]]) -> dict:
        from nova_rpc_zmq.testing import Proc, child_env, free_port
        # the controller's driver reads its registry directory from here
        os.environ[REGISTRY_ENV] = self.registry_dir
        backends, frontends, publishers = [], [], []
        for n in range(self.proxies):
            conf = os.path.join(self.tmp, "proxy%d.conf" % n)
            with open(conf, "w") as f:
                f.write("[DEFAULT]\ntransport_url = zmq://\n\n"
                        "[oslo_messaging_zmq]\nzmq_target_expire = %d\n"
                        "zmq_target_update = 60\nuse_pub_sub = %s\n\n"
                        "[zmq_proxy_opts]\nhost = 127.0.0.1\n"
                        % (TTL, str(self.pub_sub).lower()))
            health = free_port()
            proc = Proc("proxy%d" % n, proxy_argv(conf, health),
                        os.path.join(self.tmp, "proxy%d.log" % n),
                        env=child_env({REGISTRY_ENV: self.registry_dir}))
            self.procs.append(proc)
            proc.wait_for_line("forwarding", 60)
            line = next(x for x in proc.output().splitlines()
                        if "forwarding" in x).split()
            frontends.append("127.0.0.1:%s" % line[line.index("frontend") + 1])
            backends.append("127.0.0.1:%s" % line[line.index("backend") + 1])
            if self.pub_sub:
                publishers.append("127.0.0.1:%s"
                                  % line[line.index("publisher") + 1])
            self.health.append(health)
            self.aux["proxy%d" % n] = proc.pid
        local = self._start_local(len(hosts)) if self.local else []
        return {"registry_dir": self.registry_dir, "backends": backends,
                "frontends": frontends, "publishers": publishers,
                "local_publishers": local}

    def _start_local(self, hosts: int) -> list[str]:
        """Start one local publisher per group (all at once, then wait for
        each); their ``host:port`` endpoints in group order."""
        from nova_rpc_zmq.testing import child_env, free_port
        conf = os.path.join(self.tmp, "local.conf")
        with open(conf, "w") as f:
            f.write("[DEFAULT]\ntransport_url = zmq://\n\n"
                    "[oslo_messaging_zmq]\nzmq_target_expire = %d\n"
                    "zmq_target_update = 60\nuse_pub_sub = true\n"
                    % TTL)
        started = []
        for group, size in enumerate(groups(hosts)):
            address = local_address(group)
            port, health = free_port(address), free_port(address)
            name = "local%02d" % group
            proc = DetachedProc(name, proxy_argv(conf, health) + [
                "--local-publisher", "--host", address,
                "--publisher-port", str(port)],
                os.path.join(self.tmp, "%s.log" % name),
                env=child_env({REGISTRY_ENV: self.registry_dir}))
            self.procs.append(proc)
            self.aux[name] = proc.pid
            self.local_health.append((address, health, size))
            started.append((proc, "%s:%d" % (address, port)))
        for proc, _ in started:
            proc.wait_for_line("local publisher", 60 + len(started))
        return [endpoint for _, endpoint in started]

    def peers(self, health: int, side: str,
              address: str = "127.0.0.1") -> float:
        """The peers a proxy counts on ``side`` (from /metrics)."""
        import urllib.request

        from nova_rpc_zmq import metrics
        with urllib.request.urlopen("http://%s:%d/metrics" % (
                address, health), timeout=5) as page:
            found = metrics.parse(page.read().decode())
        return found.get('nova_rpc_zmq_proxy_peers{side="%s"}' % side, 0.0)

    def connect(self, hosts: int) -> None:
        import oslo_messaging
        deadline = time.monotonic() + 60 + hosts * 0.02
        # a proxy drops a message for a member not connected to it, a
        # publisher one for a subscriber not connected yet (a local
        # publisher is a central publisher's subscriber)
        wanted = []
        for health in self.health:
            if self.router:
                wanted.append(("127.0.0.1", health, "backend", hosts))
            if self.pub_sub:
                wanted.append(("127.0.0.1", health, "publisher",
                               len(self.local_health) or hosts))
        for address, health, size in self.local_health:
            wanted.append((address, health, "central", self.proxies))
            wanted.append((address, health, "publisher", size))
        for address, health, side, count in wanted:
            while self.peers(health, side, address) < count:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        "proxy on health port %s:%d: %d of %d peers "
                        "connected to its %s" % (
                            address, health,
                            self.peers(health, side, address), count, side))
                time.sleep(0.1)
        conf = _oslo_conf(use_router_proxy=self.router,
                          use_pub_sub=self.pub_sub,
                          use_dynamic_connections=self.dynamic,
                          zmq_target_expire=int(TTL), zmq_target_update=60)
        self.transport = oslo_messaging.get_rpc_transport(conf, url="zmq://")
        self.client = oslo_messaging.get_rpc_client(
            self.transport, oslo_messaging.Target(exchange=EXCHANGE,
                                                  topic=TOPIC), timeout=10)

    def call(self, name: str) -> Any:
        return self.client.prepare(server=name).call({}, WHOAMI)

    def fanout(self, rnd: int) -> None:
        self.client.prepare(fanout=True).cast({}, FANOUT, round=rnd)

    def cast_first(self, name: str) -> None:
        self.client.prepare(server=name, retry=0).cast({}, FIRST)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.cleanup()
        for proc in self.procs:
            proc.stop()
        if self._saved_env is None:
            os.environ.pop(REGISTRY_ENV, None)
        else:
            os.environ[REGISTRY_ENV] = self._saved_env


class LegacyDeployment(Deployment):
    """The Nova-era driver with a ring file of the hosts and a real
    receiver for the controller's host (127.0.0.1)."""

    def __init__(self, tmp: str) -> None:
        super().__init__(tmp)
        self.ringfile = os.path.join(tmp, "ring.json")
        self.ring: dict[str, list[str]] = {}
        self.host: Any = None
        self.settings: Any = None

    def names(self, count: int, start: int = 0) -> list[tuple[str, str]]:
        # a ring names hosts by what the senders connect to
        return [(host_address(i), host_address(i))
                for i in range(start, start + count)]

    def _write_ring(self) -> None:
        tmp = self.ringfile + ".new"
        with open(tmp, "w") as f:
            json.dump(self.ring, f)
        os.replace(tmp, self.ringfile)

    def start(self, hosts: list[tuple[str, str]]) -> dict:
        from benchmarks.hosts import common_port
        from nova_rpc_zmq.testing import LocalHost
        addresses = [a for _, a in hosts]
        extra = self.names(1, len(hosts))[0][1]
        # every host of a ring listens on the same rpc_zmq_port
        port = common_port(["127.0.0.1"] + addresses + [extra])
        self.ring = {TOPIC: addresses, "scale_callers": ["127.0.0.1"]}
        self._write_ring()
        self.host = LocalHost(host="127.0.0.1", address="127.0.0.1",
                              port=port, matchmaker="ring",
                              ringfile=self.ringfile, base_dir=self.tmp)
        self.aux["receiver"] = self.host.start_receiver(60).pid
        return {"port": port, "reply_endpoint": "127.0.0.1:%d" % port}

    def connect(self, hosts: int) -> None:
        self.settings = self.host.settings()

    def call(self, name: str) -> Any:
        from nova_rpc_zmq import impl_zmq
        return impl_zmq.call(self.settings, {}, "%s.%s" % (TOPIC, name),
                             {"method": WHOAMI, "args": {}}, 10)

    def fanout(self, rnd: int) -> None:
        from nova_rpc_zmq import impl_zmq
        impl_zmq.fanout_cast(self.settings, {}, TOPIC,
                             {"method": FANOUT, "args": {"round": rnd}})

    def cast_first(self, name: str) -> None:
        from nova_rpc_zmq import impl_zmq
        impl_zmq.cast(self.settings, {}, "%s.%s" % (TOPIC, name),
                      {"method": FIRST, "args": {}})

    def registered(self, name: str, address: str) -> float:
        self.ring[TOPIC].append(address)
        self._write_ring()
        return time.monotonic()

    def close(self) -> None:
        from nova_rpc_zmq import impl_zmq
        if self.settings is not None:
            impl_zmq.cleanup()
        if self.host is not None:
            self.host.stop()


def deployment(topology: str, tmp: str) -> Deployment:
    """The Deployment of ``topology`` in directory ``tmp``."""
    if topology == LEGACY:
        return LegacyDeployment(tmp)
    return OsloDeployment(tmp, TOPOLOGIES[topology],
                          pub_sub=topology in (PUBSUB, DYNPUBSUB, LOCALPUB),
                          dynamic=topology in (DYNAMIC, DYNPUBSUB),
                          router=None if topology != DYNPUBSUB else False,
                          local=topology == LOCALPUB)
