"""ServiceGroup driver ``db``: heartbeat rows in an SQL database.

Options (from ``Settings``): ``database_connection`` - any SQLAlchemy URL
(SQLAlchemy 1.4 or 2): by default (the option's, and ``DbDriver``'s when
given none) the SQLite file
``sqlite:////var/lib/nova/nova_rpc_zmq_servicegroup.sqlite``; PostgreSQL
as ``postgresql+pg8000://user:pw@host/db`` (pure Python, works
under eventlet) or ``postgresql+psycopg://...``; ``report_interval`` -
seconds between heartbeats; ``service_down_time`` - a member not heard from
for this long is down.

One table, ``nova_rpc_zmq_servicegroup``: a row per (group, member) with
``last_seen`` (epoch seconds, the writer's clock: keep hosts in NTP sync, as
Nova's own db driver required), ``joined_at``, ``left_at`` (set by a
graceful ``leave``) and ``service`` (JSON).  Rows are never deleted, so a
member that died stays known (down) - the liveness view relies on that.

Load: every member this process joined, in every driver instance using the
same URL, is refreshed by one UPDATE batch in one transaction per
``report_interval`` (the ``_Pulse`` below), so a process with many members
costs one commit per interval.  ``get_all`` / ``members`` are one SELECT.

While the database is away: heartbeats are retried with capped exponential
back-off (cap = ``report_interval``, so the first heartbeat after recovery
comes within one interval); reads raise ``ServiceGroupUnavailable`` and the
API answers from its last known view.

The URL's password never appears in an error message or a log line: the
address is shown as ``postgresql+pg8000://user:***@host/db``, and errors
from the database are masked the same way.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Iterable

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from nova_rpc_zmq import concurrency, errors, options
from nova_rpc_zmq.redact import mask_url
from nova_rpc_zmq.servicegroup.drivers import base

if TYPE_CHECKING:
    from nova_rpc_zmq import config

LOG = logging.getLogger(__name__)

TABLE_NAME = "nova_rpc_zmq_servicegroup"
#: the URL when none is given: the default of ``[database] connection``
DEFAULT_URL: str = options.default("database_connection")

metadata = sa.MetaData()
# Epoch seconds need a double: a single-precision float is 128 s coarse
# today.  Float(precision=53) is DOUBLE PRECISION on PostgreSQL and MySQL
# and REAL on SQLite, in SQLAlchemy 1.4 as in 2 (sa.Double is 2.0 only).
_EPOCH = sa.Float(precision=53)
heartbeats = sa.Table(
    TABLE_NAME, metadata,
    sa.Column("group_id", sa.String(255), primary_key=True),
    sa.Column("member_id", sa.String(255), primary_key=True),
    sa.Column("last_seen", _EPOCH, nullable=False),
    sa.Column("joined_at", _EPOCH, nullable=False),
    sa.Column("left_at", _EPOCH, nullable=True),
    sa.Column("service", sa.Text, nullable=True),
)


def _service_json(service: Any) -> str | None:
    if service is None:
        return None
    return json.dumps(service, default=str, sort_keys=True)


def create_schema(engine: "sa.engine.Engine", attempts: int = 5) -> None:
    """Create the heartbeat table unless it exists.

    Several processes may start against a new database together: each
    sees no table and each tries CREATE TABLE.  All but one fail, with
    "already exists", or on SQLite with "database is locked" at once
    (two readers that both want to write).  A loser checks again: the
    table is there, or it tries again, ``attempts`` times in all; any
    other failure, or the last one, is raised.
    """
    for attempt in range(attempts):
        try:
            metadata.create_all(engine, checkfirst=True)
            return
        except (sa_exc.OperationalError, sa_exc.ProgrammingError,
                sa_exc.IntegrityError):
            if sa.inspect(engine).has_table(TABLE_NAME):
                return
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def make_engine(url: str, connect_timeout: float) -> "sa.engine.Engine":
    """An engine for ``url`` with timeouts fit for liveness work.

    Raises ``errors.ConfigurationError`` for a URL SQLAlchemy cannot use
    (unparsable, unknown dialect, missing DB-API module), naming the
    option and showing the URL with its password masked.
    """
    try:
        parsed = sa.engine.make_url(url)
    except (sa_exc.ArgumentError, ValueError) as exc:
        # ValueError: a port that is no number; neither error has the
        # password in it, but the URL we quote does
        raise errors.ConfigurationError(
            "database_connection %r is not an SQLAlchemy URL (%s); use e.g. "
            "sqlite:////var/lib/nova/servicegroup.sqlite or "
            "postgresql+pg8000://user:password@host/db"
            % (mask_url(url), mask_url(str(exc)))) from None
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    try:
        # the driver name is looked up in the dialect: an unknown one raises
        backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    except (ImportError, sa_exc.NoSuchModuleError) as exc:
        raise errors.ConfigurationError(
            "database_connection %s: %s; use a dialect SQLAlchemy knows, e.g. "
            "sqlite:// or postgresql+pg8000://"
            % (parsed.render_as_string(hide_password=True),
               mask_url(str(exc), [parsed.password]))) from exc
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": connect_timeout,
                                  "check_same_thread": False}
        if parsed.database in (None, "", ":memory:"):
            # one shared connection, or every thread sees its own empty db
            kwargs["poolclass"] = sa.pool.StaticPool
    elif driver == "pg8000":
        kwargs["connect_args"] = {"timeout": connect_timeout}
    elif driver in ("psycopg", "psycopg2"):
        kwargs["connect_args"] = {"connect_timeout": max(1, int(connect_timeout))}
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except (ImportError, sa_exc.NoSuchModuleError) as exc:
        raise errors.ConfigurationError(
            "database_connection %s: %s; install the DB-API module or pick "
            "another driver in the URL (e.g. postgresql+pg8000://)"
            % (parsed.render_as_string(hide_password=True),
               mask_url(str(exc), [parsed.password]))) from exc
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets readers in other processes proceed during a heartbeat
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
    return engine


class _Pulse:
    """Every heartbeat of this process for one database URL.

    Shared by all ``DbDriver`` instances on that URL so that many members
    cost one transaction per interval.  Use ``_Pulse.acquire`` / ``release``.
    """

    _registry: dict[str, "_Pulse"] = {}
    _registry_lock = threading.Lock()

    def __init__(self, url: str, engine: "sa.engine.Engine",
                 handler: concurrency.Handler, health: base.BackendHealth) -> None:
        self.url = url
        self.engine = engine
        self.handler = handler
        self.health = health
        self.refs = 0
        self.lock = threading.Lock()
        # held across a heartbeat and a leave, so that a heartbeat cannot
        # revive a member that left while it was running
        self.beat_lock = threading.Lock()
        # (group, member) -> service json; what this process keeps alive,
        # with how many driver instances keep each one
        self.members: dict[tuple[str, str], str | None] = {}
        self.holders: dict[tuple[str, str], int] = {}
        self.intervals: dict[int, float] = {}
        self.wake = handler.Event()
        self.stopped = False
        self.task: Any = None
        self.beats = 0  # transactions committed, for tests and stats

    @classmethod
    def acquire(cls, url: str, connect_timeout: float, interval: float,
                handler: concurrency.Handler, owner: object) -> "_Pulse":
        """The pulse for ``url``, created (and the schema checked) if new.
        Raises ``ServiceGroupUnavailable`` when the database cannot be
        reached."""
        with cls._registry_lock:
            pulse = cls._registry.get(url)
            if pulse is None or pulse.stopped:
                engine = make_engine(url, connect_timeout)
                shown = engine.url.render_as_string(hide_password=True)
                health = base.BackendHealth("db", shown, LOG)
                try:
                    create_schema(engine)
                except sa_exc.SQLAlchemyError as exc:
                    engine.dispose()
                    # from None: the chained DB-API error may quote the URL
                    raise base.ServiceGroupUnavailable(
                        "db", shown, _short(exc, engine.url.password)) from None
                pulse = cls(url, engine, handler, health)
                cls._registry[url] = pulse
            pulse.refs += 1
            pulse.intervals[id(owner)] = interval
            return pulse

    def release(self, owner: object) -> None:
        """Drop one reference; the last one stops the task and the engine."""
        with self._registry_lock:
            self.refs -= 1
            self.intervals.pop(id(owner), None)
            if self.refs > 0:
                return
            self.stopped = True
            if self._registry.get(self.url) is self:
                del self._registry[self.url]
        self.wake.set()
        self.engine.dispose()

    @property
    def interval(self) -> float:
        return min(self.intervals.values(), default=10.0)

    def add(self, key: tuple[str, str], service_json: str | None,
            new_holder: bool) -> None:
        with self.lock:
            self.members[key] = service_json
            if new_holder:
                self.holders[key] = self.holders.get(key, 0) + 1
            if self.task is None:
                self.task = self.handler.spawn(self._run)

    def discard(self, key: tuple[str, str]) -> None:
        """One holder less; the heartbeat stops when none is left."""
        with self.lock:
            left = self.holders.get(key, 0) - 1
            if left > 0:
                self.holders[key] = left
            else:
                self.holders.pop(key, None)
                self.members.pop(key, None)

    def _run(self) -> None:
        base.heartbeat_loop(
            self.beat, driver="db", health=self.health,
            interval=lambda: self.interval, wake=self.wake,
            stopped=lambda: self.stopped,
            unreachable=(sa_exc.SQLAlchemyError,),
            reason=lambda exc: _short(exc, self.engine.url.password), log=LOG)

    def beat(self) -> None:
        """One heartbeat for every member: one transaction."""
        with self.beat_lock:
            self._beat_locked()

    def _beat_locked(self) -> None:
        with self.lock:
            items = list(self.members.items())
        if not items:
            return
        now = time.time()
        params = [{"g": g, "m": m, "now": now} for (g, m), _ in items]
        stmt = (sa.update(heartbeats)
                .where(heartbeats.c.group_id == sa.bindparam("g"),
                       heartbeats.c.member_id == sa.bindparam("m"))
                .values(last_seen=sa.bindparam("now"), left_at=None))
        try:
            self._beat_once(stmt, params, items, now)
        except (sa_exc.ProgrammingError, sa_exc.OperationalError):
            # the table may have vanished (database re-created): make it
            # and retry once; if the database is away this raises again
            create_schema(self.engine)
            self._beat_once(stmt, params, items, now)
        self.beats += 1

    def _beat_once(self, stmt: Any, params: list[dict[str, Any]],
                   items: list[tuple[tuple[str, str], str | None]],
                   now: float) -> None:
        with self.engine.begin() as conn:
            res = conn.execute(stmt, params)
            if res.supports_sane_multi_rowcount() and res.rowcount == len(params):
                return
            # some rows are missing (a fresh database): insert those
            groups = sorted({g for (g, _m), _ in items})
            rows = conn.execute(
                sa.select(heartbeats.c.group_id, heartbeats.c.member_id)
                .where(heartbeats.c.group_id.in_(groups))).all()
            have = {(r.group_id, r.member_id) for r in rows}
            missing = [{"group_id": g, "member_id": m, "last_seen": now,
                        "joined_at": now, "left_at": None, "service": svc}
                       for (g, m), svc in items if (g, m) not in have]
            if missing:
                conn.execute(sa.insert(heartbeats), missing)


def _short(exc: BaseException, password: str | None = None) -> str:
    """One line of an SQLAlchemy error, without the SQL, with any URL's
    password and the literal ``password`` masked."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc)
    line = text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
    return mask_url(line, [password])


