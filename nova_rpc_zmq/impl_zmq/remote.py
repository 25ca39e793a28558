"""Calls to our nodes on other hosts go straight to the service.

Through the receivers a call between two hosts crosses four processes
before its reply is back (caller, receiver B, service, receiver A); the
receivers are a third to two fifths of its CPU. Between two nodes of this
project the call and its replies can skip both:

* a consumer of a directed topic binds its PULL socket, besides its IPC
  sockets, to ``tcp://<rpc_zmq_bind_address>:<port>``, the first free port
  of ``rpc_zmq_direct_ports`` (``bind_direct``); a caller process binds its
  direct reply PULL the same way;
* the caller learns the port by a ``where`` probe: a probe (the style old
  receivers drop, so an old node never sees it) with the id
  ``<token>where<n>:<reply port>:<caller host>``, sent to the directed
  topic through the service host's receiver like any probe. The consumer
  that reads it answers with the probe ``<token>whereis<n>:<its port>`` to
  ``zmq_replies.<caller host>`` through the caller's receiver (the path of
  every reply), and notes the caller's reply port for that token;
* the next calls of that topic and host (``RemoteCalls.send``) go on
  ZMQ_IMMEDIATE PUSH sockets to ``tcp://<service host>:<port>``, and the
  service sends the replies to a token it knows on the same kind of socket
  to ``tcp://<caller host>:<reply port>`` (``RemoteReplies.send``).

The caller sends ``ASKS`` asks at a time, which the receiver hands to the
next consumer processes of the topic in turn, and asks again every
``WHERE_REFRESH`` seconds: the ports of several worker processes are
learnt and each PUSH socket connects to all of them (ZeroMQ spreads the
calls over the connected ones, as the receiver did). A port not named for
``PORT_TTL`` is let go. A port whose consumer died may be bound by another
consumer before the caller asks again: a consumer forwards a message of a
topic it does not consume to its own receiver, which routes it, so such a
call is not lost (``consumer.forwarded.wrong_topic``).

This is simpler than a registry served by the receiver: the port is known
only to the process that bound it, so the process itself answers, through
the probe and reply paths that exist already; a receiver needs no change
and old receivers drop the ask. Only our callers name a token in frame 0
(``stream.<token>``) and only our consumers answer a ``where``: an old
node never gets a direct frame. The addresses connected to are built from
the matchmaker's host (calls) or the reply topic's host, which the reply
policy allows (replies): an answer from the network chooses at most a port,
and a port outside ``rpc_zmq_direct_ports`` is dropped and counted
(``direct.where_bad_port``).

Nothing is lost that the receivers' path would keep: each message takes
one path, chosen before the send; an IMMEDIATE socket refuses a send when
its peer is not connected (not started, dead) or full, and the message
then goes through the receivers. A peer that dies with calls queued loses
them, as a service dying mid-call does on any path: the caller times out.
Streamed replies are numbered, so parts that took different paths are put
back in order by the caller.

With ``rpc_zmq_curve`` the direct sockets are CURVE sockets
(``curve.DirectSecurity``): a consumer's or caller's TCP port admits the
keys of the keys dir only, as a receiver does, and each PUSH expects the
peer host's certificate. A peer that refuses us or that we have no
certificate of is never connected, so its messages take the receivers'
path (``direct.no_server_key`` counts the missing certificates).
"""

from __future__ import annotations

import collections
import itertools
import logging
import re
import time
from typing import TYPE_CHECKING, Any, Callable

import zmq

from nova_rpc_zmq import frames as frames_io
from nova_rpc_zmq import wire, zmqio
from nova_rpc_zmq.concurrency import Handler
from nova_rpc_zmq.errors import ConfigurationError
from nova_rpc_zmq.metrics import Counters

if TYPE_CHECKING:
    from nova_rpc_zmq.config import Settings

LOG = logging.getLogger(__name__)

