"""``RingMatchMaker``: hosts of each bare topic from a JSON ring file.

The ring file is a JSON object mapping each bare topic to the list of hosts
serving it, e.g. ``{"scheduler": ["o1p409", "o2p409"]}``.

* bare topic: round robin, one host per call, skipping hosts the liveness
  object reports down;
* fanout: every (live) host of the bare topic;
* directed and reply topics: straight to their host, no ring lookup.

Routing a bare or directed topic costs the same whatever the ring's size:
the pairs are precomputed tuples and each topic keeps a cursor.

The file is re-read when it changes on disk (replaced or edited in place):
at most once per ``check_interval`` seconds ``queues()`` stats it; no
thread is involved.  A bad new version is logged once and the previous ring
stays in use; a bad file at start raises ConfigurationError with the file,
the line and the fix.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from nova_rpc_zmq import errors, netaddr
from nova_rpc_zmq.matchmaker.base import (FANOUT_PREFIX, TOPIC_SEPARATOR,
                                          Liveness, MatchMaker)

if TYPE_CHECKING:
    from nova_rpc_zmq import config

LOG = logging.getLogger(__name__)

TOPIC_RE = re.compile(r"^[A-Za-z0-9_~:@-]+$")     # a bare topic: no '.'
HOST_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")        # name, FQDN, IPv4, IPv6
MAX_TOPIC_LENGTH = 255
MAX_HOST_LENGTH = 253
_WS = " \t\r\n"
_MAX_REPORTED = 20        # errors listed in one message; the rest counted
_LOG_EVERY = 60.0         # seconds between two logs of a failing is_up()

Pair = tuple[str, str]
Resolver = Callable[[str], list[str]]


def resolve_host(host: str) -> list[str]:
    """Addresses of ``host`` (IP literals need no DNS); [] if it fails."""
    return netaddr.resolves(host)


@dataclass(frozen=True)
class RingEntry:
    """One topic of a ring file, with the line numbers of key and hosts."""

    topic: str
    line: int
    hosts: tuple[tuple[str, int], ...]   # (host, line), duplicates removed


@dataclass(frozen=True)
class RingFile:
    """A parsed, valid ring file; ``warnings`` are non-fatal findings."""

    path: str
    entries: tuple[RingEntry, ...]
    warnings: tuple[str, ...] = ()

    def hosts(self) -> dict[str, int]:
        """Every distinct host -> the line it first appears on."""
        seen: dict[str, int] = {}
        for entry in self.entries:
            for host, line in entry.hosts:
                seen.setdefault(host, line)
        return seen


def _raise(path: str, problems: list[tuple[int, str]]) -> None:
    problems.sort(key=lambda p: p[0])
    shown = ["%s line %d: %s" % (path, line, text)
             for line, text in problems[:_MAX_REPORTED]]
    if len(problems) > _MAX_REPORTED:
        shown.append("... and %d more problems"
                     % (len(problems) - _MAX_REPORTED))
    raise errors.ConfigurationError("\n".join(shown))


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string",
            bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _json_hint(msg: str) -> str:
    if "double quotes" in msg:
        return "JSON needs double quotes around topics and hosts"
    if "Expecting value" in msg or "Expecting ','" in msg:
        return "look for a missing or trailing comma or bracket"
    return "fix the JSON syntax"


class _Walker:
    """Walks the text of a syntactically valid ring file, keeping offsets.

    The file is small and flat (object of lists of strings), so a walk with
    ``raw_decode`` gives each key and host its line without another parser.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.decoder = json.JSONDecoder()
        self.newlines = [i for i, c in enumerate(text) if c == "\n"]

    def line(self, offset: int) -> int:
        return bisect.bisect_left(self.newlines, offset) + 1

    def skip(self, i: int) -> int:
        text = self.text
        while i < len(text) and text[i] in _WS:
            i += 1
        return i

    def value(self, i: int) -> tuple[Any, int]:
        return self.decoder.raw_decode(self.text, i)

    def items(self) -> list[tuple[str, int, Any, int, list[tuple[Any, int]] | None]]:
        """[(key, key offset, value, value offset, [(element, offset)] or
        None when the value is not a list)]."""
        text = self.text
        out: list[tuple[str, int, Any, int, list[tuple[Any, int]] | None]] = []
        i = self.skip(0) + 1          # past '{' (checked by the caller)
        i = self.skip(i)
        if text[i] == "}":
            return out
        while True:
            key_at = i
            key, i = self.value(i)
            i = self.skip(self.skip(i) + 1)       # past ':'
            value_at = i
            elements: list[tuple[Any, int]] | None = None
            if text[i] == "[":
                elements = []
                i = self.skip(i + 1)
                if text[i] == "]":
                    i += 1
                else:
                    while True:
                        at = i
                        element, i = self.value(i)
                        elements.append((element, at))
                        i = self.skip(i)
                        i += 1                    # past ',' or ']'
                        if text[i - 1] == "]":
                            break
                        i = self.skip(i)
                value: Any = [e for e, _ in elements]
            else:
                value, i = self.value(i)
            out.append((key, key_at, value, value_at, elements))
            i = self.skip(i)
            if text[i] == "}":
                return out
            i = self.skip(i + 1)                  # past ','


