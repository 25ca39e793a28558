"""The small contract every ServiceGroup back end implements.

A driver keeps the members that *this process* joined alive in its back end
(heartbeats, or an ephemeral node) and answers questions about every
member of a group from what the back end says.  It raises
``ServiceGroupUnavailable`` when the back end cannot be asked; the caller
(``servicegroup.api.API``) then answers from the last view it had.

Also here, because all three drivers need them: the error type, the
``MemberRecord`` a read returns, name checks, a capped exponential
``Backoff``, ``BackendHealth``, which logs *changes* of reachability
once (lost / restored) instead of once per failed attempt, and
``heartbeat_loop``, the task that keeps the members of the db and mc
drivers fresh.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import time
from typing import Any, Callable, Iterable

from nova_rpc_zmq import concurrency, errors, options

LOG = logging.getLogger(__name__)

#: Longest group or member name accepted (hosts and topics are far shorter).
MAX_NAME_LEN = 255


class ServiceGroupUnavailable(errors.RPCException):
    """The ServiceGroup back end (database, ZooKeeper, memcached) cannot be
    reached.  Raised at start, with the address, so a wrong address fails
    loudly; once running, reads answer from the last known view instead."""

    def __init__(self, driver: str, address: str, reason: str = "") -> None:
        self.driver = driver
        self.address = address
        self.reason = reason
        msg = "servicegroup driver %r cannot reach its back end at %s" % (
            driver, address)
        if reason:
            msg += ": %s" % reason
        super().__init__(msg)


@dataclasses.dataclass(frozen=True)
class MemberRecord:
    """What a back end knows about one member of one group.

    ``up`` is the verdict at the time of the read; ``last_seen`` is epoch
    seconds of the last sign of life, or None when the back end cannot say
    (a ZooKeeper member that vanished before this process watched it).
    """

    group: str
    member: str
    up: bool
    last_seen: float | None = None
    service: Any = None


def check_name(kind: str, value: object) -> str:
    """Return ``value`` if it is usable as a group or member name.

    Raises ``errors.LocalError`` (the caller's mistake) for an empty name,
    a non-string, a slash (it would nest ZooKeeper paths), a control
    character or an over-long name.
    """
    if not isinstance(value, str) or not value:
        raise errors.LocalError("servicegroup %s must be a non-empty string, "
                                "got %r" % (kind, value))
    if len(value) > MAX_NAME_LEN:
        raise errors.LocalError("servicegroup %s %r is longer than %d "
                                "characters" % (kind, value[:40] + "...",
                                                MAX_NAME_LEN))
    if "/" in value or value.startswith(".") or any(
            ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise errors.LocalError(
            "servicegroup %s %r may not contain '/', control characters or "
            "start with '.': use a host name or a bare topic" % (kind, value))
    return value


class Backoff:
    """Capped exponential delays: ``initial``, x2, x2 ... up to ``cap``."""

    def __init__(self, initial: float, cap: float) -> None:
        self.initial = max(0.01, float(initial))
        self.cap = max(self.initial, float(cap))
        self._next = self.initial

    def next(self) -> float:
        """The delay to wait now; the following one will be twice as long."""
        delay = self._next
        self._next = min(self.cap, self._next * 2)
        return delay

    def reset(self) -> None:
        """Back to ``initial`` (call after a success)."""
        self._next = self.initial


class BackendHealth:
    """Reachability of one back end, logged once per change.

    Thread-safe enough for its use: the worst race logs a transition twice.
    """

    def __init__(self, driver: str, address: str,
                 logger: logging.Logger | None = None) -> None:
        self.driver = driver
        self.address = address
        self._log = logger or LOG
        self.available = True
        self.since = time.time()
        self.failures = 0
        self.lost_at: float | None = None
        self.restored_at: float | None = None

    def lost(self, reason: object) -> None:
        """Record a failed operation; logs only the up -> down change."""
        self.failures += 1
        if self.available:
            self.available = False
            self.since = self.lost_at = time.time()
            self._log.warning(
                "servicegroup %s: back end at %s lost (%s); answering from "
                "the last known view and retrying with back-off",
                self.driver, self.address, reason)

    def restored(self) -> None:
        """Record a successful operation; logs only the down -> up change."""
        if not self.available:
            down_for = time.time() - self.since
            self.available = True
            self.since = self.restored_at = time.time()
            self._log.warning("servicegroup %s: back end at %s restored after "
                              "%.1fs", self.driver, self.address, down_for)

    def grace_cutoff(self, now: float, down_time: float) -> float | None:
        """After an outage of the back end, heartbeats could not land: for
        ``down_time`` after recovery a member counts as up if it was heard
        from within ``down_time`` before the outage began.  Returns that
        oldest acceptable ``last_seen``, or None outside the grace period.
        Without it every member would look dead from the recovery until
        its next heartbeat, and routing would drop every host."""
        if self.lost_at is None or self.restored_at is None or not self.available:
            return None
        if now - self.restored_at > down_time:
            return None
        return self.lost_at - down_time

    def unavailable(self, reason: object) -> ServiceGroupUnavailable:
        """Record a failure and return the error to raise."""
        self.lost(reason)
        return ServiceGroupUnavailable(self.driver, self.address, str(reason))


def heartbeat_loop(beat: Callable[[], None], *, driver: str,
                   health: BackendHealth, interval: Callable[[], float],
                   wake: Any, stopped: Callable[[], bool],
                   unreachable: tuple[type[BaseException], ...] = (),
                   reason: Callable[[BaseException], object] = str,
                   log: logging.Logger = LOG) -> None:
    """Call ``beat()`` every ``interval()`` seconds until ``stopped()``:
    the heartbeat task of a driver (run it with ``handler.spawn``).

    After a failure the next try comes sooner: capped exponential back-off
    from ``min(0.5, interval)`` seconds, doubling up to the interval, so the
    first heartbeat after the back end returns lands within one interval.
    When ``beat`` raises ``ServiceGroupUnavailable`` the failure is already
    recorded in ``health``; one of ``unreachable`` is recorded there as
    lost with ``reason(exc)``; any other exception is logged with its
    traceback, and the loop goes on.  A success records the back end
    restored.  ``wake`` is the handler's Event: ``wake.set()`` cuts the
    current pause short (to stop, or to beat at once).  Never raises.
    """
    first = interval()
    backoff = Backoff(min(0.5, first), first)
    while not stopped():
        delay = interval()
        try:
            beat()
            health.restored()
            backoff.reset()
        except ServiceGroupUnavailable:
            delay = backoff.next()
        except unreachable as exc:
            health.lost(reason(exc))
            delay = backoff.next()
        except Exception:  # noqa: BLE001 - keep heartbeating regardless
            log.exception("servicegroup %s heartbeat failed", driver)
            delay = backoff.next()
        wake.wait(delay)
        wake.clear()


class Driver(abc.ABC):
    """One ServiceGroup back end.

    Methods that read raise ``ServiceGroupUnavailable`` when the back end
    cannot be asked; ``join`` raises it only if the back end is away and
    the member could not be queued for a later registration.  All methods
    are safe to call from any thread or green thread of the process.
    """

    #: short name used in config and logs: 'db', 'zk' or 'mc'
    name = "abstract"

    def __init__(self, *,
                 service_down_time: float = options.default("service_down_time"),
                 report_interval: float = options.default("report_interval"),
                 handler: concurrency.Handler | None = None) -> None:
        self.service_down_time = float(service_down_time)
        self.report_interval = float(report_interval)
        if self.report_interval <= 0 or self.service_down_time <= 0:
            raise errors.ConfigurationError(
                "report_interval (%s) and service_down_time (%s) must be > 0"
                % (report_interval, service_down_time))
        if self.service_down_time <= self.report_interval:
            raise errors.ConfigurationError(
                "service_down_time (%s) must be larger than report_interval "
                "(%s), or live services are reported down between two "
                "heartbeats; set service_down_time to at least %s x "
                "report_interval" % (service_down_time, report_interval,
                                     options.DOWN_TIME_FACTOR))
        self.handler = handler or concurrency.get_handler()
        self._listeners: list[Callable[[], None]] = []

    # -- membership of this process ------------------------------------

    @abc.abstractmethod
    def join(self, member_id: str, group_id: str, service: Any = None) -> None:
        """Register ``member_id`` in ``group_id`` and keep it alive."""

    @abc.abstractmethod
    def leave(self, member_id: str, group_id: str) -> None:
        """Stop keeping the member alive and mark it down now."""

    # -- reads -----------------------------------------------------------

    @abc.abstractmethod
    def members(self, group_ids: Iterable[str]) -> dict[str, list[MemberRecord]]:
        """Every member ever recorded in each group, up or down."""

    @abc.abstractmethod
    def is_up(self, group_id: str, member_id: str) -> bool:
        """True when the member is alive now."""

    @abc.abstractmethod
    def groups(self) -> list[str]:
        """Names of every group the back end holds."""

    def get_all(self, group_id: str) -> list[str]:
        """Members of ``group_id`` that are up, sorted."""
        recs = self.members([group_id]).get(group_id, [])
        return sorted(r.member for r in recs if r.up)

    def last_seen(self, member_id: str, group_id: str) -> float | None:
        """Epoch seconds of the member's last sign of life, or None."""
        for rec in self.members([group_id]).get(group_id, []):
            if rec.member == member_id:
                return rec.last_seen
        return None

    # -- change notifications ---------------------------------------------

    #: True when the driver calls listeners on membership changes (watches);
    #: False when a reader has to poll.
    pushes_changes = False

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (no arguments, must not block) whenever the
        driver learns of a membership change."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        """Undo ``add_listener``; unknown callbacks are ignored."""
        try:
            self._listeners.remove(callback)
        except ValueError:
            pass

    def _notify(self) -> None:
        for cb in list(self._listeners):
            try:
                cb()
            except Exception:  # noqa: BLE001 - a listener must not stop us
                LOG.exception("servicegroup listener %r failed", cb)

    # -- state -------------------------------------------------------------

    @property
    @abc.abstractmethod
    def address(self) -> str:
        """Where the back end is, for messages (no passwords)."""

    @property
    def available(self) -> bool:
        """False while the back end is known to be unreachable."""
        health = getattr(self, "health", None)
        return True if health is None else health.available

    @abc.abstractmethod
    def stop(self, leave: bool = True) -> None:
        """Stop background work and close connections.  With ``leave`` the
        members this process joined are marked down first (best effort);
        without it they simply stop being refreshed, as after a crash."""
