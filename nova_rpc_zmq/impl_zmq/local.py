"""Calls to services on this host go straight to the service.

Through the receiver a call crosses two processes and four sockets before
a service reads it. A service on the caller's own host can be reached with
one hop less:

* a consumer of a directed topic binds its PULL socket, besides connecting
  to the receiver, to ``ipc://<rpc_zmq_ipc_dir>/zmq_local.<topic>/<token>``
  (``bind_local``: one file per consumer process and topic; a file left by
  a killed process is removed by the next consumer that starts);
* a caller whose call goes to its own host (``LocalCalls.send``) keeps
  PUSH sockets per topic connected to every file of that directory (one per
  send under way at once, so native threads share no lock), looks at the
  directory again at most every ``RESCAN`` seconds, and sends the call
  there.

The PUSH sockets are ZMQ_IMMEDIATE: they queue only for services they are
connected to. With none (none started yet, or all gone) or when every one
is full, ``send`` returns False and the call takes the receiver's path, as
it always did. The frames are the same on both paths. Casts and fanouts
always go through the receiver, which keeps them in order.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import socket
import time
from typing import Any

import zmq

from nova_rpc_zmq import frames as frames_io
from nova_rpc_zmq import zmqio
from nova_rpc_zmq.concurrency import Handler
from nova_rpc_zmq.ipcdir import IPC_PATH_MAX, local_dir, prepare_ipc_dir
from nova_rpc_zmq.metrics import Counters

LOG = logging.getLogger(__name__)

#: Seconds between two looks at a topic's directory of local services.
RESCAN = 1.0
#: Topics a caller keeps sockets for (the oldest is closed past this).
MAX_TOPICS = 256
#: Calls queued per local service before the receiver's path is taken.
HWM = 1000
#: Sockets a caller keeps per topic: as many as sends that overlap, at
#: most this (past it the receiver's path is taken).
MAX_SOCKETS = 32
#: ``rescan_at`` of a closed route.
_CLOSED = float("inf")


def _is_stale(path: str) -> bool:
    """True when nothing listens on the unix socket ``path`` any more."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.setblocking(False)
        probe.connect(path)
    except OSError as exc:
        return exc.errno in (errno.ECONNREFUSED, errno.ENOTSOCK)
    finally:
        probe.close()
    return False


def bind_local(sock: Any, ipc_dir: str, topics: list[str],
               token: str) -> list[str]:
    """Bind ``sock`` (a consumer's PULL) for local callers of ``topics``.

    Returns the socket files made. A topic whose path would be too long, or
    whose directory cannot be made, is skipped with a log line: its callers
    keep using the receiver.
    """
    made = []
    for topic in topics:
        folder = local_dir(ipc_dir, topic)
        path = os.path.join(folder, token)
        if len(path) > IPC_PATH_MAX:
            LOG.debug("no local socket for %s: path %s is too long", topic,
                      path)
            continue
        try:
            # made as the receiver makes it when we start first; refused
            # (callers use the receiver) when others could write in it
            prepare_ipc_dir(ipc_dir, receiver=False)
            os.makedirs(folder, exist_ok=True)
            for name in os.listdir(folder):
                other = os.path.join(folder, name)
                if _is_stale(other):
                    LOG.info("removed %s, left by a service that is gone",
                             other)
                    _unlink(other)
            sock.bind("ipc://" + path)
        except Exception as exc:  # noqa: BLE001 - the receiver's path remains
            LOG.warning("no local socket for %s (%s): callers on this host "
                        "use the receiver", topic, exc)
            continue
        made.append(path)
    return made


