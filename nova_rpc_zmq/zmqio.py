"""The driver's ZeroMQ I/O: contexts, sockets, receiving whole messages.

Every ZeroMQ context and socket of the package is made here, so that the
options a socket carries (linger, high-water marks, timeouts, size limit)
are set in one place and read in one call::

    ctx = zmqio.context(handler, io_threads=1)
    sock = zmqio.make_socket(ctx, zmq.PUSH, linger=0, sndhwm=1000)
    frames = zmqio.recv(handler, sock)
    ...
    zmqio.term_context(ctx, handler, timeout=5.0)

``context(handler)`` gives sockets that block the way ``handler``'s threads
need: lean green sockets that wait in the eventlet hub when
``handler.green``, plain sockets for native threads. Constants and
exceptions are plain ``zmq``'s in both cases. Here too: the process's
open-files limit and the per-context socket cap derived from it, and the
I/O threads' scheduling policy. This module never imports eventlet: a
green socket waits through the handler (``wait_readable``, ``Lock``,
``sleep``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable

import zmq

from nova_rpc_zmq import concurrency
from nova_rpc_zmq import frames as _frames

LOG = logging.getLogger(__name__)


def context(handler: concurrency.Handler, io_threads: int = 1,
            batch: bool = False) -> zmq.Context:
    """A ZeroMQ context for sockets used from ``handler``'s threads, with
    ``io_threads`` I/O threads (run under SCHED_BATCH when ``batch`` and
    the system allows it) and a socket cap below the open-files limit.

    Raises ``zmq.ZMQError`` when libzmq cannot make the context. Call it
    from any thread; terminate it with ``term_context``.
    """
    cls = _lean_green_context_class(handler) if handler.green else zmq.Context
    return new_context(cls, io_threads, batch)


def make_socket(ctx: Any, kind: int, *, linger: int | None = None,
                hwm: int | None = None, sndhwm: int | None = None,
                rcvhwm: int | None = None, rcvtimeo: int | None = None,
                sndtimeo: int | None = None, maxmsgsize: int | None = None,
                immediate: bool | None = None,
                subscribe: bytes | None = None,
                options: dict[int, Any] | None = None,
                native: bool = False) -> Any:
    """A socket of ``kind`` (``zmq.PUSH``...) on ``ctx`` with the options
    given set before it binds or connects.

    ``hwm`` sets both high-water marks; ``sndhwm``/``rcvhwm`` override one
    side. Times are milliseconds, ``linger=0`` drops unsent messages at
    close. ``subscribe`` (SUB sockets) subscribes to that prefix.
    ``options`` sets any other option by its ``zmq`` constant. ``native``
    makes a plain socket even on a green context, for a socket used only
    from a native thread (or only without blocking). On an error the
    socket is closed and the ``zmq.ZMQError`` raised. Like every ZeroMQ
    socket, the one returned belongs to one thread at a time.
    """
    sock = zmq.Socket(ctx, kind) if native else ctx.socket(kind)
    try:
        # hwm first, so that sndhwm / rcvhwm given too override one side
        for option, value in ((zmq.LINGER, linger), (zmq.SNDHWM, hwm),
                              (zmq.RCVHWM, hwm), (zmq.SNDHWM, sndhwm),
                              (zmq.RCVHWM, rcvhwm), (zmq.RCVTIMEO, rcvtimeo),
                              (zmq.SNDTIMEO, sndtimeo),
                              (zmq.MAXMSGSIZE, maxmsgsize)):
            if value is not None:
                sock.setsockopt(option, int(value))
        if immediate is not None:
            sock.setsockopt(zmq.IMMEDIATE, 1 if immediate else 0)
        for extra, setting in (options or {}).items():
            sock.setsockopt(extra, setting)
        if subscribe is not None:
            sock.setsockopt(zmq.SUBSCRIBE, subscribe)
    except BaseException:
        sock.close(0)
        raise
    return sock


def recv(handler: concurrency.Handler, sock: Any) -> list:
    """The next whole message on ``sock`` (a socket of ``context(handler)``)
    as a list of bytes; raises ``zmq.Again`` at the socket's RCVTIMEO.

    Blocks the calling thread (green: only the calling green thread).
    A loop binds ``recv_function(handler)`` once instead.
    """
    return recv_function(handler)(sock)


def recv_function(handler: concurrency.Handler) -> Callable[[Any], list]:
    """The function ``recv(handler, sock)`` calls, to bind once in a loop."""
    return _green_recv if handler.green else _frames.recv


def _green_recv(sock: Any) -> list:
    return sock.recv_multipart()


def term_context(ctx: Any, handler: concurrency.Handler,
                 timeout: float) -> bool:
    """End the zmq context ``ctx`` within ``timeout`` seconds; True if it
    ended.

    ZeroMQ's ``term()`` waits for every socket of the context to close, and
    one still held by a method that runs on (a 30 s call when the service
    stops) would keep it waiting that long or for ever. So it runs in a
    native thread, waited for with the handler's sleep (a green hub keeps
    running); past ``timeout`` it is left to end with the process, logged.
    """
    thread = handler.spawn_native(ctx.term)
    deadline = time.monotonic() + timeout
    pause = 0.001
    while thread.is_alive() and time.monotonic() < deadline:
        handler.sleep(pause)
        pause = min(pause * 2, 0.05)
    if thread.is_alive():
        LOG.warning("ZeroMQ context still has open sockets after %.1fs (a "
                    "method still running?); leaving it to the process's "
                    "exit", timeout)
        return False
    return True


def new_context(cls: Any, io_threads: int, batch: bool) -> Any:
    """A zmq Context of class ``cls`` with ``io_threads`` I/O threads.

    ``batch`` runs the I/O threads under SCHED_BATCH where the system
    allows it. A thread that hands a message to an I/O thread wakes it;
    under the normal policy the woken thread preempts the sender at once,
    two thread switches per message. Under SCHED_BATCH it waits for a
    free core or the sender's next pause, and then moves every message
    queued by then: under load, more messages per wake-up and less CPU per
    call (a quarter less, measured with 16 callers in benchmarks/); one
    call at a time can take a little longer.
    """
    ctx = cls(io_threads)
    # libzmq's default cap (1,023 sockets) is far below what a controller
    # fanning out to thousands of hosts, or a receiver with thousands of
    # topics, needs; each socket costs at least one descriptor, so the
    # descriptor limit is the real budget.
    ctx.set(zmq.MAX_SOCKETS, socket_cap(ctx.get(zmq.SOCKET_LIMIT)))
    if batch and batch_policy_allowed():
        ctx.set(zmq.THREAD_SCHED_POLICY, _SCHED_BATCH)
    return ctx


#: Descriptors kept out of the sockets' budget for everything else a
#: process opens (TCP connections, log files, database and liveness links).
FD_RESERVE = 64
_fd_limit: list[int] = []
_fd_limit_lock = threading.Lock()


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (once per
    process) and return the soft limit now in force.

    Logs once what was set. Never raises: where the system refuses, the
    current limit stays and is returned. Thread-safe.
    """
    with _fd_limit_lock:
        if not _fd_limit:
            _fd_limit.append(_raise_soft_nofile())
        return _fd_limit[0]