#: Probe ids of the ask and the answer, after the caller's 16-hex token.
WHERE_MARK = "where"
ANSWER_MARK = "whereis"
#: Seconds before a host that has not answered a ``where`` is asked again
#: (an old-driver node never answers: its calls use the receivers).
WHERE_RETRY = 300.0
#: Seconds after which the known ports are asked for again (a restarted
#: service may bind another one, another worker process of the topic may
#: have started); calls keep using the known ports meanwhile.
WHERE_REFRESH = 10.0
#: Asks sent at once: the receiver hands each to the next consumer process
#: of the topic, so several workers of a service answer in one round.
ASKS = 3
#: A port not named again for this long is let go.
PORT_TTL = 3 * WHERE_REFRESH + 1.0
#: Most ports (consumer processes) per topic and host.
MAX_PORTS = 16
#: Seconds a new peer may take to connect before a refused send makes
#: the caller ask for its port again.
STALE_AFTER = 1.0
#: Topics x hosts, and callers, a process keeps direct sockets for.
MAX_PEERS = 1024
#: Calls or replies queued per direct peer before the receivers are used.
HWM = 1000
#: Sockets kept per peer: as many as sends that overlap, at most this.
MAX_SOCKETS = 32
#: Milliseconds a closed pool socket keeps trying to hand over what is
#: queued on it (a peer still connected takes it; a gone one has none).
CLOSE_LINGER_MS = 1000
#: Seconds between two trims of a pool: of the sockets no send took over
#: that time (a burst of overlapping sends made them), half are closed (at
#: least one), the last one always kept.
TRIM_EVERY = 60.0

_REPLIES_DOT = wire.REPLIES_PREFIX + wire.TOPIC_SEPARATOR
_ASK_RE = re.compile(r"([0-9a-f]{16})where([0-9]{1,9}):([0-9]{1,5}):(.+)\Z",
                     re.ASCII)
_ANSWER_RE = re.compile(
    r"([0-9a-f]{16})whereis([0-9]{1,9}):([0-9]{1,5})(:p|:d)?\Z", re.ASCII)
#: Asks numbered from here on come from a caller that takes one-part
#: replies (``frames.pack``); an answer ending ``:p`` comes from a
#: consumer that takes one-part calls. Earlier versions of this project
#: number their asks from 1, parse these asks as any other and answer
#: without ``:p``: they get and send messages of parts, as before.
PACKED_ASKS = 100000000
#: Asks numbered from here on come from a caller that also takes direct
#: replies (``wire.encode_direct_reply``: the reply alone, without the
#: context and the nesting a receiver needs) and reads an answer ending
#: ``:d``: a consumer that takes direct calls (``wire.encode_direct_call``)
#: answers so. A service sends direct replies to such a caller only, and
#: the caller direct calls only when every port its socket reaches said
#: ``:d``; the others get and send the wire's parts, as before.
DIRECT_ASKS = 200000000


def port_range(settings: Settings) -> range | None:
    """The ports of ``rpc_zmq_direct_ports``, or None when the direct path
    is off (the option empty or ``rpc_zmq_direct_calls`` off).

    Raises ValueError naming the option for a value that is not
    ``first:last``.
    """
    text = (settings.rpc_zmq_direct_ports or "").strip()
    if not settings.rpc_zmq_direct_calls or not text:
        return None
    first, sep, last = text.partition(":")
    try:
        low, high = int(first), int(last or first)
    except ValueError:
        low = high = -1
    if not 0 < low <= high < 65536:
        raise ValueError("rpc_zmq_direct_ports must be first:last ports "
                         "(e.g. 9504:9549) or empty, got %r" % text)
    return range(low, high + 1)


_NO_PORT_SAID: set[str] = set()
#: Hosts whose missing certificate was logged (``_Peers._socket``).
_NO_KEY_SAID: set[str] = set()


def bind_direct(sock: Any, settings: Settings, ports: range,
                what: str, serve: Callable[[Any], None] | None = None
                ) -> int | None:
    """Bind ``sock`` at the first free port of ``ports`` on
    ``rpc_zmq_bind_address``; its port, or None (said once per ``what``)
    when none is free: that socket then has only the receivers' path.
    ``serve(sock)`` first (CURVE: ``curve.DirectSecurity.serve``)."""
    address = settings.rpc_zmq_bind_address
    if serve is not None:
        serve(sock)
    for port in ports:
        try:
            sock.bind("tcp://%s:%d" % (address, port))
        except zmq.ZMQError:
            continue
        return port
    if what not in _NO_PORT_SAID:
        _NO_PORT_SAID.add(what)
        LOG.warning("no free port in rpc_zmq_direct_ports %s for %s: its "
                    "calls go through the receivers; widen the range",
                    settings.rpc_zmq_direct_ports, what)
    return None