def unbind_local(paths: list[str]) -> None:
    """Remove a closed consumer's socket files (libzmq may have already)."""
    for path in paths:
        _unlink(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class _Route:
    """A caller's PUSH sockets to the local services of one topic.

    The sockets wait in ``idle``; a sender takes one (``list.pop`` and
    ``append`` are atomic), so native threads never queue for a lock
    around a send that gives up the GIL. Each socket remembers the set of
    services it is connected to and catches up with ``peers`` when taken.
    """

    __slots__ = ("folder", "idle", "made", "peers", "mtime", "rescan_at")

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.idle: list[list[Any]] = []   # [socket, peers it is connected to]
        self.made = 0
        self.peers: frozenset[str] = frozenset()
        self.mtime = -1
        self.rescan_at = 0.0


def _drain(route: _Route) -> None:
    """Close every socket in ``route``'s pool (each is popped once)."""
    while True:
        try:
            entry = route.idle.pop()
        except IndexError:
            return
        entry[0].close(0)


class LocalCalls:
    """The caller's side: ``send(topic, frames)`` to a local service.

    ``ctx`` is the driver's context (``zmqio.context(handler)``),
    ``ipc_dir`` is ``rpc_zmq_ipc_dir``.
    """

    def __init__(self, handler: Handler, ctx: Any, ipc_dir: str,
                 counters: Counters) -> None:
        self.handler = handler
        self.ctx = ctx
        self.ipc_dir = ipc_dir
        self.counters = counters
        self._routes: "collections.OrderedDict[str, _Route]" = \
            collections.OrderedDict()
        self._lock = self.handler.Lock()
        self._closed = False

    def send(self, topic: str, frames: list) -> bool:
        """Hand ``frames`` to a service of ``topic`` on this host; False
        when none takes it now (the caller then uses the receiver)."""
        route = self._routes.get(topic)
        if route is None:
            route = self._new_route(topic)
            if route is None:
                return False
        if time.monotonic() >= route.rescan_at:
            self._rescan(route)
        peers = route.peers
        if not peers:
            return False
        try:
            entry = route.idle.pop()
        except IndexError:
            if route.made >= MAX_SOCKETS:
                self.counters.incr("local.no_socket")
                return False
            route.made += 1
            entry = [self._socket(), frozenset()]
        sock = entry[0]
        try:
            if entry[1] is not peers:
                self._follow(route.folder, entry, peers)
            frames_io.send(sock, frames, frames_io.NOBLOCK)
        except zmq.Again:
            # not connected yet, or every service's queue is full
            self.counters.incr("local.unready")
            return False
        finally:
            route.idle.append(entry)
            if route.rescan_at == _CLOSED:
                # closed while we sent: the closer may have emptied the
                # pool before our socket was back (an open socket would
                # keep the context's term() waiting for ever)
                _drain(route)
        self.counters.incr("local.calls")
        return True

    def _new_route(self, topic: str) -> _Route | None:
        with self._lock:
            if self._closed:
                return None
            route = self._routes.get(topic)
            if route is None:
                route = _Route(local_dir(self.ipc_dir, topic))
                self._routes[topic] = route
                if len(self._routes) > MAX_TOPICS:
                    _topic, old = self._routes.popitem(last=False)
                    self._close_route(old)
        return route

    def _rescan(self, route: _Route) -> None:
        """Look at the topic's directory again: the services there now."""
        route.rescan_at = time.monotonic() + RESCAN
        try:
            mtime = os.stat(route.folder).st_mtime_ns
        except OSError:
            mtime = -1
        if mtime == route.mtime:
            return
        route.mtime = mtime
        try:
            names = frozenset(os.listdir(route.folder)) if mtime != -1 \
                else frozenset()
        except OSError:
            names = frozenset()
        if names != route.peers:
            LOG.debug("%d local service(s) in %s", len(names), route.folder)
            route.peers = names

    def _follow(self, folder: str, entry: list[Any], peers: frozenset[str]) -> None:
        """Connect ``entry``'s socket to the services that appeared, and
        let go of those that left."""
        sock, had = entry
        for how, names in (("connect", peers - had),
                           ("disconnect", had - peers)):
            for name in names:
                try:
                    getattr(sock, how)("ipc://" + os.path.join(folder, name))
                except zmq.ZMQError as exc:
                    LOG.debug("could not %s local service %s: %s", how, name,
                              exc)
        entry[1] = peers

    def _socket(self) -> Any:
        return zmqio.make_socket(
            self.ctx, zmq.PUSH, linger=0, immediate=True, sndhwm=HWM,
            options={zmq.RECONNECT_IVL: 100, zmq.RECONNECT_IVL_MAX: 1000})

    def _close_route(self, route: _Route) -> None:
        """Close the idle sockets; one taken now is closed by its sender."""
        route.rescan_at = _CLOSED
        route.peers = frozenset()
        _drain(route)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            routes, self._routes = list(self._routes.values()), \
                collections.OrderedDict()
        for route in routes:
            self._close_route(route)
