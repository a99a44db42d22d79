"""Engines and transactions."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from core.store.tables import ROW_CLOCK

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(timezone.utc)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            # WAL lets the web process read while the worker writes; in WAL, synchronous=NORMAL syncs at
            # checkpoints instead of on every commit (a crashed process loses nothing; only a power cut can
            # lose the last transactions). The 30 s timeout is SQLite's busy timeout between the processes.
            # Foreign keys are off by default in SQLite.
            cursor = dbapi_conn.cursor()
            if ":memory:" not in url:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # The web process runs up to 40 requests at once in its thread pool and a worker 8 job threads plus the
    # relay: a pool of 5 + 10 (SQLAlchemy's default) made requests queue for a connection under load.
    # A transaction whose client vanished mid-way (a partition, a killed process behind a proxy) would
    # hold its row locks until the server noticed; the outbox claims would wait on it for ever. Our
    # transactions are short (no vendor call inside one), so the server ends any idle one after a minute,
    # and TCP keepalives find a dead client within about a minute too.
    engine = create_engine(normalized_url(url), pool_size=10, max_overflow=30, pool_timeout=10,
                           connect_args={"options": f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
                                         "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                                         "keepalives_count": 3})
    ping_when_idle(engine)
    return engine


IDLE_IN_TRANSACTION_MS = 60_000
# A pooled connection unused this long is pinged before it is handed out. SQLAlchemy's pool_pre_ping pings on
# every checkout: a round trip per transaction, 8% of a worker thread's time under a backlog (bench/crm_push.py).
PING_AFTER_IDLE_S = 1.0


def ping_when_idle(engine: Engine, after: float = PING_AFTER_IDLE_S,
                   clock: Callable[[], float] = time.monotonic) -> None:
    """Pessimistic disconnect handling for connections that sat in the pool (SQLAlchemy's documented recipe: a
    checkout that finds its connection dead raises DisconnectionError, and the pool hands out a new one). One in
    steady use is not pinged: if the server went away under it, the statement fails, SQLAlchemy sees a
    disconnect and invalidates the whole pool, and the job is retried like any failed one."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn, record) -> None:
        record.info["checked_in"] = clock()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn, record, _proxy) -> None:
        checked_in = record.info.get("checked_in")  # none on a fresh connection (record.info dies with it)
        if checked_in is None or clock() - checked_in < after:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # noqa: BLE001 (whatever the driver raises for a dead connection)
            raise DisconnectionError(f"connection idle for {clock() - checked_in:.0f} s is gone: {exc}") from exc


def normalized_url(url: str) -> str:
    """`postgres://` (Heroku, Render, many dashboards) and `postgresql://` both mean psycopg 3."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url.removeprefix(scheme)
    return url


class Database:
    """An engine plus a session factory; `with db.transaction() as s:` commits or rolls back.

    Rows are stamped (`created_at`, `updated_at`) from `clock`, the one clock the process runs on
    (the Runtime sets it), so a row written "now" and a query asking what is due agree even when
    the clock is injected.
    """

    def __init__(self, url: str, *, clock: Clock = system_clock) -> None:
        self.url = url
        self.clock = clock
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        event.listen(self._sessions, "before_flush", self._stamp)

    def _stamp(self, session: Session, _context, _instances) -> None:
        now = self.clock()
        for row in session.new:
            for column in ("created_at", "updated_at"):
                if hasattr(row, column) and getattr(row, column) is None:
                    setattr(row, column, now)
        for row in session.dirty:
            if (hasattr(row, "updated_at") and session.is_modified(row, include_collections=False)
                    and not inspect(row).attrs.updated_at.history.has_changes()):
                row.updated_at = now

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._row_clock(), self._sessions.begin() as session:
            yield session

    @contextlib.contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A connection on which each statement commits by itself: for a single statement that needs no
        transaction around it (the job claim), two round trips fewer than BEGIN ... COMMIT."""
        with self._row_clock(), self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            yield connection

    @contextlib.contextmanager
    def _row_clock(self) -> Iterator[None]:
        token = ROW_CLOCK.set(self.clock)
        try:
            yield
        finally:
            ROW_CLOCK.reset(token)

    def session(self) -> Session:
        return self._sessions()

    def dispose(self) -> None:
        self.engine.dispose()
