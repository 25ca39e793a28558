"""The consumer side: connections, their sockets, and running methods.

``Connection.create_consumer(topic, proxy, fanout=False)`` connects to the
local receiver's IPC sockets, as the old driver did:

* a bare or directed topic ``compute`` / ``compute.<anything>`` -> a PULL
  socket on ``zmq_topic_compute.<rpc_zmq_host>`` (and on ``zmq_topic_compute``
  for senders that do not direct their topic); several worker processes on
  one host share such a topic, each message going to one of them;
* fanout -> a SUB socket on ``zmq_topic_fanout~compute``.

A fanout consumer proves its subscription before ``consume_in_thread``
returns: it sends a probe through the local receiver and waits to see it
(the slow-joiner effect would otherwise lose the first fanouts).

Each socket has one reader at a time, a green or native thread that runs
each message itself and then reads the next; a watchdog hands the socket to
another thread (up to ``rpc_thread_pool_size`` per socket) when a message
runs longer than HANDOFF, so a slow method never holds up the others.

A native thread's wall time is not its own: on a busy machine it waits for
a core, and handing its socket on then only adds thread switches (every
hand-off makes the next EAGER_FOR seconds hand each message on).  So past
HANDOFF the watchdog asks the kernel (``/proc/self/task/<tid>/schedstat``:
time on a core plus time waiting for one) whether the thread was runnable
over its next tick.  A thread that was mostly asleep (I/O, a nested call,
a lock) loses the socket; one that ran or waited for a core keeps it until
HANDOFF_RUNNING.  Green threads are never preempted, so for them (and where
schedstat is missing) wall time decides, as before.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable

import zmq

from nova_rpc_zmq import frames as frames_io
from nova_rpc_zmq import wire, zmqio
from nova_rpc_zmq.concurrency import Handler
from nova_rpc_zmq.errors import RemoteProtocolError, RPCException
from nova_rpc_zmq.impl_zmq.local import bind_local, unbind_local
from nova_rpc_zmq.impl_zmq.remote import bind_direct
from nova_rpc_zmq.ipcdir import ipc_path
from nova_rpc_zmq.metrics import Counters
from nova_rpc_zmq.notifications import NotificationProxy

if TYPE_CHECKING:
    from nova_rpc_zmq.config import Settings

LOG = logging.getLogger(__name__)

_DIRECT_CALL_MARK = wire.DIRECT_CALL_MARK

#: RCVTIMEO of consumer sockets, so close() is noticed promptly.
POLL_MS = 250
#: Seconds consume_in_thread waits for fanout subscriptions to be proven.
READY_TIMEOUT = 5.0
#: Seconds a native-thread consumer runs one message before another thread
#: takes over its socket.
HANDOFF = 0.002
#: Seconds a native thread that keeps running (or waiting for a core) runs
#: one message before another thread takes over its socket anyway.
HANDOFF_RUNNING = 0.05
#: Share of the wall time a native thread must have been runnable over a
#: watchdog tick to count as running rather than blocked.
RUNNABLE_SHARE = 0.5
#: Seconds after a hand-off during which messages are handed on at once.
EAGER_FOR = 0.5
#: Seconds a follower (a worker started for slow calls) waits for the
#: socket in vain before it ends, the first worker excepted.
FOLLOWER_IDLE = 5.0
#: Idle watchdog ticks (HANDOFF / 2 each) before it sleeps until a message.
PARK_AFTER = 100


class _Consumer:
    """One IPC socket feeding one proxy."""

    def __init__(self, conn: "Connection", ipc_topic: str, proxy: Any,
                 fanout: bool, extra_paths: list[str],
                 local_topics: tuple[str, ...] | list[str] = ()) -> None:
        settings = conn.settings
        self.conn = conn
        self.ipc_topic = ipc_topic
        self.proxy = proxy
        self.fanout = fanout
        # readers notice close() by polling (a green one starts its timer
        # only when it has to wait)
        self.sock = zmqio.make_socket(
            conn.ctx, zmq.SUB if fanout else zmq.PULL, linger=0,
            rcvtimeo=POLL_MS, maxmsgsize=settings.limits.max_msg_size,
            subscribe=b"" if fanout else None,
            options={zmq.RECONNECT_IVL: 20, zmq.RECONNECT_IVL_MAX: 100})
        for path in [ipc_path(settings.rpc_zmq_ipc_dir, ipc_topic)] + \
                extra_paths:
            self.sock.connect("ipc://" + path)
        # callers on this host may skip the receiver (impl_zmq.local)
        self.local_paths: list[str] = []
        if local_topics and settings.rpc_zmq_local_calls:
            self.local_paths = bind_local(self.sock,
                                          settings.rpc_zmq_ipc_dir,
                                          list(local_topics),
                                          uuid.uuid4().hex[:16])
        # callers on other hosts may skip both receivers (impl_zmq.remote):
        # one TCP port of rpc_zmq_direct_ports per directed consumer
        self.direct_port: int | None = None
        self.topics = frozenset(local_topics)
        if local_topics and not fanout and conn.direct_ports is not None:
            # last: with CURVE only this endpoint is a CURVE server
            self.direct_port = bind_direct(self.sock, settings,
                                           conn.direct_ports, ipc_topic,
                                           serve=conn.direct_serve)
        self.probe_prefix = uuid.uuid4().hex[:16] + wire.PROBE_MARK
        self.ready = conn.handler.Event()
        self.thread: Any = None

    def run(self) -> None:
        self._lead_and_follow()

    # Leader/follower with inline work (green or native threads alike; the
    # handler's locks and sleep are of the right kind). The thread holding
    # the socket (the leader) runs each message itself and reads the next
    # one; a hand-off between threads costs more than the work of a small
    # call. When a message runs longer than HANDOFF seconds, the watchdog
    # passes the socket to a follower (starting one if none waits, up to
    # rpc_thread_pool_size), so a slow method never holds up the others.
    def _lead_and_follow(self) -> None:
        handler = self.conn.handler
        self._leader = handler.Lock()
        self._state = handler.Lock()
        self._followers = 0
        self._workers = 1
        self._limit = max(1, self.conn.settings.rpc_thread_pool_size)
        self._seq = 0
        self._busy = 0        # seq of the message the leader runs, 0: none
        self._busy_at = 0.0
        self._busy_tid = 0    # the leader's kernel thread id (native only)
        # (seq, wall, runnable ns) of the leader at the last watchdog tick
        self._runnable: tuple[int, float, int] | None = None
        self._native = not handler.green
        self._parked = False  # the watchdog sleeps until the next message
        self._eager_until = 0.0  # hand off before running, until then
        self._failed = False  # the socket failed: every worker stops
        self._wake = handler.Event()
        handler.spawn(self._watchdog)
        self._worker()

    def _worker(self) -> None:
        conn = self.conn
        leader, state = self._leader, self._state
        idle_since = time.monotonic()
        while not conn.closed and not self._failed:
            with state:
                self._followers += 1
            got = leader.acquire(timeout=POLL_MS / 1000.0)
            with state:
                self._followers -= 1
                if not got and self._workers > 1 and \
                        time.monotonic() - idle_since > FOLLOWER_IDLE:
                    # A burst of slow calls is over: retire, unless the
                    # socket has no leader (the watchdog just handed it to
                    # the followers, counting on us).
                    got = leader.acquire(False)
                    if not got:
                        self._workers -= 1
                        return
            if not got:
                continue
            try:
                held = self._lead()
            except zmq.ZMQError:
                held = True
                if not conn.closed and not self._failed:
                    LOG.exception("consumer socket for %s failed",
                                  self.ipc_topic)
                self._failed = True
            if held:
                leader.release()
            idle_since = time.monotonic()
        with state:
            self._workers -= 1
            last = self._workers == 0
        if last:
            self.close_socket()

    def _lead(self) -> bool:
        """Read and run messages until the socket is handed on (False) or
        the connection closes (True: we still hold the leader lock)."""
        conn = self.conn
        process = conn.process
        sock = self.sock
        recv = zmqio.recv_function(conn.handler)
        state = self._state
        clock = time.monotonic
        tid = threading.get_native_id() if self._native else 0
        while not conn.closed and not self._failed:
            try:
                frames = recv(sock)
            except zmq.Again:
                continue  # RCVTIMEO: look at conn.closed again
            msg = self._decode(frames)
            if msg is None:
                continue
            if clock() < self._eager_until:
                # methods are running long: hand the socket on at once
                # rather than after HANDOFF, as a burst of slow calls would
                # otherwise start one thread per HANDOFF
                with state:
                    grow = self._claim_worker()
                self._leader.release()
                if grow:
                    conn.handler.spawn(self._worker)
                process(self.proxy, msg)
                return False
            with state:
                self._seq += 1
                seq = self._busy = self._seq
                self._busy_at = clock()
                self._busy_tid = tid
                wake = self._parked
                self._parked = False
            if wake:
                self._wake.set()
            process(self.proxy, msg)
            with state:
                if self._busy != seq:
                    # the watchdog gave the socket away (and cleared _busy);
                    # whoever leads now set it to their own message or 0
                    return False
                self._busy = 0
        return True

    def _claim_worker(self) -> bool:
        """Under the state lock, as the socket is released: True when no
        follower waits for it and a new worker may start (counted now)."""
        grow = self._followers == 0 and self._workers < self._limit
        if grow:
            self._workers += 1
        return grow

    def _watchdog(self) -> None:
        """Hand the socket on when a message runs longer than HANDOFF.

        Every wake-up takes the GIL from the thread running messages, so
        the watchdog sleeps until the running message would reach HANDOFF,
        and once idle it parks until a message starts."""
        conn = self.conn
        state = self._state
        sleep = conn.handler.sleep
        idle = 0
        pause = HANDOFF / 2
        while not conn.closed and not self._failed:
            if idle >= PARK_AFTER:
                if not self._wake.wait(POLL_MS / 1000.0):
                    continue  # nothing started: stay parked
                self._wake.clear()
                idle = 0
                continue
            sleep(pause)
            pause = HANDOFF / 2
            with state:
                busy = self._busy
                if not busy:
                    idle += 1
                    if idle >= PARK_AFTER:
                        self._parked = True
                    continue
                idle = 0
                ran_for = time.monotonic() - self._busy_at
                if ran_for < HANDOFF:
                    pause = max(HANDOFF - ran_for, HANDOFF / 8)
                    continue
                tid = self._busy_tid
            if self._native and ran_for < HANDOFF_RUNNING and \
                    self._keeps_running(busy, tid):
                continue
            with state:
                if self._busy != busy:
                    continue  # it finished meanwhile
                self._busy = 0  # tells the runner it lost the socket
                self._eager_until = time.monotonic() + EAGER_FOR
                grow = self._claim_worker()
                self._leader.release()
            conn.counters.incr("consumer.handoffs")
            if grow:
                conn.handler.spawn(self._worker)

    def _keeps_running(self, seq: int, tid: int) -> bool:
        """Whether the native thread ``tid`` running message ``seq`` was
        runnable (on a core or waiting for one) for most of the time since
        the previous tick; True on the first tick of a message, which only
        takes the measure.  False when the kernel does not say."""
        now = time.monotonic()
        ns = runnable_ns(tid)
        if ns is None:
            return False
        last, self._runnable = self._runnable, (seq, now, ns)
        if last is None or last[0] != seq:
            return True
        wall = now - last[1]
        return wall <= 0 or (ns - last[2]) / 1e9 >= RUNNABLE_SHARE * wall

    def close_socket(self) -> None:
        self.sock.close(0)
        unbind_local(self.local_paths)

    def _forward(self, frames: list, topic: str) -> None:
        conn = self.conn
        try:
            conn.send(conn.settings.rpc_zmq_host, list(frames), topic)
            conn.counters.incr("consumer.forwarded.wrong_topic")
        except RPCException as exc:
            conn.counters.incr("consumer.dropped.wrong_topic")
            LOG.warning("dropped a message for %s that came to the direct "
                        "socket of %s: %s", topic, self.ipc_topic, exc)

    def _decode(self, frames: list) -> Any:
        conn = self.conn
        try:
            if len(frames) == 1 and frames[0].startswith(_DIRECT_CALL_MARK):
                # a caller of ours on another host, on our TCP port
                direct = wire.decode_direct_call(frames[0],
                                                 conn.settings.limits)
                call = direct.call
                if call is not None and direct.topic not in self.topics:
                    # in the wire's form: the receiver reads only that
                    self._forward(wire.encode_call(
                        direct.msg_id, direct.topic,
                        call.msg_id, call.reply_topic, direct.context,
                        call.msg), direct.topic)
                    return None
                conn.counters.incr("consumer.received")
                return direct
            frames = frames_io.unpack(frames)  # the direct path's one part
            msg = wire.decode(frames, conn.settings.limits)
        except RemoteProtocolError as exc:
            conn.counters.incr("consumer.dropped." + exc.reason)
            LOG.warning("dropped a malformed message on %s: %s",
                        self.ipc_topic, exc)
            return None
        if isinstance(msg, wire.Probe):
            if msg.probe_id.startswith(self.probe_prefix):
                self.ready.set()
            elif conn.remote is not None:
                conn.remote.asked(msg.probe_id, self.direct_port, conn.send)
            return None
        if self.direct_port is not None and msg.topic not in self.topics:
            # only the TCP port lets in a topic the receiver would not have
            # sent here: a caller that still knows the port of a consumer
            # that is gone, now taken by us. Our receiver routes it.
            self._forward(frames, msg.topic)
            return None
        conn.counters.incr("consumer.received")
        return msg


def runnable_ns(tid: int) -> int | None:
    """Nanoseconds thread ``tid`` of this process spent on a core or waiting
    for one (the first two fields of its schedstat), or None."""
    try:
        with open("/proc/self/task/%d/schedstat" % tid, "rb") as f:
            fields = f.read().split()
        return int(fields[0]) + int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


class Connection:
    """Legacy ``Connection``: create consumers, run them, close them.

    What it needs comes from the driver: ``ctx`` (``zmqio.context``),
    ``send(host, frames, topic)`` to a receiver (for probes),
    ``process(proxy, msg)`` to run one received message (never raises),
    ``on_join(bare_topic)`` when a consumer starts, ``on_close(conn)``
    once closed; ``direct_ports`` (``remote.port_range``) and ``remote``
    (``remote.RemoteReplies``) when callers on other hosts may come
    straight to the consumers, and with CURVE ``direct_serve(sock)``
    (``curve.DirectSecurity.serve``) before a consumer binds its port.
    """

    def __init__(self, handler: Handler, ctx: Any, settings: Settings,
                 counters: Counters, *,
                 send: Callable[[str, list, str], None],
                 process: Callable[[Any, wire.Message], None],
                 on_join: Callable[[str], None] = lambda topic: None,
                 on_close: Callable[["Connection"], None] = lambda conn: None,
                 direct_ports: range | None = None,
                 remote: Any = None,
                 direct_serve: Callable[[Any], None] | None = None) -> None:
        self.handler = handler
        self.ctx = ctx
        self.settings = settings
        self.counters = counters
        self.send = send
        self.process = process
        self.on_join = on_join
        self.on_close = on_close
        self.direct_ports = direct_ports
        self.remote = remote
        self.direct_serve = direct_serve
        self.consumers: dict[str, _Consumer] = {}
        self.closed = False
        self._done = handler.Event()

    def create_consumer(self, topic: str, proxy: Any, fanout: bool = False) -> None:
        """Receive messages of ``topic`` (or its fanout) into ``proxy``.

        ``proxy`` is an RpcDispatcher or any object with ``dispatch(ctxt,
        version, method, namespace, **kwargs)``; on a notification topic
        (``notifications-info``) what ``notifications`` describes.
        Raises TypeError for a proxy that cannot take the topic's messages.
        """
        if wire.is_notification_topic(topic):
            # TypeError here, at once, when it cannot take notifications
            proxy = NotificationProxy(proxy, topic)
        elif not hasattr(proxy, "dispatch"):
            raise TypeError("proxy %r has no dispatch() method: pass an "
                            "RpcDispatcher or an object with dispatch()"
                            % (proxy,))
        bare = wire.bare_topic(topic)
        settings = self.settings
        host = settings.rpc_zmq_host
        extra: list[str] = []
        local: list[str] = []
        if fanout:
            ipc_topic = wire.fanout_topic(bare)
        else:
            ipc_topic = wire.directed_topic(bare, host)
            extra = [ipc_path(settings.rpc_zmq_ipc_dir, bare)]
            local = [ipc_topic, bare]
        wire.check_topic(ipc_topic, settings.limits)
        if ipc_topic in self.consumers:
            LOG.info("already consuming %s; skipping", ipc_topic)
            return
        self.consumers[ipc_topic] = _Consumer(self, ipc_topic, proxy, fanout,
                                              extra, local)
        self.on_join(bare)

    def _probe(self, consumer: _Consumer, n: int) -> None:
        frames = wire.encode_probe("%s%d" % (consumer.probe_prefix, n),
                                   consumer.ipc_topic)
        try:
            self.send(self.settings.rpc_zmq_host, frames, consumer.ipc_topic)
        except RPCException:
            LOG.warning("could not probe %s through the local receiver",
                        consumer.ipc_topic)

    def consume_in_thread(self) -> Any:
        """Start reading every consumer; returns once fanout subscriptions
        are proven (or after READY_TIMEOUT seconds, with a warning)."""
        handler = self.handler
        for consumer in self.consumers.values():
            if consumer.thread is None:
                consumer.thread = handler.spawn(consumer.run)
                # a directed topic's probe only makes the receiver create its
                # socket so we connect at once; any worker may swallow it
                self._probe(consumer, 0)
        deadline = time.monotonic() + READY_TIMEOUT
        pending = [c for c in self.consumers.values()
                   if c.fanout and not c.ready.is_set()]
        n = 0
        while pending and time.monotonic() < deadline:
            n += 1
            for consumer in pending:
                self._probe(consumer, n)
            for consumer in pending:
                consumer.ready.wait(min(0.05 * n, 0.5))
            pending = [c for c in pending if not c.ready.is_set()]
        for consumer in pending:
            LOG.warning("fanout consumer %s is not confirmed after %.0fs: is "
                        "nova-rpc-zmq-receiver running on this host?",
                        consumer.ipc_topic, READY_TIMEOUT)
        return self

    def consume(self) -> None:
        """Run the consumers and block until ``close()``."""
        self.consume_in_thread()
        self.wait()

    def wait(self) -> None:
        """Block until ``close()`` is called (from another thread)."""
        while not self._done.wait(1.0):
            pass

    def close(self) -> None:
        """Stop every consumer; messages already running finish in the pool."""
        if self.closed:
            return
        self.closed = True
        for consumer in self.consumers.values():
            thread = consumer.thread
            if thread is None:
                consumer.close_socket()
                continue
            # its readers see the flag within POLL_MS; a message running
            # now finishes in its thread
            self.handler.join(thread, 2 * POLL_MS / 1000.0)
        self.consumers.clear()
        self.on_close(self)
        self._done.set()