def parse_ask(probe_id: str) -> tuple[str, int, int, str] | None:
    """(token, ask number, reply port, caller host) of a ``where`` ask."""
    match = _ASK_RE.match(probe_id)
    if match is None:
        return None
    token, n, port, host = match.groups()
    return token, int(n), int(port), host


def answer_frames(token: str, n: int, port: int, host: str) -> list[bytes]:
    """The answer to ask ``n`` of ``token``: our ``port``, to ``host``;
    to an ask of a caller that packs, also that we unpack (``:p``), and to
    one that makes direct calls, that we take those (``:d``, which says
    ``:p`` too)."""
    style = ":d" if n >= DIRECT_ASKS else ":p" if n >= PACKED_ASKS else ""
    return wire.encode_probe("%s%s%d:%d%s" % (token, ANSWER_MARK, n, port,
                                              style),
                             wire.reply_topic(host))


class _Pool:
    """PUSH sockets to one direct peer (the ports of one topic on one
    host, or one caller's reply port); a sender takes one (``list.pop``
    and ``append`` are atomic, so native threads share no lock).

    The idle sockets are a stack: sends take the one last put back, so
    the bottom ones are those only a rare burst of overlapping sends
    needed. ``low`` is the fewest idle sockets seen since ``trim_at`` was
    set; at ``trim_at`` that many from the bottom were not taken over the
    whole period, and half of them (at least one) are closed (``trim``):
    a pool shrinks fast after a rare big burst, and one that bursts now
    and then keeps about the sockets its bursts need instead of closing
    and making them again."""

    __slots__ = ("endpoints", "host", "packed", "direct_style", "idle",
                 "made", "closed", "born", "low", "trim_at")

    def __init__(self, endpoints: tuple[str, ...], host: str,
                 packed: bool, direct_style: bool = False) -> None:
        self.endpoints = endpoints
        #: the host of every endpoint (whose certificate CURVE expects)
        self.host = host
        #: every peer unpacks: send one part (``frames.pack``)
        self.packed = packed
        #: the peer takes direct replies (a caller) or direct calls (the
        #: consumers of a topic): ``DIRECT_ASKS``
        self.direct_style = direct_style
        self.idle: list[Any] = []
        self.made = 0
        self.closed = False
        self.born = time.monotonic()
        self.low = MAX_SOCKETS
        self.trim_at = self.born + TRIM_EVERY

    def trim(self, now: float) -> int:
        """Close half (at least one) of the sockets no send took since the
        last trim, keeping one; how many were closed."""
        unused, self.low = self.low, MAX_SOCKETS
        self.trim_at = now + TRIM_EVERY
        closed = 0
        while closed < (unused + 1) // 2 and len(self.idle) > 1:
            try:
                sock = self.idle.pop(0)
            except IndexError:
                break
            sock.close(CLOSE_LINGER_MS)
            self.made -= 1
            closed += 1
        return closed

    def drain(self) -> None:
        self.closed = True
        while True:
            try:
                sock = self.idle.pop()
            except IndexError:
                return
            # what a connected peer has not taken yet still goes
            sock.close(CLOSE_LINGER_MS)


