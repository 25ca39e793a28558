"""The simulated hosts of the scale model (``benchmarks/scale.py``).

A simulated host is a set of ZeroMQ sockets with its own identity and its
own loopback address (``host_address``: 127.10.x.y, which Linux routes to
``lo`` without set-up; every connection it makes starts from that
address). ``SimHosts`` runs the hosts of one worker process in one poll
loop, with the open-files limit raised to the hard one:

* ``static-direct``, ``dynamic-direct``, ``legacy-receiver``: a PULL
  bound on the host's address (any port, registered as ``address:port`` under
  ``rpc/<exchange>/<topic>`` and ``rpc/<exchange>/<topic>/<host>`` in the
  oslo driver's registry; or the ring's ``rpc_zmq_port``, standing in for
  the host's receiver);
* ``router-proxy``, ``router-proxy-3``: a DEALER whose routing id is the
  host's member (``<host>~<hex>``), connected to every proxy's backend and
  registered as above; ``pub-sub-3`` adds a SUB socket connected to every
  publisher, subscribed to the topic's fanout key;
* ``dynamic-pub-sub-3``: the PULL of ``dynamic-direct`` and the SUB of
  ``pub-sub-3`` (direct messages, fanout from the central publishers);
* ``pub-sub-local``: the DEALER of ``router-proxy-3`` and a SUB connected
  only to its group's local publisher (``GROUP`` hosts a group, standing
  for the services of one node; ``subscribe_endpoints``).

Requests are decoded with ``wire``; a call is answered with the host's
name, pushed to the reply socket the request names (through the proxies'
frontends behind proxies, to the controller's receiver for the Nova-era
driver), from a socket the host opens at its first answer, as a real host
opens its outbound sockets at first use. Arrivals of fanouts and of the
first message are stamped with CLOCK_MONOTONIC, which every process of
the machine shares. ``Worker`` is the controller's handle on one process.
"""

from __future__ import annotations

import logging
import os
import resource
import threading
import time
from typing import Any

STATIC = "static-direct"
DYNAMIC = "dynamic-direct"
ROUTER = "router-proxy"
ROUTER3 = "router-proxy-3"
PUBSUB = "pub-sub-3"
DYNPUBSUB = "dynamic-pub-sub-3"
LOCALPUB = "pub-sub-local"
LEGACY = "legacy-receiver"
#: Topologies measured here, in table order, and the central proxies each
#: runs.
TOPOLOGIES = {STATIC: 0, DYNAMIC: 0, ROUTER: 1, ROUTER3: 3, PUBSUB: 3,
              DYNPUBSUB: 3, LOCALPUB: 3, LEGACY: 0}
#: Those whose hosts are behind router proxies.
PROXIED = (ROUTER, ROUTER3, PUBSUB, LOCALPUB)
#: Those whose hosts subscribe to publishers for fanout.
SUBSCRIBED = (PUBSUB, DYNPUBSUB, LOCALPUB)
#: Simulated hosts per local publisher (``pub-sub-local``): the service
#: processes of one node, or a rack, sharing one local publisher.
GROUP = 50
EXCHANGE = "scale"
TOPIC = "scale"
#: Methods the simulated hosts know.
FANOUT, FIRST, WHOAMI = "scale_fanout", "scale_first", "whoami"
#: Seconds a registration lives (longer than any run).
TTL = 600.0
#: Seconds a worker serves at most (a controller that hangs is not waited
#: for longer).
LIFETIME = 3 * 3600.0
#: Environment variable of the oslo driver's registry directory.
REGISTRY_ENV = "NOVA_RPC_ZMQ_OSLO_REGISTRY_DIR"


