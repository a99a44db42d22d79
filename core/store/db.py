"""Engines and transactions."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

from sqlalchemy import Engine, create_engine, event, inspect
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
    return create_engine(normalized_url(url), pool_pre_ping=True, pool_size=10, max_overflow=30, pool_timeout=10,
                         connect_args={"options": f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
                                       "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                                       "keepalives_count": 3})


IDLE_IN_TRANSACTION_MS = 60_000


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
        token = ROW_CLOCK.set(self.clock)
        try:
            with self._sessions.begin() as session:
                yield session
        finally:
            ROW_CLOCK.reset(token)

    def session(self) -> Session:
        return self._sessions()

    def dispose(self) -> None:
        self.engine.dispose()