class DbDriver(base.Driver):
    """Heartbeat rows in an SQL database; see the module docstring."""

    name = "db"

    def __init__(self, database_connection: str = DEFAULT_URL, *,
                 service_down_time: float = options.default("service_down_time"),
                 report_interval: float = options.default("report_interval"),
                 connect_timeout: float | None = None,
                 handler: concurrency.Handler | None = None) -> None:
        super().__init__(service_down_time=service_down_time,
                         report_interval=report_interval, handler=handler)
        self.url = database_connection
        timeout = connect_timeout or max(1.0, min(5.0, self.report_interval))
        self._pulse = _Pulse.acquire(self.url, timeout, self.report_interval,
                                     self.handler, self)
        self.health = self._pulse.health
        self._mine: set[tuple[str, str]] = set()
        self._stopped = False

    @classmethod
    def from_settings(cls, settings: config.Settings,
                      handler: concurrency.Handler | None = None) -> "DbDriver":
        """Build from ``Settings`` (``database_connection``,
        ``service_down_time``, ``report_interval``)."""
        return cls(settings.database_connection,
                   service_down_time=settings.service_down_time,
                   report_interval=settings.report_interval, handler=handler)

    @property
    def address(self) -> str:
        return self.health.address

    @property
    def engine(self) -> "sa.engine.Engine":
        """The shared engine (tests and the status command read through it)."""
        return self._pulse.engine

    @property
    def heartbeat_transactions(self) -> int:
        """Heartbeat transactions committed by this process for this URL."""
        return self._pulse.beats

    def join(self, member_id: str, group_id: str, service: Any = None) -> None:
        """Write the member's row now (blocking), then keep it fresh.

        If the database is away the member is still queued: the heartbeat
        task writes it once the database is back.
        """
        key = (base.check_name("group", group_id),
               base.check_name("member", member_id))
        svc = _service_json(service)
        now = time.time()
        try:
            with self.engine.begin() as conn:
                res = conn.execute(
                    sa.update(heartbeats)
                    .where(heartbeats.c.group_id == key[0],
                           heartbeats.c.member_id == key[1])
                    .values(last_seen=now, joined_at=now, left_at=None,
                            service=svc))
                if res.rowcount == 0:
                    conn.execute(sa.insert(heartbeats).values(
                        group_id=key[0], member_id=key[1], last_seen=now,
                        joined_at=now, left_at=None, service=svc))
            self.health.restored()
        except sa_exc.IntegrityError:
            # another process inserted the same row between our two
            # statements: the heartbeat task refreshes it from now on
            pass
        except sa_exc.SQLAlchemyError as exc:
            self.health.lost(_short(exc, self.engine.url.password))
        self._pulse.add(key, svc, new_holder=key not in self._mine)
        self._mine.add(key)

    def leave(self, member_id: str, group_id: str) -> None:
        """Stop the heartbeat and mark the row left (best effort)."""
        self._leave([(group_id, member_id)])

    def _leave(self, keys: list[tuple[str, str]]) -> None:
        """Mark ``keys`` left in one transaction."""
        stmt = (sa.update(heartbeats)
                .where(heartbeats.c.group_id == sa.bindparam("g"),
                       heartbeats.c.member_id == sa.bindparam("m"))
                .values(left_at=sa.bindparam("now")))
        try:
            with self._pulse.beat_lock:
                for key in keys:
                    if key in self._mine:
                        self._mine.discard(key)
                        self._pulse.discard(key)
                now = time.time()
                with self.engine.begin() as conn:
                    conn.execute(stmt, [{"g": g, "m": m, "now": now} for g, m in keys])
        except sa_exc.SQLAlchemyError as exc:
            self.health.lost(_short(exc, self.engine.url.password))
            LOG.warning("servicegroup db: could not mark %s as left (%s); "
                        "seen down after service_down_time instead",
                        ", ".join("%s/%s" % k for k in keys), _short(exc, self.engine.url.password))

    def _record(self, row: Any, now: float) -> base.MemberRecord:
        up = row.left_at is None and now - row.last_seen <= self.service_down_time
        if not up and row.left_at is None:
            cutoff = self.health.grace_cutoff(now, self.service_down_time)
            up = cutoff is not None and row.last_seen >= cutoff
        service = None
        if row.service:
            try:
                service = json.loads(row.service)
            except ValueError:
                service = row.service
        return base.MemberRecord(row.group_id, row.member_id, up,
                                 float(row.last_seen), service)

    def members(self, group_ids: Iterable[str]) -> dict[str, list[base.MemberRecord]]:
        """One SELECT for all the groups asked."""
        groups = sorted(set(group_ids))
        out: dict[str, list[base.MemberRecord]] = {g: [] for g in groups}
        if not groups:
            return out
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(heartbeats).where(
                    heartbeats.c.group_id.in_(groups))).all()
        except sa_exc.SQLAlchemyError as exc:
            raise self.health.unavailable(_short(exc, self.engine.url.password)) from exc
        self.health.restored()
        now = time.time()
        for row in rows:
            out[row.group_id].append(self._record(row, now))
        return out

    def is_up(self, group_id: str, member_id: str) -> bool:
        try:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(heartbeats).where(
                    heartbeats.c.group_id == group_id,
                    heartbeats.c.member_id == member_id)).first()
        except sa_exc.SQLAlchemyError as exc:
            raise self.health.unavailable(_short(exc, self.engine.url.password)) from exc
        self.health.restored()
        return row is not None and self._record(row, time.time()).up

    def groups(self) -> list[str]:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(heartbeats.c.group_id).distinct()).all()
        except sa_exc.SQLAlchemyError as exc:
            raise self.health.unavailable(_short(exc, self.engine.url.password)) from exc
        self.health.restored()
        return sorted(r.group_id for r in rows)

    def stop(self, leave: bool = True) -> None:
        if self._stopped:
            return
        self._stopped = True
        mine = sorted(self._mine)
        if leave and mine:
            self._leave(mine)
        else:
            for key in mine:
                self._pulse.discard(key)
        self._mine.clear()
        self._pulse.release(self)
