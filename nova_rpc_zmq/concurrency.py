"""The one concurrency seam: green threads (eventlet) or native threads.

Everything above this module asks a ``Handler`` for threads, pauses,
events, queues and locks; nothing else in the package imports eventlet.
``get_handler()`` picks the green handler when the process is
monkey-patched (``"eventlet"`` in ``sys.modules`` and the socket module
patched), the threading handler otherwise, so service code that never
heard of eventlet still works. Code that must behave differently under the
two asks a capability (``handler.green``), never the handler's name.

The contract each handler keeps, method by method, is in the docstrings
of ``Handler`` below: what blocks (the calling thread, or with green
threads only the calling green thread, the others running meanwhile),
what it raises, and what may be called from where. Two rules hold for all:

* a green handler's objects (events, queues, locks) are for the green
  threads of one OS thread, the one running the hub; a native thread
  (``spawn_native``) must not touch them;
* a blocking C call in a green thread (one that does not wait through
  ``wait_readable``, ``sleep`` or the patched modules) stops every green
  thread until it returns: run it with ``spawn_native``.

ZeroMQ contexts and sockets are made by ``zmqio``, the layer above, from a
handler: ``zmqio.context(handler)``.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import os
import queue as _queue
import select
import sys
import threading
import time
from typing import Any, Callable


class Handler:
    """What the rest of the code needs from a concurrency model.

    Handlers are shared singletons (``get_handler``); their methods may be
    called from any thread of their model.
    """

    #: The model's label ('threading', 'eventlet'), for ``get_handler``
    #: and log lines. Callers that need to tell models apart ask ``green``.
    name = "abstract"
    #: True when ``spawn`` makes green threads: they switch only where one
    #: blocks, so code between blocking calls needs no lock, and a blocking
    #: C call that does not yield to the hub stops every green thread.
    green = False
    #: Raised by ``Queue().get`` at its timeout (and ``get_nowait``).
    Empty = _queue.Empty
    #: Raised by ``Queue(maxsize).put`` at its timeout (and ``put_nowait``).
    Full = _queue.Full

    def spawn(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in a new thread of this model and
        return it (an object for ``join``, ``stop``, ``current``).

        Does not block; a green thread first runs when the caller next
        blocks. An exception that ends ``fn`` is printed by the model (a
        traceback on stderr) and raised nowhere else: ``fn`` logs what it
        must. Native threads are daemons.
        """
        raise NotImplementedError

    def spawn_native(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in a real OS thread (a daemon; even in a green
        process), for a blocking C call that must not hold up the hub.

        Returns the thread (``is_alive()``, ``join(timeout)``); does not
        block. ``fn`` must not touch a green handler's objects.
        """
        t = original("threading").Thread(target=fn, args=args, daemon=True)
        t.start()
        return t

    def sleep(self, seconds: float) -> None:
        """Pause the calling thread for ``seconds``; ``sleep(0)`` lets the
        other green threads run (a green handler) or does nearly nothing."""
        raise NotImplementedError

    def Event(self) -> Any:  # noqa: N802 - mirrors threading.Event
        """A flag threads wait for: ``set()``, ``clear()``, ``is_set()``,
        ``wait(timeout=None) -> bool`` (False when the timeout passed
        first; never raises for it). ``set`` wakes every waiter."""
        raise NotImplementedError

    def Queue(self, maxsize: int = 0) -> Any:  # noqa: N802
        """A FIFO queue, unbounded when ``maxsize`` is 0.

        ``put(item, block=True, timeout=None)``, ``get(block=True,
        timeout=None)``, ``put_nowait``, ``get_nowait``, ``qsize()``,
        ``empty()``. ``get`` raises ``self.Empty`` and a bounded ``put``
        ``self.Full`` at their timeout. Many producers and consumers may
        share it.
        """
        raise NotImplementedError

    def Mailbox(self, others: int = 0) -> Any:  # noqa: N802
        """An unbounded FIFO that many put into and one thread takes from:
        ``put(item)``, ``get(timeout=None)`` (raises ``self.Empty`` at
        its timeout), ``qsize()``. What a caller waits on for its
        replies; ``others``: how many other calls of the process wait
        now (the native handler chooses its kind by it)."""
        return self.Queue()

    def Lock(self) -> Any:  # noqa: N802
        """A mutex (``with lock:``, ``acquire(blocking=True)``,
        ``release()``), not re-entrant: a thread that holds it and takes
        it again waits for ever."""
        raise NotImplementedError

    def current(self) -> Any:
        """The running thread or green thread (what ``spawn`` returned for
        it)."""
        raise NotImplementedError

    def stop(self, thread: Any) -> None:
        """End ``thread`` (what ``spawn`` returned) and wait for it.

        Green threads are killed where they block (their ``finally``
        runs); native threads cannot be, so their loops must poll with a
        timeout and notice a flag: this only joins them, and blocks until
        they end. Does nothing when ``thread`` is the caller or has ended;
        never raises ``thread``'s exception.
        """
        raise NotImplementedError

    def join(self, thread: Any, timeout: float | None = None) -> None:
        """Wait (at most ``timeout`` seconds, None: no limit) for
        ``thread`` to end by itself; neither model kills it.

        Returns at the timeout without raising (ask the thread whether it
        ended); never raises ``thread``'s exception; does nothing when
        ``thread`` is the caller.
        """
        raise NotImplementedError

    def deadline(self, seconds: float | None) -> Any:
        """Context manager bounding a cooperative blocking call.

        Green threads: raises ``TimeoutError`` in the block after
        ``seconds`` (None: no limit), wherever it waits. Native threads
        cannot be interrupted, so this does nothing: callers also set
        socket and queue timeouts.
        """
        raise NotImplementedError

    def wait_readable(self, fd: int, timeout: float | None = None,
                      timeout_exc: Any = TimeoutError) -> None:
        """Block until the file descriptor ``fd`` is readable; raises
        ``timeout_exc()`` after ``timeout`` seconds (None: no limit).

        Green: only the calling green thread waits, in the hub; one fd may
        have one waiter at a time. Native: ``poll(2)`` in the calling
        thread. A readable ZeroMQ FD means "look at the socket's events",
        not that a message is there.
        """
        poller = original("select").poll()
        poller.register(fd, original("select").POLLIN)
        if not poller.poll(None if timeout is None else max(0, timeout) * 1000):
            raise timeout_exc()

    def fd_watch(self, fd: int) -> Any:
        """A waiter for ``fd`` that a reader keeps for as long as it reads
        it: ``wait(timeout, timeout_exc)`` as ``wait_readable``, and
        ``close(exc)`` before the fd is closed (a thread still waiting
        gets ``exc``, where the handler can interrupt a wait). Green: the hub keeps watching
        the fd between waits (two system calls less per wait)."""
        return _PollWatch(self, fd)


class _PollWatch:
    """``fd_watch`` of native threads: ``wait_readable`` each time."""

    __slots__ = ("handler", "fd")

    def __init__(self, handler: Handler, fd: int) -> None:
        self.handler = handler
        self.fd = fd

    def wait(self, timeout: float | None, timeout_exc: Any) -> None:
        self.handler.wait_readable(self.fd, timeout, timeout_exc)

    def close(self, exc: BaseException | None = None) -> None:
        pass


class ThreadingHandler(Handler):
    """Native threads; blocking zmq calls release the GIL."""

    name = "threading"

    def spawn(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> threading.Thread:
        t = threading.Thread(target=fn, args=args, kwargs=kwargs, daemon=True)
        t.start()
        return t

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def Event(self) -> threading.Event:  # noqa: N802
        return threading.Event()

    def Queue(self, maxsize: int = 0) -> Any:  # noqa: N802
        # SimpleQueue is the C implementation: a third of the cost per call
        return _queue.SimpleQueue() if maxsize == 0 else _queue.Queue(maxsize)

    def Lock(self) -> Any:  # noqa: N802
        return threading.Lock()

    def Mailbox(self, others: int = 0) -> Any:  # noqa: N802
        # an eventfd wake-up lets the GIL go and takes it back: cheaper
        # than a futex wake with the GIL held while few threads want the
        # GIL, dearer once many do (see _FdMailbox)
        if _ThreadFd.available and others < FD_WAKE_BELOW:
            return _FdMailbox()
        return _queue.SimpleQueue()

    def current(self) -> Any:
        return threading.current_thread()

    def stop(self, thread: Any) -> None:
        if thread is not threading.current_thread():
            thread.join()

    def join(self, thread: Any, timeout: float | None = None) -> None:
        if thread is not threading.current_thread():
            thread.join(timeout)

    def deadline(self, seconds: float | None) -> Any:
        return contextlib.nullcontext()


class EventletHandler(Handler):
    """Green threads of eventlet, all in the OS thread running the hub."""

    name = "eventlet"
    green = True

    def __init__(self) -> None:
        import eventlet
        import eventlet.event
        import eventlet.queue
        import eventlet.semaphore
        from eventlet.hubs import trampoline
        self._eventlet = eventlet
        self._trampoline = trampoline
        self._semaphore = eventlet.semaphore.Semaphore
        self._light_queue = eventlet.queue.LightQueue
        self.Empty = eventlet.queue.Empty
        self.Full = eventlet.queue.Full

    def spawn(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._eventlet.spawn(fn, *args, **kwargs)

    def sleep(self, seconds: float) -> None:
        self._eventlet.sleep(seconds)

    def Event(self) -> Any:  # noqa: N802
        return _GreenEvent()

    def Queue(self, maxsize: int = 0) -> Any:  # noqa: N802
        return self._light_queue(maxsize or None)

    def Mailbox(self, others: int = 0) -> Any:  # noqa: N802
        return _GreenMailbox(self.Empty)

    def Lock(self) -> Any:  # noqa: N802
        return self._semaphore(1)

    def current(self) -> Any:
        return self._eventlet.getcurrent()

    def stop(self, thread: Any) -> None:
        if thread is not self._eventlet.getcurrent():
            thread.kill()

    def join(self, thread: Any, timeout: float | None = None) -> None:
        if thread is self._eventlet.getcurrent() or thread.dead:
            return
        timer = self._eventlet.Timeout(timeout, False)
        with timer:
            try:
                thread.wait()
            except BaseException as exc:  # noqa: BLE001 - see below
                # wait() re-raises what ended the thread (GreenletExit when
                # killed); a native join does not, and the model printed it.
                if exc is timer:
                    raise

    def deadline(self, seconds: float | None) -> Any:
        return self._eventlet.Timeout(seconds, TimeoutError)

    def wait_readable(self, fd: int, timeout: float | None = None,
                      timeout_exc: Any = TimeoutError) -> None:
        self._trampoline(fd, read=True, timeout=timeout,
                         timeout_exc=timeout_exc)

    def fd_watch(self, fd: int) -> Any:
        return _HubWatch(fd)


class _HubWatch:
    """``fd_watch`` of green threads: one listener of the hub on ``fd``,
    kept between waits.

    ``trampoline`` adds a listener to the hub for each wait and removes it
    after (an ``epoll_ctl`` each, and Python objects): on a socket read in
    a loop that is a fifth of the reader's work. This one stays while the
    reader comes back to wait; when the fd turns readable with no one
    waiting (the reader is busy elsewhere, in the hub), it is removed at
    once, or the hub would call it on every turn (the poll is
    level-triggered), and added again at the next wait.
    """

    __slots__ = ("fd", "hub", "listener", "waiter", "_current")

    def __init__(self, fd: int) -> None:
        from eventlet import getcurrent
        from eventlet.hubs import get_hub
        self.fd = fd
        self.hub = get_hub()
        self._current = getcurrent
        self.listener: Any = None
        self.waiter: Any = None

    def wait(self, timeout: float | None, timeout_exc: Any) -> None:
        hub = self.hub
        current = self._current()
        if hub.greenlet is current:
            raise RuntimeError("do not wait for a socket in the hub")
        if self.waiter is not None:
            raise RuntimeError("a second green thread waits for fd %d"
                               % self.fd)
        timer = None
        if timeout is not None:
            timer = hub.schedule_call_global(timeout, current.throw,
                                             timeout_exc)
        self.waiter = current
        try:
            if self.listener is None:
                self.listener = self._add()
            hub.switch()
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    def _add(self) -> Any:
        hub = self.hub
        stale = hub.listeners[hub.READ].get(self.fd)
        owner = getattr(getattr(stale, "cb", None), "__self__", None)
        if isinstance(owner, _HubWatch) and owner is not self and \
                owner.waiter is None:
            # a watch of a socket that was dropped without close(); its
            # fd number is ours now
            owner._remove()
        return hub.add(hub.READ, self.fd, self._readable, self._obsolete,
                       None)

    def _readable(self, _fd: int) -> None:
        waiter = self.waiter
        if waiter is None:
            self._remove()
            return
        waiter.switch()

    def _obsolete(self, exc: BaseException) -> None:
        """The hub saw the fd closed and reused: wake the waiter with it."""
        self.listener = None
        waiter = self.waiter
        if waiter is not None:
            waiter.throw(exc)

    def _remove(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            self.hub.remove(listener)

    def close(self, exc: BaseException | None = None) -> None:
        """Stop watching (before the fd is closed); a green thread still
        waiting gets ``exc`` raised (soon, from the hub)."""
        self._remove()
        waiter = self.waiter
        if waiter is not None and exc is not None:
            self.hub.schedule_call_global(0, waiter.throw, exc)


class _GreenMailbox:
    """``Mailbox`` of green threads.

    A ``LightQueue`` serves many getters: each wait makes a waiter object
    and a ``Timeout``, each put a timer that finds the waiter. A caller's
    replies have one reader, so this keeps the reader itself and one
    timer for its timeout. A put from another green thread (the reply
    listener) switches to the waiting reader at once and comes back at the
    hub's next turn, as ``sleep(0)`` would: the reply reaches its caller
    before the listener goes back to its socket. A put from the hub or a
    native thread schedules the wake-up instead, which does nothing if the
    reader has gone (timed out) or already took the item.
    """

    __slots__ = ("_items", "_waiter", "_hub", "_current", "_empty")

    def __init__(self, empty: Any) -> None:
        from eventlet import getcurrent
        from eventlet.hubs import get_hub
        self._items: collections.deque = collections.deque()
        self._waiter: Any = None
        self._hub = get_hub()
        self._current = getcurrent
        self._empty = empty

    def qsize(self) -> int:
        return len(self._items)

    def put(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is None:
            return
        hub = self._hub
        current = self._current()
        if current.parent is not hub.greenlet or current is hub.greenlet:
            hub.schedule_call_global(0, self._wake, waiter)
            return
        self._waiter = None
        hub.schedule_call_global(0, current.switch)
        waiter.switch()

    def _wake(self, waiter: Any) -> None:
        if self._waiter is waiter and self._items:
            self._waiter = None
            waiter.switch()

    def get(self, timeout: float | None = None) -> Any:
        items = self._items
        if items:
            return items.popleft()
        hub = self._hub
        current = self._current()
        timer = None
        if timeout is not None:
            timer = hub.schedule_call_global(timeout, self._expire, current)
        try:
            while not items:
                self._waiter = current
                hub.switch()
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        return items.popleft()

    def _expire(self, waiter: Any) -> None:
        if self._waiter is waiter:
            self._waiter = None
            waiter.throw(self._empty)


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
    fits this process when ``name`` is None.

    Handlers are shared singletons, made once whatever the number of
    threads asking. Raises ``ValueError`` for another name; 'eventlet'
    raises ``ImportError`` where eventlet is not installed.
    """
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


#: Calls waiting at once below which a native caller's ``Mailbox`` is an
#: ``_FdMailbox``; from there on a ``SimpleQueue``.
FD_WAKE_BELOW = 24


class _FdMailbox:
    """``Mailbox`` of native threads, woken through an eventfd.

    Waking a thread blocked on a lock (what ``SimpleQueue.put`` does) is a
    futex system call made with the GIL held: on a small virtual machine
    it takes microseconds during which no other thread runs Python.
    ``os.eventfd_write`` lets the GIL go around its system call, so the
    reply listener's wake-ups overlap with the callers' work (16 threaded
    callers between two hosts: 14,792 -> 16,315 calls/s, caller CPU per
    call 64.7 -> 56.7 µs, medians of 9 rounds; one caller is not slower).
    With many threads waiting for the GIL, taking it back costs more than
    the futex call saved (64 callers: 13,638 -> 11,773 calls/s, 8
    rounds), so a call made while ``FD_WAKE_BELOW`` others wait gets a
    ``SimpleQueue``.

    A reader that has to wait names its thread's eventfd (``_ThreadFd``,
    kept for its next waits, made anew in a forked child) for the time of
    its wait; a ``put`` writes to it only then, so the parts of a stream
    that come while their caller works cost no system call. The ``put``
    holds the eventfd it read, so it never writes to a descriptor closed
    and reused since. A wake-up left from an earlier wait only makes the
    next one look again.
    """

    __slots__ = ("_items", "_reader")

    def __init__(self) -> None:
        self._items: collections.deque = collections.deque()
        self._reader: _ThreadFd | None = None

    def qsize(self) -> int:
        return len(self._items)

    def put(self, item: Any) -> None:
        self._items.append(item)
        reader = self._reader
        if reader is not None:
            os.eventfd_write(reader.fd, 1)

    def get(self, timeout: float | None = None) -> Any:
        items = self._items
        if items:
            return items.popleft()
        if timeout is not None and timeout <= 0:
            raise _queue.Empty
        own = _ThreadFd.mine()
        end = None if timeout is None else time.monotonic() + timeout
        # named before the check below: a put after it writes to us
        self._reader = own
        try:
            while True:
                if items:
                    return items.popleft()
                wait = None if end is None else \
                    max(0, int((end - time.monotonic()) * 1000 + 0.999))
                if own.poll.poll(wait):
                    os.eventfd_read(own.fd)
                elif end is not None and time.monotonic() >= end:
                    if items:
                        return items.popleft()
                    raise _queue.Empty
        finally:
            self._reader = None


class _ThreadFd:
    """A thread's eventfd and its poll; closed when the thread and the
    last ``put`` that holds it are gone."""

    __slots__ = ("fd", "poll", "pid")

    available = hasattr(os, "eventfd")
    _local = threading.local()

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_CLOEXEC)
        self.poll = select.poll()
        self.poll.register(self.fd, select.POLLIN)
        self.pid = os.getpid()

    @classmethod
    def mine(cls) -> "_ThreadFd":
        """The calling thread's (in this process: ``_forget_after_fork``
        drops the one a forked child inherits, so no wait asks the pid)."""
        own = getattr(cls._local, "fd", None)
        if own is None:
            own = cls._local.fd = cls()
        return own

    @classmethod
    def _forget_after_fork(cls) -> None:
        # the child's only thread is the one that forked: its eventfd is
        # shared with the parent, so the child makes its own
        cls._local.fd = None

    def __del__(self) -> None:
        os.close(self.fd)


if _ThreadFd.available:
    os.register_at_fork(after_in_child=_ThreadFd._forget_after_fork)