def _host_problem(host: Any) -> str | None:
    if not isinstance(host, str):
        return "is %s, not a host name in double quotes" % _kind(host)
    if not host.strip():
        return "is an empty host name; remove it or write the host's name"
    if not HOST_RE.match(host):
        return ("has characters a host name cannot have; use letters, "
                "digits, '-', '_', '.' (and ':' in IPv6 addresses)")
    if len(host) > MAX_HOST_LENGTH or (
            not netaddr.is_ip(host)
            and any(len(label) > 63 for label in host.split("."))):
        return "is too long for a host name (253 bytes, 63 per label)"
    return None


def parse_ring_text(text: str, path: str) -> RingFile:
    """Parse and validate ring file text (``path`` only names it in errors).

    Raises ConfigurationError listing each problem with its line and fix.
    Duplicate hosts of a topic are dropped with a warning.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.ConfigurationError(
            "%s line %d column %d: invalid JSON: %s; %s"
            % (path, exc.lineno, exc.colno, exc.msg, _json_hint(exc.msg))
        ) from exc
    walker = _Walker(text)
    if not isinstance(data, dict):
        _raise(path, [(walker.line(walker.skip(0)),
                       "the ring is %s; it must be a JSON object such as "
                       '{"compute": ["host1", "host2"]}' % _kind(data))])
    problems: list[tuple[int, str]] = []
    warnings: list[str] = []
    entries: list[RingEntry] = []
    first_line: dict[str, int] = {}
    for key, key_at, value, value_at, elements in walker.items():
        line = walker.line(key_at)
        if key in first_line:
            problems.append((line, "topic %r is listed twice (first on line "
                             "%d); merge the two lists" % (key, first_line[key])))
            continue
        first_line[key] = line
        if not key or not TOPIC_RE.match(key) or len(key) > MAX_TOPIC_LENGTH:
            fix = ("use the bare topic %r" % key.split(".", 1)[0]
                   if "." in key else
                   "use letters, digits and _ ~ : @ - only (at most %d)"
                   % MAX_TOPIC_LENGTH)
            problems.append((line, "%r is not a bare topic name; %s"
                             % (key, fix)))
            continue
        if key.startswith(FANOUT_PREFIX):
            problems.append((line, "%r is a fanout topic; list the bare topic "
                             "%r instead" % (key, key[len(FANOUT_PREFIX):])))
            continue
        if elements is None:
            hint = (' (write "%s": [%s])' % (key, json.dumps(value))
                    if isinstance(value, str) else "")
            problems.append((walker.line(value_at),
                             "topic %r maps to %s; it must be a list of host "
                             "names%s" % (key, _kind(value), hint)))
            continue
        hosts: list[tuple[str, int]] = []
        seen: set[str] = set()
        for host, at in elements:
            problem = _host_problem(host)
            if problem:
                problems.append((walker.line(at), "host %s of topic %r %s"
                                 % (json.dumps(host), key, problem)))
            elif host in seen:
                warnings.append("%s line %d: host %r is listed twice for "
                                "topic %r; the repeat is ignored"
                                % (path, walker.line(at), host, key))
            else:
                seen.add(host)
                hosts.append((host, walker.line(at)))
        if not elements:
            warnings.append("%s line %d: topic %r lists no host; messages to "
                            "it fail with NoHostsError" % (path, line, key))
        entries.append(RingEntry(key, line, tuple(hosts)))
    if problems:
        _raise(path, problems)
    return RingFile(path, tuple(entries), tuple(warnings))


def load_ring_file(path: str) -> RingFile:
    """Read and validate the ring file at ``path`` (no name resolution)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise errors.ConfigurationError(
            "cannot read ring file %s: %s; fix [matchmaker_ring] ringfile or "
            "create the file" % (path, exc.strerror or exc)) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise errors.ConfigurationError(
            "%s: not UTF-8 text (byte %d); save the ring file as UTF-8"
            % (path, exc.start)) from exc
    return parse_ring_text(text, path)