class _Peers:
    """Pools by key, the oldest closed past ``MAX_PEERS``; with
    ``secure(sock, host)`` (CURVE: ``curve.DirectSecurity.client``) each
    new socket is made a client of its pool's host first."""

    def __init__(self, handler: Handler, ctx: Any, counters: Counters,
                 prefix: str,
                 secure: Callable[[Any, str], None] | None = None) -> None:
        self.ctx = ctx
        self.counters = counters
        self.prefix = prefix
        self.secure = secure
        self.pools: "collections.OrderedDict[Any, _Pool]" = \
            collections.OrderedDict()
        self._lock = handler.Lock()
        self.closed = False

    def set(self, key: Any, endpoints: tuple[str, ...], host: str,
            packed: bool = False, direct_style: bool = False) -> None:
        """Send to ``endpoints`` of ``host`` (each socket connects to all;
        ZeroMQ hands each message to the next connected one) from now on,
        as one part when ``packed`` (all of them unpack); ``direct_style``:
        all of them take the direct style."""
        with self._lock:
            if self.closed:
                return
            old = self.pools.get(key)
            if old is not None and old.endpoints == endpoints:
                old.packed = packed
                old.direct_style = direct_style
                return
            pool = _Pool(endpoints, host, packed, direct_style)
            # connecting now: the next send finds the connection made
            sock = self._socket(pool)
            if sock is None:
                return  # the receivers' path
            self.pools[key] = pool
            pool.made = 1
            pool.idle.append(sock)
            if old is not None:
                old.drain()
            while len(self.pools) > MAX_PEERS:
                _key, gone = self.pools.popitem(last=False)
                gone.drain()

    def forget(self, key: Any, pool: _Pool) -> None:
        with self._lock:
            if self.pools.get(key) is pool:
                del self.pools[key]
        pool.drain()

    def send(self, key: Any, frames: list) -> bool | None:
        """True when ``frames`` went; False when the pool's sockets refused
        them (no peer connected, or all full); None when they did not go
        for a reason that says nothing of the peer (no pool, no socket
        left, or a socket made for this send and not connected yet)."""
        pool = self.pools.get(key)
        if pool is None:
            return None
        idle = pool.idle
        new = False
        try:
            sock = idle.pop()
        except IndexError:
            if pool.made >= MAX_SOCKETS:
                self.counters.incr(self.prefix + ".no_socket")
                return None
            sock = self._socket(pool)
            if sock is None:
                return None
            new = True
            pool.made += 1
            self.counters.incr(self.prefix + ".sockets_made")
        if len(idle) < pool.low:
            pool.low = len(idle)
        try:
            frames_io.send(sock, frames_io.pack(frames)
                           if pool.packed and len(frames) > 1 else frames,
                           frames_io.NOBLOCK)
        except zmq.Again:
            # not connected (yet, or any more) or full: the receivers' path
            self.counters.incr(self.prefix + ".unready")
            return None if new else False
        finally:
            idle.append(sock)
            if pool.closed:
                pool.drain()  # closed while we sent
        self.counters.incr(self.prefix)
        if pool.trim_at <= time.monotonic():
            self._trim(pool)
        return True

    def _trim(self, pool: _Pool) -> None:
        with self._lock:
            now = time.monotonic()
            if pool.closed or pool.trim_at > now:
                return  # another sender trimmed it
            closed = pool.trim(now)
        if closed:
            self.counters.incr(self.prefix + ".sockets_trimmed", closed)

    def _socket(self, pool: _Pool) -> Any:
        """A PUSH connected to the pool's endpoints; None (logged now and
        then, counted) when CURVE has no certificate of its host."""
        sock = zmqio.make_socket(
            self.ctx, zmq.PUSH, linger=0, immediate=True, sndhwm=HWM,
            options={zmq.RECONNECT_IVL: 100, zmq.RECONNECT_IVL_MAX: 1000})
        if self.secure is not None:
            try:
                self.secure(sock, pool.host)
            except ConfigurationError as exc:
                sock.close(0)
                self.counters.incr("direct.no_server_key")
                if pool.host not in _NO_KEY_SAID:
                    if len(_NO_KEY_SAID) >= MAX_PEERS:
                        _NO_KEY_SAID.clear()
                    _NO_KEY_SAID.add(pool.host)
                    LOG.warning("no direct path to %s, its messages take "
                                "the receivers: %s", pool.host, exc)
                return None
        for endpoint in pool.endpoints:
            sock.connect(endpoint)
        return sock

    def close(self) -> None:
        with self._lock:
            self.closed = True
            pools, self.pools = list(self.pools.values()), \
                collections.OrderedDict()
        for pool in pools:
            pool.drain()


def _with_port(endpoint: str, port: int) -> str:
    """``tcp://addr:P`` -> ``tcp://addr:port``."""
    return "%s:%d" % (endpoint.rsplit(":", 1)[0], port)


