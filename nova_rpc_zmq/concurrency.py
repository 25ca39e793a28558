"""The one concurrency seam: green threads (eventlet) or native threads.

Everything above this module asks a ``Handler`` for ``spawn``, ``sleep``,
``Event``, ``Queue``, ``Lock``, a zmq ``context``, ``recv`` and the ``zmq``
module to use; nothing else in the package imports eventlet.  ``get_handler()`` picks the green
handler when the process is monkey-patched (``"eventlet"`` in
``sys.modules`` and the socket module patched), the threading handler
otherwise, so service code that never heard of eventlet still works.
"""

from __future__ import annotations

import queue as _queue
import sys
import threading
from typing import Any, Callable

import zmq as _plain_zmq

from nova_rpc_zmq import frames as _frames


class Handler:
    """What the rest of the code needs from a concurrency model."""

    name = "abstract"
    #: True when ``spawn`` makes green threads: they switch only where one
    #: blocks, so code between blocking calls needs no lock, and a blocking
    #: C call that does not yield to the hub stops every green thread.
    green = False
    zmq: Any = _plain_zmq
    Empty = _queue.Empty

    def spawn(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def sleep(self, seconds: float) -> None:
        raise NotImplementedError

    def spawn_native(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` in a real OS thread (a daemon; even in a green
        process), for a blocking C call that must not hold up the hub.
        Returns the thread (``is_alive()``)."""
        native: Any = threading
        if "eventlet" in sys.modules:  # threading may be patched green
            from eventlet import patcher
            native = patcher.original("threading")
        t = native.Thread(target=fn, args=args, daemon=True)
        t.start()
        return t

    def Event(self) -> Any:  # noqa: N802 - mirrors threading.Event
        raise NotImplementedError

    def Queue(self, maxsize: int = 0) -> Any:  # noqa: N802
        raise NotImplementedError

    def Lock(self) -> Any:  # noqa: N802
        raise NotImplementedError

    def current(self) -> Any:
        """The running thread or green thread (what ``spawn`` returned)."""
        raise NotImplementedError

    def context(self, io_threads: int = 1, batch: bool = False) -> Any:
        """A zmq Context whose sockets block the way this model needs;
        ``batch``: its I/O threads run under SCHED_BATCH (``new_context``)."""
        return new_context(_plain_zmq.Context, io_threads, batch)

    def recv(self, sock: Any) -> list:
        """Wait for the next whole message on ``sock`` (a socket of
        ``context()``); raises ``zmq.Again`` at its RCVTIMEO."""
        return _frames.recv(sock)

    def stop(self, thread: Any) -> None:
        """End ``thread`` (what ``spawn`` returned) and wait for it.

        Green threads are killed where they block (their ``finally`` runs);
        native threads cannot be, so their loops must poll with a timeout
        and notice a flag: this only joins them.
        """
        raise NotImplementedError

    def join(self, thread: Any, timeout: float | None = None) -> None:
        """Wait (at most ``timeout`` seconds) for ``thread`` to end by
        itself; neither model kills it."""
        raise NotImplementedError

    def deadline(self, seconds: float | None) -> Any:
        """Context manager bounding a cooperative blocking call.

        Green threads: raises ``TimeoutError`` after ``seconds``. Native
        threads cannot be interrupted: callers also set socket timeouts.
        """
        raise NotImplementedError


class ThreadingHandler(Handler):
    """Native threads; blocking zmq calls release the GIL."""

    name = "threading"
    zmq = _plain_zmq

    def spawn(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> threading.Thread:
        t = threading.Thread(target=fn, args=args, kwargs=kwargs, daemon=True)
        t.start()
        return t

    def sleep(self, seconds: float) -> None:
        import time
        time.sleep(seconds)

    def Event(self) -> threading.Event:  # noqa: N802
        return threading.Event()

    def Queue(self, maxsize: int = 0) -> Any:  # noqa: N802
        # SimpleQueue is the C implementation: a third of the cost per call
        return _queue.SimpleQueue() if maxsize == 0 else _queue.Queue(maxsize)

    def current(self) -> Any:
        return threading.current_thread()

    def stop(self, thread: Any) -> None:
        if thread is not threading.current_thread():
            thread.join()

    def join(self, thread: Any, timeout: float | None = None) -> None:
        if thread is not threading.current_thread():
            thread.join(timeout)

    def deadline(self, seconds: float | None) -> Any:
        import contextlib
        return contextlib.nullcontext()

    def Lock(self) -> Any:  # noqa: N802
        return threading.Lock()


class EventletHandler(Handler):
    """Green threads; sockets come from ``eventlet.green.zmq``."""

    name = "eventlet"
    green = True

    def __init__(self) -> None:
        import eventlet
        import eventlet.event
        import eventlet.queue
        import eventlet.semaphore
        from eventlet.green import zmq as green_zmq
        self._eventlet = eventlet
        self.zmq = green_zmq
        self.Empty = eventlet.queue.Empty

    def spawn(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._eventlet.spawn(fn, *args, **kwargs)

    def sleep(self, seconds: float) -> None:
        self._eventlet.sleep(seconds)

    def Event(self) -> Any:  # noqa: N802
        return _GreenEvent()

    def Queue(self, maxsize: int = 0) -> Any:  # noqa: N802
        import eventlet.queue
        return eventlet.queue.LightQueue(maxsize or None)

    def Lock(self) -> Any:  # noqa: N802
        import eventlet.semaphore
        return eventlet.semaphore.Semaphore(1)

    def current(self) -> Any:
        return self._eventlet.getcurrent()

    def join(self, thread: Any, timeout: float | None = None) -> None:
        if thread is not self._eventlet.getcurrent() and not thread.dead:
            with self._eventlet.Timeout(timeout, False):
                thread.wait()

    def stop(self, thread: Any) -> None:
        if thread is not self._eventlet.getcurrent():
            thread.kill()

    def deadline(self, seconds: float | None) -> Any:
        return self._eventlet.Timeout(seconds, TimeoutError)

    def context(self, io_threads: int = 1, batch: bool = False) -> Any:
        return new_context(_lean_green_context_class(), io_threads, batch)

    def recv(self, sock: Any) -> list:
        return sock.recv_multipart()


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
    ctx.set(_plain_zmq.MAX_SOCKETS, socket_cap(ctx.get(_plain_zmq.SOCKET_LIMIT)))
    if batch and batch_policy_allowed():
        ctx.set(_plain_zmq.THREAD_SCHED_POLICY, _SCHED_BATCH)
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
    current limit stays and is returned.
    """
    with _fd_limit_lock:
        if not _fd_limit:
            _fd_limit.append(_raise_soft_nofile())
        return _fd_limit[0]


def _raise_soft_nofile() -> int:
    import logging
    log = logging.getLogger(__name__)
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
            log.warning("could not raise the open-files limit from %d to %d "
                        "(%s)", current, target, exc)
    log.debug("open-files limit (RLIMIT_NOFILE) %d (soft was %d, hard %s): "
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


def batch_policy_allowed() -> bool:
    """True when a thread of this process may switch itself to SCHED_BATCH.

    libzmq aborts the process when it cannot set an I/O thread's policy,
    so this asks the system first, from a short-lived thread of its own.
    """
    if not _batch_allowed:
        import os
        allowed = [False]

        def probe() -> None:
            try:
                os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
                allowed[0] = True
            except (AttributeError, OSError):
                pass

        if getattr(os, "SCHED_BATCH", None) == _SCHED_BATCH and \
                hasattr(_plain_zmq, "THREAD_SCHED_POLICY"):
            thread = threading.Thread(target=probe, daemon=True)
            thread.start()
            thread.join()
        _batch_allowed.append(allowed[0])
    return _batch_allowed[0]


_LEAN: dict[str, Any] = {}


def _lean_green_context_class() -> Any:
    """The Context class of lean green sockets (made on first use, so that
    importing this module does not import eventlet)."""
    cls = _LEAN.get("context")
    if cls is None:
        cls = _LEAN["context"] = _make_lean_green_classes()
    return cls


def _make_lean_green_classes() -> Any:
    import time

    from eventlet.hubs import trampoline
    from eventlet.semaphore import Semaphore

    from eventlet import sleep as green_sleep

    zmq = _plain_zmq
    noblock = int(zmq.NOBLOCK)
    events, pollin = int(zmq.EVENTS), int(zmq.POLLIN)
    fd_opt, rcvtimeo, sndtimeo = int(zmq.FD), int(zmq.RCVTIMEO), int(zmq.SNDTIMEO)
    again = zmq.Again
    plain = zmq.Socket
    plain_recv, plain_send = plain.recv, plain.send
    fast_recv = _frames.recv

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
            ms = plain.getsockopt(self, option)
            return None if ms < 0 else time.monotonic() + ms / 1000.0

        def _wait_readable(self, deadline: float | None) -> None:
            if plain.getsockopt(self, events) & pollin:
                return  # processing commands found a message
            timeout = None
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    raise again()
            lock = self.__dict__.get("_lean_readers")
            if lock is None:
                lock = self.__dict__["_lean_readers"] = Semaphore(1)
                self.__dict__["_lean_fd"] = plain.getsockopt(self, fd_opt)
            with lock:
                if plain.getsockopt(self, events) & pollin:
                    return
                trampoline(self.__dict__["_lean_fd"], read=True,
                           timeout=timeout, timeout_exc=again)

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
                    if deadline is not None and time.monotonic() >= deadline:
                        raise
                    green_sleep(delay)
                    delay = min(delay * 2, 0.01)

    class LeanGreenContext(zmq.Context):
        _socket_class = LeanGreenSocket

    return LeanGreenContext


class _GreenEvent:
    """threading.Event look-alike for green threads (set/is_set/wait)."""

    def __init__(self) -> None:
        import eventlet.event
        self._mod = eventlet.event
        self._ev = eventlet.event.Event()

    def set(self) -> None:
        if not self._ev.ready():
            self._ev.send(True)

    def is_set(self) -> bool:
        return self._ev.ready()

    def clear(self) -> None:
        if self._ev.ready():
            self._ev = self._mod.Event()

    def wait(self, timeout: float | None = None) -> bool:
        if self._ev.ready():
            return True
        import eventlet
        with eventlet.Timeout(timeout, False):
            self._ev.wait()
        return self._ev.ready()


def original(name: str) -> Any:
    """The module ``name`` as it was before eventlet patched it (the module
    itself when eventlet is not loaded): for code that runs in a native
    thread (``spawn_native``) and must block there, not on the hub."""
    if "eventlet" in sys.modules:
        from eventlet import patcher
        return patcher.original(name)
    import importlib
    return importlib.import_module(name)


def is_monkey_patched() -> bool:
    """True when eventlet has patched this process's socket module.

    Looks in ``sys.modules`` only: importing eventlet to find out would
    itself disturb a plain threaded process.
    """
    if "eventlet" not in sys.modules:
        return False
    try:
        patcher = sys.modules["eventlet"].patcher
        return bool(patcher.is_monkey_patched("socket")
                    or patcher.is_monkey_patched("thread"))
    except AttributeError:
        return False


_handlers: dict[str, Handler] = {}
_handlers_lock = threading.Lock()


def get_handler(name: str | None = None) -> Handler:
    """The handler for ``name`` ('eventlet' or 'threading'), or the one that
    fits this process when ``name`` is None. Handlers are shared singletons."""
    if name is None:
        name = "eventlet" if is_monkey_patched() else "threading"
    if name not in ("eventlet", "threading"):
        raise ValueError("unknown concurrency handler %r: use 'eventlet' or "
                         "'threading'" % name)
    with _handlers_lock:
        h = _handlers.get(name)
        if h is None:
            h = EventletHandler() if name == "eventlet" else ThreadingHandler()
            _handlers[name] = h
        return h


def term_context(ctx: Any, handler: Handler, timeout: float) -> bool:
    """End the zmq context ``ctx`` within ``timeout`` seconds; True if it
    ended.

    ZeroMQ's ``term()`` waits for every socket of the context to close, and
    one still held by a method that runs on (a 30 s call when the service
    stops) would keep it waiting that long or for ever. So it runs in a
    native thread, waited for with the handler's sleep (a green hub keeps
    running); past ``timeout`` it is left to end with the process, logged.
    """
    import logging
    import time
    thread = handler.spawn_native(ctx.term)
    deadline = time.monotonic() + timeout
    pause = 0.001
    while thread.is_alive() and time.monotonic() < deadline:
        handler.sleep(pause)
        pause = min(pause * 2, 0.05)
    if thread.is_alive():
        logging.getLogger(__name__).warning(
            "ZeroMQ context still has open sockets after %.1fs (a method still "
            "running?); leaving it to the process's exit", timeout)
        return False
    return True