def unresolved_hosts(ring: RingFile, resolver: Resolver = resolve_host,
                     known: set[str] | None = None) -> list[tuple[int, str]]:
    """[(line, problem)] for each host of ``ring`` that does not resolve.

    Hosts in ``known`` are taken as resolving and not looked up again; the
    ones that do resolve are added to it.
    """
    problems = []
    for host, line in ring.hosts().items():
        if known is not None and host in known:
            continue
        if resolver(host):
            if known is not None:
                known.add(host)
        else:
            problems.append((line, "host %r does not resolve; add it to DNS "
                             "or /etc/hosts, or write its IP address" % host))
    return problems


class _Ring:
    """Routing tables built once per file version; never mutated."""

    __slots__ = ("bare", "fanout", "size", "hosts")

    def __init__(self, ring: RingFile) -> None:
        self.bare: dict[str, tuple[Pair, ...]] = {}
        self.fanout: dict[str, tuple[Pair, ...]] = {}
        for entry in ring.entries:
            hosts = [h for h, _ in entry.hosts]
            self.bare[entry.topic] = tuple(
                (entry.topic + TOPIC_SEPARATOR + h, h) for h in hosts)
            self.fanout[entry.topic] = tuple(
                (FANOUT_PREFIX + entry.topic + TOPIC_SEPARATOR + h, h)
                for h in hosts)
        self.size = len(ring.entries)
        self.hosts = frozenset(ring.hosts())