class RemoteCalls:
    """The caller's side: ``send(dtopic, host, frames)`` to a service of
    ours on another host once its port is known; asks for it otherwise.

    ``send_receiver(host, frames, topic)`` reaches a host's receiver (the
    asks go there), ``endpoint(host)`` is that receiver's ``tcp://``
    address, ``token`` the caller's reply token and ``reply_port()`` the
    port of its direct reply socket (0: none); ``secure`` as ``_Peers``'.
    """

    def __init__(self, handler: Handler, ctx: Any, settings: Settings,
                 counters: Counters, ports: range, *,
                 send_receiver: Callable[[str, list, str], None],
                 endpoint: Callable[[str], str], token: str,
                 reply_port: Callable[[], int],
                 secure: Callable[[Any, str], None] | None = None) -> None:
        self.settings = settings
        self.counters = counters
        self.ports = ports
        self.send_receiver = send_receiver
        self.endpoint = endpoint
        self.token = token
        self.reply_port = reply_port
        self.own_host = settings.rpc_zmq_host
        self._peers = _Peers(handler, ctx, counters, "direct.calls", secure)
        #: (dtopic, host) -> monotonic time of the next ask
        self._ask_at: dict[tuple[str, str], float] = {}
        #: (dtopic, host) that answered at least once
        self._ours: set[tuple[str, str]] = set()
        #: (dtopic, host) -> {port: (monotonic time it was last named,
        #: what its consumer takes: "" parts, ":p" one part, ":d" direct
        #: calls too)}
        self._ports: dict[tuple[str, str], dict[int, tuple[float, str]]] = {}
        #: ask number -> (dtopic, host)
        self._asked: "collections.OrderedDict[int, tuple[str, str]]" = \
            collections.OrderedDict()
        self._ids = itertools.count(DIRECT_ASKS)
        # answers come from the reply listener's threads (SUB and TCP)
        self._answer_lock = handler.Lock()

    def takes_direct_calls(self, dtopic: str, host: str) -> bool:
        """True when every consumer of ``dtopic`` on ``host`` we send to
        takes ``wire.encode_direct_call``."""
        pool = self._peers.pools.get((dtopic, host))
        return pool is not None and pool.direct_style

    def send(self, dtopic: str, host: str, frames: list) -> bool:
        """Hand ``frames`` straight to a service of ``dtopic`` on ``host``;
        False when its port is not known or it takes nothing now."""
        key = (dtopic, host)
        if time.monotonic() >= self._ask_at.get(key, 0.0):
            self._ask(key)
        pool = self._peers.pools.get(key)
        if pool is None:
            return False
        sent = self._peers.send(key, frames)
        if sent:
            return True
        # None: a socket made for this send of a burst, not connected yet;
        # the others are (forgetting the pool would close them, their
        # queued calls with them)
        if sent is False and time.monotonic() - pool.born > STALE_AFTER:
            # refused (none connected, or all full): the services may be
            # gone or restarted on other ports; the receivers' path until
            # they answer again, asked at the next call
            self._peers.forget(key, pool)
            self._ports.pop(key, None)
            self._ask_at[key] = 0.0
        return False

    def _ask(self, key: tuple[str, str]) -> None:
        dtopic, host = key
        # a host that never answered is not one of ours (or not up): asked
        # again after WHERE_RETRY; one that did, after WHERE_REFRESH
        self._ask_at[key] = time.monotonic() + (
            WHERE_REFRESH if key in self._ours else WHERE_RETRY)
        if len(self._ask_at) > MAX_PEERS:
            self._ask_at.pop(next(iter(self._ask_at)))
        try:
            reply_port = self.reply_port()
            for _ask in range(ASKS):
                n = next(self._ids)
                self._asked[n] = key
                frames = wire.encode_probe(
                    "%s%s%d:%d:%s" % (self.token, WHERE_MARK, n, reply_port,
                                      self.own_host), dtopic)
                self.send_receiver(host, frames, dtopic)
            self.counters.incr("direct.where_asked")
        except Exception as exc:  # noqa: BLE001 - the receivers' path remains
            LOG.debug("could not ask %s for the port of %s: %s", host,
                      dtopic, exc)
        while len(self._asked) > MAX_PEERS * ASKS:
            self._asked.popitem(last=False)

    def answered(self, probe_id: str) -> None:
        """A ``whereis`` probe came back on our reply topic."""
        with self._answer_lock:
            self._answered(probe_id)

    def _answered(self, probe_id: str) -> None:
        match = _ANSWER_RE.match(probe_id)
        key = None
        if match is not None and match.group(1) == self.token:
            key = self._asked.pop(int(match.group(2)), None)
        if key is None:
            self.counters.incr("direct.where_unknown")
            LOG.debug("dropped a where answer no call asked: %s", probe_id)
            return
        port = int(match.group(3)) if match is not None else 0
        if port not in self.ports:
            self.counters.incr("direct.where_bad_port")
            LOG.warning("dropped a where answer for %s on host %s: port %d is "
                        "outside rpc_zmq_direct_ports %s", key[0], key[1],
                        port, self.settings.rpc_zmq_direct_ports)
            return
        now = time.monotonic()
        self._ask_at[key] = min(self._ask_at.get(key, 0.0),
                                now + WHERE_REFRESH)
        if len(self._ours) >= MAX_PEERS:
            self._ours.clear()
        self._ours.add(key)
        if key not in self._ports and len(self._ports) >= MAX_PEERS:
            self._ports.pop(next(iter(self._ports)))
        known = self._ports.setdefault(key, {})
        # no ``:p``: an older version of ours has the port
        known[port] = (now, (match.group(4) or "") if match is not None
                       else "")
        for old in [p for p, (seen, _u) in known.items()
                    if now - seen > PORT_TTL]:
            del known[old]
        ports = sorted(known, key=known.__getitem__)[-MAX_PORTS:]
        base = self.endpoint(key[1])
        # one socket reaches every port: one part only when all unpack,
        # direct calls only when all take them
        self._peers.set(key, tuple(_with_port(base, p) for p in sorted(ports)),
                        key[1], packed=all(known[p][1] for p in ports),
                        direct_style=all(known[p][1] == ":d" for p in ports))
        self.counters.incr("direct.where_answered")

    def close(self) -> None:
        self._peers.close()