def _raise_soft_nofile() -> int:
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 1024
    infinity = resource.RLIM_INFINITY
    # Linux refuses an infinite soft limit: nr_open is the real ceiling
    target = _nr_open() if hard == infinity else hard
    current = _nr_open() if soft == infinity else soft
    if current < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            current = target
        except (OSError, ValueError) as exc:
            LOG.warning("could not raise the open-files limit from %d to %d "
                        "(%s)", current, target, exc)
    LOG.debug("open-files limit (RLIMIT_NOFILE) %d (soft was %d, hard %s): "
              "ZeroMQ sockets of this process are capped by it; for more "
              "peers or topics raise `ulimit -n` / LimitNOFILE= in the "
              "service's systemd unit", current, soft,
              "unlimited" if hard == infinity else hard)
    return int(current)


def _nr_open() -> int:
    """The kernel's ceiling on descriptors per process (Linux), or 1 Mi."""
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1 << 20


def socket_cap(socket_limit: int) -> int:
    """How many sockets one context may hold: the open-files limit (raised
    first, see ``raise_fd_limit``) less ``FD_RESERVE``, at most libzmq's
    own ``socket_limit``. Below the descriptor limit, so that an
    exhausted budget shows as a refused socket (EMFILE from ``socket()``)
    rather than as a connection or file that cannot be opened elsewhere."""
    budget = max(raise_fd_limit() - FD_RESERVE, FD_RESERVE)
    return min(int(socket_limit), budget)