class RingMatchMaker(MatchMaker):
    """Routes by a JSON ring file, reloaded when it changes.

    ``liveness`` (optional) has ``is_up(host, topic)``; down hosts are
    skipped.  ``resolve=True`` requires every host to resolve (at start and
    on reload; only hosts new to the ring are looked up, in the thread whose
    ``queues()`` call notices the change).
    ``check_interval`` is how often ``queues()`` may stat the file.

    Raises ConfigurationError when the file is missing or invalid at
    construction.  ``queues()`` is safe to call from many threads.
    """

    def __init__(self, path: str, liveness: Liveness | None = None,
                 resolve: bool = True, check_interval: float = 1.0,
                 resolver: Resolver | None = None) -> None:
        self.path = path
        self.source = "ring file %s" % path
        self.liveness = liveness
        self.check_interval = check_interval
        self._resolver = (resolver or resolve_host) if resolve else None
        self._resolved: set[str] = set()
        self._cursors: dict[str, int] = {}
        self._reload_lock = threading.Lock()
        self._last_is_up_log = float("-inf")
        self._signature = self._stat()
        if self._signature is None:
            raise errors.ConfigurationError(
                "ring file %s does not exist; create it or fix "
                "[matchmaker_ring] ringfile" % path)
        self._ring = self._load()
        self._next_check = time.monotonic() + check_interval

    @classmethod
    def from_settings(cls, settings: config.Settings,
                      liveness: Liveness | None = None) -> "RingMatchMaker":
        """The ring of ``settings.matchmaker_ringfile``."""
        return cls(settings.matchmaker_ringfile, liveness=liveness)

    # -- file handling ------------------------------------------------------

    def _stat(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns,
                st.st_size)

    def _load(self) -> _Ring:
        ring = load_ring_file(self.path)
        for warning in ring.warnings:
            LOG.warning("%s", warning)
        if self._resolver is not None:
            problems = unresolved_hosts(ring, self._resolver, self._resolved)
            if problems:
                _raise(self.path, problems)
        watch = getattr(self.liveness, "watch_topics", None)
        if watch is not None:
            # so the liveness source reads each topic's group before the
            # topic's first message
            try:
                watch([entry.topic for entry in ring.entries])
            except Exception:
                LOG.exception("liveness.watch_topics failed; topics of %s are "
                              "filtered once it has read them", self.path)
        return _Ring(ring)

    def _check_reload(self, now: float) -> None:
        if not self._reload_lock.acquire(blocking=False):
            return          # another thread is checking; use the current ring
        try:
            self._next_check = now + self.check_interval
            signature = self._stat()
            if signature == self._signature:
                return
            self._signature = signature   # a bad version is reported once
            if signature is None:
                LOG.error("ring file %s has disappeared; keeping the previous "
                          "ring until it is back", self.path)
                return
            try:
                self._ring = self._load()
            except errors.ConfigurationError as exc:
                LOG.error("ring file %s changed but cannot be used, keeping "
                          "the previous ring: %s", self.path, exc)
            else:
                LOG.info("ring file %s reloaded: %d topics", self.path,
                         self._ring.size)
        finally:
            self._reload_lock.release()

    def reload_now(self) -> None:
        """Check the file at the next ``queues()`` call, whatever the time."""
        self._next_check = float("-inf")

    # -- routing ------------------------------------------------------------

    def queues(self, topic: str) -> list[tuple[str, str]]:
        """Pairs for ``topic``; see the module docstring for the rules.

        Raises NoHostsError when the ring lists no host for a bare or fanout
        topic, NoLiveHostsError when all its hosts are down.
        """
        now = time.monotonic()
        if now >= self._next_check:
            self._check_reload(now)
        if topic.startswith(FANOUT_PREFIX):
            return self._fanout(topic)
        dot = topic.find(TOPIC_SEPARATOR)
        if dot >= 0:                       # directed, replies included
            host = topic[dot + 1:]
            if not host:
                raise errors.LocalError(
                    "topic %r names no host after the '.'; write "
                    "TOPIC.HOST or the bare topic" % (topic,))
            return [(topic, host)]
        pairs = self._ring.bare.get(topic)
        if not pairs:
            raise errors.NoHostsError(topic, source=self.source)
        count = len(pairs)
        cursor = self._cursors.get(topic, 0) % count
        liveness = self.liveness
        if liveness is None:
            self._cursors[topic] = cursor + 1
            return [pairs[cursor]]
        # Skip down hosts; the cursor moves past them, so a dead host costs
        # one extra check per round rather than per call.
        for step in range(count):
            pair = pairs[(cursor + step) % count]
            if self._is_up(liveness, pair[1], topic):
                self._cursors[topic] = cursor + step + 1
                return [pair]
        raise errors.NoLiveHostsError(
            topic, self._dead(liveness, topic, pairs), source=self.source)

    def _fanout(self, topic: str) -> list[tuple[str, str]]:
        bare = topic[len(FANOUT_PREFIX):].partition(TOPIC_SEPARATOR)[0]
        pairs = self._ring.fanout.get(bare)
        if not pairs:    # name the bare topic: that is what the ring lacks
            raise errors.NoHostsError(bare, source=self.source)
        liveness = self.liveness
        if liveness is None:
            return list(pairs)
        live = [p for p in pairs if self._is_up(liveness, p[1], bare)]
        if not live:
            raise errors.NoLiveHostsError(
                topic, self._dead(liveness, bare, pairs), source=self.source)
        return live

    def _is_up(self, liveness: Liveness, host: str, topic: str) -> bool:
        try:
            return bool(liveness.is_up(host, topic))
        except Exception:
            # A broken liveness source must not stop all traffic: treat the
            # host as up (the call may then time out) and say so, rarely.
            now = time.monotonic()
            if now - self._last_is_up_log >= _LOG_EVERY:
                self._last_is_up_log = now
                LOG.exception("liveness check of host %s (topic %s) failed; "
                              "treating hosts as up", host, topic)
            return True

    @staticmethod
    def _dead(liveness: Any, topic: str, pairs: tuple[Pair, ...]) -> list[str]:
        hosts = [h for _, h in pairs]
        dead = getattr(liveness, "dead_hosts", None)
        try:
            if callable(dead):
                listed = list(dead(hosts, topic))
            elif dead is not None:           # a container of down hosts
                listed = [h for h in hosts if h in dead]
            else:
                listed = []
        except Exception:
            LOG.exception("liveness.dead_hosts failed for topic %s", topic)
            listed = []
        return listed or hosts

    def topics(self) -> list[str]:
        """The bare topics of the current ring."""
        return list(self._ring.bare)

    def knows_host(self, host: str) -> bool:
        """True when the current ring lists ``host`` under any topic."""
        return host in self._ring.hosts