class RemoteReplies:
    """The service's side: the reply ports of callers on other hosts, as
    their ``where`` asks named them, and ``send`` to them; ``secure`` as
    ``_Peers``'."""

    def __init__(self, handler: Handler, ctx: Any, settings: Settings,
                 counters: Counters, ports: range, *,
                 endpoint: Callable[[str], str],
                 allows: Callable[[str], bool],
                 secure: Callable[[Any, str], None] | None = None) -> None:
        self.settings = settings
        self.counters = counters
        self.ports = ports
        self.endpoint = endpoint
        self.allows = allows
        self._peers = _Peers(handler, ctx, counters, "direct.replies", secure)

    def asked(self, probe_id: str, port: int | None,
              send_receiver: Callable[[str, list, str], None]) -> bool:
        """Answer a ``where`` ask read by a consumer whose direct port is
        ``port``; True when ``probe_id`` was one (answered or dropped)."""
        ask = parse_ask(probe_id)
        if ask is None:
            return False
        token, n, reply_port, host = ask
        try:
            reply_topic = wire.reply_topic(host)
            wire.check_topic(reply_topic, self.settings.limits)
            allowed = self.allows(reply_topic)
        except Exception:  # noqa: BLE001 - a bad host name
            allowed = False
        if not allowed:
            self.counters.incr("direct.where_refused")
            LOG.debug("no where answer to host %r: not a host we answer",
                      host)
            return True
        if reply_port in self.ports:
            # a caller that numbers its asks from PACKED_ASKS unpacks, one
            # that numbers them from DIRECT_ASKS takes direct replies
            self._peers.set((host, token),
                            (_with_port(self.endpoint(host), reply_port),),
                            host, packed=n >= PACKED_ASKS,
                            direct_style=n >= DIRECT_ASKS)
        if port is None:
            return True  # no port of ours: the caller keeps the receivers
        try:
            send_receiver(host, answer_frames(token, n, port, host),
                          reply_topic)
        except Exception as exc:  # noqa: BLE001
            LOG.debug("could not answer a where ask of %s: %s", host, exc)
        return True

    def takes_direct_replies(self, reply_topic: str, token: str) -> bool:
        """True when the caller ``token`` on the host of ``reply_topic``
        has a port here and takes ``wire.encode_direct_reply``."""
        if not reply_topic.startswith(_REPLIES_DOT):
            return False
        pool = self._peers.pools.get((reply_topic[len(_REPLIES_DOT):], token))
        return pool is not None and pool.direct_style

    def send(self, reply_topic: str, token: str, frames: list) -> bool:
        """Send a reply straight to the caller ``token`` on the host of
        ``reply_topic``; False when its port is unknown or refused."""
        if not reply_topic.startswith(_REPLIES_DOT):
            return False
        host = reply_topic[len(_REPLIES_DOT):]
        return bool(self._peers.send((host, token), frames))

    def close(self) -> None:
        self._peers.close()