_SCHED_BATCH = 3  # Linux's number for SCHED_BATCH
_batch_allowed: list[bool] = []


def batch_this_thread() -> bool:
    """Put the calling native thread under SCHED_BATCH; False where the
    system refuses it (the thread keeps its policy)."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        return False
    return True


def hand_over() -> None:
    """Let this thread's core go to a thread that waits for it, as a
    native thread does after queueing a lone message in libzmq.

    The send woke the context's I/O thread, which under SCHED_BATCH does
    not preempt the sender: it waits for a free core or for the sender to
    block. An oslo.messaging caller still has 20-40 µs of Python to run
    before it blocks for the reply (the call context, our wait), and a
    server's executor worker as long after the reply (oslo.messaging's
    futures and statistics), so the message left the host only after
    them. Giving the core up (``sched_yield``) lets the I/O thread write
    it first. Used only when the message is the only one in flight (one
    call waiting, one request being served): under load the I/O thread
    finds a core anyway, and a yield is a syscall and a context switch.
    """
    _sched_yield()


_sched_yield = getattr(os, "sched_yield", lambda: None)


def batch_policy_allowed() -> bool:
    """True when a thread of this process may switch itself to SCHED_BATCH.

    libzmq aborts the process when it cannot set an I/O thread's policy,
    so this asks the system first (once), from a short-lived native thread
    of its own; blocks for that thread's start and end.
    """
    if not _batch_allowed:
        allowed = [False]

        def probe() -> None:
            allowed[0] = batch_this_thread()

        if getattr(os, "SCHED_BATCH", None) == _SCHED_BATCH and \
                hasattr(zmq, "THREAD_SCHED_POLICY"):
            thread = concurrency.original("threading").Thread(
                target=probe, daemon=True)
            thread.start()
            thread.join()
        _batch_allowed.append(allowed[0])
    return _batch_allowed[0]


_LEAN: dict[int, Any] = {}
_LEAN_LOCK = threading.Lock()


def _lean_green_context_class(handler: concurrency.Handler) -> Any:
    """The Context class of lean green sockets waiting through ``handler``
    (made on first use, once per handler)."""
    cls = _LEAN.get(id(handler))
    if cls is None:
        with _LEAN_LOCK:
            cls = _LEAN.get(id(handler))
            if cls is None:
                cls = _LEAN[id(handler)] = _make_lean_green_classes(handler)
    return cls


def _make_lean_green_classes(handler: concurrency.Handler) -> Any:
    noblock = int(zmq.NOBLOCK)
    events, pollin = int(zmq.EVENTS), int(zmq.POLLIN)
    fd_opt, rcvtimeo, sndtimeo = int(zmq.FD), int(zmq.RCVTIMEO), int(zmq.SNDTIMEO)
    again = zmq.Again
    plain: Any = zmq.Socket
    plain_recv, plain_send = plain.recv, plain.send
    getsockopt: Callable[[Any, int], int] = plain.getsockopt
    fast_recv = _frames.recv
    fd_watch = handler.fd_watch
    new_lock = handler.Lock
    green_sleep = handler.sleep
    monotonic = time.monotonic

    class LeanGreenSocket(plain):
        """A zmq socket for green threads at about a plain socket's cost.

        ``eventlet.green.zmq`` makes every operation safe for many green
        threads on one socket, at several Python calls and a wake-up of
        each waiter per message part. Our sockets have one reader each and
        send without blocking, so: non-blocking calls go straight to
        libzmq; a blocking receive waits in the hub for the socket's FD
        (readers take turns); a blocking send, which only a full peer
        queue causes, retries every few milliseconds. RCVTIMEO and
        SNDTIMEO raise ``zmq.Again`` as with a plain socket.
        """

        def _deadline(self, option: int) -> float | None:
            # RCVTIMEO and SNDTIMEO are kept (a getsockopt per wait is a
            # Python enum lookup in pyzmq); ``set`` forgets them
            timeouts = self.__dict__.get("_lean_timeouts")
            if timeouts is None:
                timeouts = self.__dict__["_lean_timeouts"] = {}
            ms = timeouts.get(option)
            if ms is None:
                ms = timeouts[option] = getsockopt(self, option)
            return None if ms < 0 else monotonic() + ms / 1000.0

        def set(self, option: int, optval: Any) -> None:
            self.__dict__.pop("_lean_timeouts", None)
            plain.set(self, option, optval)

        setsockopt = set

        def _wait_readable(self, deadline: float | None) -> None:
            """Wait for the socket's FD after a non-blocking receive found
            nothing. That receive processed the socket's commands, so the
            FD turns readable at the next message, unless another reader
            of the socket ran since: then EVENTS is asked first."""
            timeout = None
            if deadline is not None:
                timeout = deadline - monotonic()
                if timeout <= 0:
                    raise again()
            lock = self.__dict__.get("_lean_readers")
            if lock is None:
                lock = self.__dict__["_lean_readers"] = new_lock()
                self.__dict__["_lean_watch"] = fd_watch(
                    getsockopt(self, fd_opt))
            if lock.acquire(False):
                try:
                    self.__dict__["_lean_watch"].wait(timeout, again)
                finally:
                    lock.release()
                return
            with lock:
                if getsockopt(self, events) & pollin:
                    return
                self.__dict__["_lean_watch"].wait(timeout, again)

        def close(self, linger: int | None = None) -> None:
            watch = self.__dict__.pop("_lean_watch", None)
            if watch is not None:
                # before libzmq closes the fd; a reader still waiting is
                # told as a closed plain socket would tell it
                watch.close(zmq.ZMQError(zmq.ENOTSOCK))
            plain.close(self, linger)

        def recv(self, flags: int = 0, copy: bool = True,
                 track: bool = False) -> Any:
            if flags & noblock:
                return plain_recv(self, flags, copy, track)
            deadline: Any = False
            while True:
                try:
                    return plain_recv(self, flags | noblock, copy, track)
                except again:
                    if deadline is False:
                        deadline = self._deadline(rcvtimeo)
                    self._wait_readable(deadline)

        def recv_multipart(self, flags: int = 0, copy: bool = True,
                           track: bool = False) -> list:
            if not copy or track:
                # Frames wanted: pyzmq's loop over our recv (which waits)
                return plain.recv_multipart(self, flags, copy, track)
            if flags & noblock:
                return fast_recv(self, noblock)
            deadline: Any = False
            while True:
                try:
                    # parts after the first are there already: a message
                    # arrives whole
                    return fast_recv(self, noblock)
                except again:
                    if deadline is False:
                        deadline = self._deadline(rcvtimeo)
                    self._wait_readable(deadline)

        def send(self, data: Any, flags: int = 0, copy: bool = True,
                 track: bool = False, **kwargs: Any) -> Any:
            if flags & noblock:
                return plain_send(self, data, flags, copy, track, **kwargs)
            deadline: Any = False
            delay = 0.0005
            while True:
                try:
                    return plain_send(self, data, flags | noblock, copy,
                                      track, **kwargs)
                except again:
                    if deadline is False:
                        deadline = self._deadline(sndtimeo)
                    if deadline is not None and monotonic() >= deadline:
                        raise
                    green_sleep(delay)
                    delay = min(delay * 2, 0.01)

    class LeanGreenContext(zmq.Context):
        _socket_class = LeanGreenSocket

    return LeanGreenContext