def host_address(index: int) -> str:
    """The loopback address of simulated host ``index`` (0-based)."""
    if not 0 <= index < 250 * 250:
        raise ValueError("host index %d out of range" % index)
    return "127.10.%d.%d" % (index // 250, index % 250 + 1)


def host_index(name: str) -> int:
    """The index of simulated host ``name`` (``sim00042``: 42)."""
    return int(name[3:])


def subscribe_endpoints(spec: dict, name: str) -> list[str]:
    """The publishers host ``name`` subscribes to: its group's local
    publisher (``pub-sub-local``; a host past the last full group joins
    the last one) or every central publisher."""
    local = spec.get("local_publishers") or []
    if not local:
        return list(spec["publishers"])
    return [local[min(host_index(name) // GROUP, len(local) - 1)]]


def raise_nofile() -> tuple[int, int]:
    """Raise the soft open-files limit to the hard one; (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def tcp_established(pid: int) -> int:
    """Established TCP connections held by process ``pid`` (its socket
    inodes matched against /proc/net/tcp and tcp6); 0 when unreadable."""
    inodes = set()
    try:
        fd_dir = "/proc/%d/fd" % pid
        for fd in os.listdir(fd_dir):
            try:
                link = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return 0
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if len(cols) > 9 and cols[3] == "01" and cols[9] in inodes:
                        count += 1
        except OSError:
            continue
    return count


def process_figures(pid: int) -> dict[str, int]:
    """fds, established TCP connections and RSS (bytes) of ``pid``."""
    from benchmarks.measure import open_fds, rss_bytes
    return {"fds": open_fds(pid), "tcp": tcp_established(pid),
            "rss": rss_bytes(pid)}


# -- the simulated hosts (worker processes) -----------------------------------

class SimHost:
    """One simulated host: its inbound socket, reply socket, arrivals."""

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.address = address
        self.sock: Any = None
        self.sub: Any = None
        self.out: Any = None
        self.member = ""
        self.fanouts: dict[int, float] = {}
        self.first: float | None = None
        self.registered = 0.0


class SimHosts:
    """The hosts of one worker process and their poll loop (one thread).

    ``spec``: ``topology``, ``hosts`` (``[(name, address)]``),
    ``registry_dir`` (oslo topologies), ``backends``/``frontends``
    (router), ``publishers`` (pub-sub), ``local_publishers`` (one per
    group, ``pub-sub-local``), ``port`` and ``reply_endpoint`` (legacy). Not thread-safe: one thread runs ``serve``.
    """

    def __init__(self, spec: dict) -> None:
        import zmq
        self.zmq = zmq
        self.spec = spec
        self.topology = spec["topology"]
        self.limit = raise_nofile()
        self.ctx = zmq.Context()
        self.ctx.set(zmq.MAX_SOCKETS, max(1024, self.limit[1]))
        self.poller = zmq.Poller()
        from nova_rpc_zmq import wire
        self.max_msg_size = wire.DEFAULT_LIMITS.max_msg_size
        self.by_sock: dict[Any, tuple[SimHost, int]] = {}
        self.by_name: dict[str, SimHost] = {}
        self.registry: Any = None
        if self.topology != LEGACY:
            from nova_rpc_zmq.oslo_driver.registry import DirectoryRegistry
            self.registry = DirectoryRegistry(spec["registry_dir"])
        self.errors: list[str] = []
        #: fanout messages that came through a SUB socket (pub-sub)
        self.published = 0
        for name, address in spec["hosts"]:
            self.add(name, address, wait_handshake=False)

    def _keys(self, host: SimHost) -> list[str]:
        base = "rpc/%s/%s" % (EXCHANGE, TOPIC)
        return [base, "%s/%s" % (base, host.name)]

    def add(self, name: str, address: str, wait_handshake: bool) -> float:
        """Open, bind or connect and register one host; returns the
        CLOCK_MONOTONIC time its registration was complete."""
        zmq = self.zmq
        host = SimHost(name, address)
        if self.topology in PROXIED:
            from nova_rpc_zmq.oslo_driver.proxied import new_member
            host.member = new_member(name)
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.ROUTING_ID, host.member.encode("ascii"))
            monitor = sock.get_monitor_socket(
                zmq.EVENT_HANDSHAKE_SUCCEEDED) if wait_handshake else None
            for backend in self.spec["backends"]:
                sock.connect("tcp://%s:0;%s" % (address, backend))
            if monitor is not None:
                self._wait_handshakes(monitor, len(self.spec["backends"]))
                sock.disable_monitor()
                monitor.close(0)
        else:
            sock = self.ctx.socket(zmq.PULL)
            port = self.spec.get("port")
            sock.bind("tcp://%s:%s" % (address, port or "*"))
            bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            host.member = "%s:%s" % (address, bound.rsplit(":", 1)[1])
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_msg_size)
        host.sock = sock
        # behind proxies the first frame is the caller's routing id
        self.by_sock[sock] = (host, 1 if self.topology in PROXIED else 0)
        self.by_name[name] = host
        self.poller.register(sock, zmq.POLLIN)
        if self.topology in SUBSCRIBED:
            from nova_rpc_zmq.oslo_driver.pubsub import subscription
            sub = self.ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.MAXMSGSIZE, self.max_msg_size)
            sub.setsockopt(zmq.SUBSCRIBE, subscription(self._keys(host)[0]))
            for publisher in subscribe_endpoints(self.spec, name):
                sub.connect("tcp://%s:0;%s" % (address, publisher))
            host.sub = sub
            # a published fanout starts with its subscription frame
            self.by_sock[sub] = (host, 1)
            self.poller.register(sub, zmq.POLLIN)
        if self.registry is not None:
            for key in self._keys(host):
                self.registry.register(key, host.member, TTL)
        host.registered = time.monotonic()
        return host.registered

    def _wait_handshakes(self, monitor: Any, count: int) -> None:
        from zmq.utils.monitor import recv_monitor_message
        deadline = time.monotonic() + 3.0
        seen = 0
        while seen < count and time.monotonic() < deadline:
            if monitor.poll(100):
                recv_monitor_message(monitor)
                seen += 1

    def _reply_socket(self, host: SimHost, reply_to: str) -> Any:
        zmq = self.zmq
        if host.out is None:
            if self.topology in PROXIED:
                out = self.ctx.socket(zmq.DEALER)
                for frontend in self.spec["frontends"]:
                    out.connect("tcp://%s:0;%s" % (host.address, frontend))
            else:
                out = self.ctx.socket(zmq.PUSH)
                endpoint = self.spec.get("reply_endpoint") or reply_to
                out.connect("tcp://%s:0;%s" % (host.address, endpoint))
            out.setsockopt(zmq.LINGER, 1000)
            out.setsockopt(zmq.SNDHWM, 10000)
            host.out = out
        return host.out

    def on_frames(self, host: SimHost, parts: list) -> bool:
        """Count or answer one message for ``host`` (its frames without
        what the proxy put before them); True for a fanout message."""
        from nova_rpc_zmq import errors, wire
        try:
            msg = wire.decode(parts)
        except errors.RemoteProtocolError as exc:
            self._error("%s: bad message (%s)" % (host.name, exc.reason))
            return False
        if not isinstance(msg, wire.Message):
            return False
        call = msg.call
        body = call.msg if call is not None else msg.body
        method = body.get(wire.METHOD_KEY)
        now = time.monotonic()
        if method == FANOUT:
            rnd = int(body.get(wire.ARGS_KEY, {}).get("round", 0))
            host.fanouts.setdefault(rnd, now)
        elif method == FIRST and host.first is None:
            host.first = now
        if call is None:
            return method == FANOUT
        reply_to = call.reply_topic[len(wire.REPLIES_PREFIX) + 1:]
        legacy = self.topology == LEGACY
        frames = wire.encode(call.msg_id,
                             call.reply_topic if legacy
                             else wire.reply_topic(reply_to),
                             msg.context if legacy else {},
                             wire.reply_body(call.msg_id, [host.name]),
                             not legacy)
        out = self._reply_socket(host, reply_to)
        if self.topology in PROXIED:
            frames = [reply_to.encode("ascii")] + frames
        try:
            out.send_multipart(frames, self.zmq.NOBLOCK)
        except self.zmq.Again:
            self._error("%s: reply socket full" % host.name)
        return False

    def _error(self, text: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(text)

    def command(self, cmd: str, arg: Any) -> Any:
        """Answer one command of the controller."""
        if cmd == "add":
            return self.add(arg[0], arg[1], wait_handshake=True)
        if cmd == "fanout":
            times = [h.fanouts[arg] for h in self.by_name.values()
                     if arg in h.fanouts]
            return len(times), max(times) if times else None
        if cmd == "first":
            host = self.by_name.get(arg)
            return None if host is None else (host.registered, host.first)
        if cmd == "figures":
            return dict(process_figures(os.getpid()),
                        errors=list(self.errors), published=self.published)
        raise ValueError("unknown command %r" % cmd)

    def serve(self, conn: Any) -> None:
        """Poll the hosts and the controller's pipe until ``stop``, the
        pipe closes (the controller is gone) or ``LIFETIME`` passes."""
        zmq = self.zmq
        end = time.monotonic() + LIFETIME
        while time.monotonic() < end:
            for sock, _ in self.poller.poll(20):
                host, skip = self.by_sock[sock]
                for _ in range(100):
                    try:
                        parts = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if self.on_frames(host, parts[skip:]) and \
                            host.sub is sock:
                        self.published += 1
            while conn.poll(0):
                try:
                    cmd, arg = conn.recv()
                except EOFError:
                    return
                if cmd == "stop":
                    return
                try:
                    conn.send(("ok", self.command(cmd, arg)))
                except Exception as exc:  # noqa: BLE001 - told to the caller
                    conn.send(("error", "%s: %s" % (type(exc).__name__, exc)))

    def close(self) -> None:
        """Unregister, close every socket, end the context."""
        for host in self.by_name.values():
            if self.registry is not None:
                for key in self._keys(host):
                    self.registry.unregister(key, host.member)
            host.sock.close(0)
            if host.sub is not None:
                host.sub.close(0)
            if host.out is not None:
                host.out.close(200)
        self.ctx.term()


def worker_main(conn: Any, spec: dict) -> None:
    """Entry point of a worker process: start its hosts, say ``ready``
    (or why not), serve commands until ``stop``."""
    logging.basicConfig(level=logging.ERROR)
    try:
        hosts = SimHosts(spec)
    except Exception as exc:  # noqa: BLE001 - told to the controller
        conn.send(("error", "%s: %s" % (type(exc).__name__, exc)))
        return
    try:
        conn.send(("ok", {"nofile": hosts.limit, "pid": os.getpid()}))
        hosts.serve(conn)
    finally:
        hosts.close()
        try:
            conn.send(("ok", "stopped"))
        except (OSError, EOFError):
            pass


class Worker:
    """The controller's handle on one worker process (one caller at a
    time: calls are serialised by a lock)."""

    def __init__(self, mp: Any, spec: dict) -> None:
        self.conn, child = mp.Pipe()
        self.proc = mp.Process(target=worker_main, args=(child, spec),
                               daemon=True)
        self.proc.start()
        child.close()
        self.lock = threading.Lock()
        self.info: dict = {}

    def _answer(self, timeout: float) -> Any:
        if not self.conn.poll(timeout):
            raise RuntimeError("worker %d did not answer within %.0fs"
                               % (self.proc.pid, timeout))
        status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError("worker %d: %s" % (self.proc.pid, value))
        return value

    def ready(self, timeout: float) -> None:
        """Wait until the worker's hosts are up; raises RuntimeError with
        the worker's reason (or after ``timeout``)."""
        with self.lock:
            self.info = self._answer(timeout)

    def ask(self, cmd: str, arg: Any = None, timeout: float = 30.0) -> Any:
        """Send ``SimHosts.command`` ``cmd`` and return its answer."""
        with self.lock:
            self.conn.send((cmd, arg))
            return self._answer(timeout)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the worker (its hosts unregister and close), SIGKILL after
        ``timeout``; releases the pipe and the process handle."""
        with self.lock:
            try:
                self.conn.send(("stop", None))
                self.conn.poll(timeout)
            except (OSError, EOFError):
                pass
            self.proc.join(timeout)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)
            self.conn.close()
            if not self.proc.is_alive():
                self.proc.close()  # its sentinel pipe
