"""Pooled PostgreSQL connections: pinged only after sitting idle, replaced when the server dropped them; and
single statements that commit by themselves."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.exc import OperationalError

from core.store.db import normalized_url, ping_when_idle
from core.store.tables import Lead


def _engine(db, clock):
    engine = create_engine(normalized_url(db.url), pool_size=1, max_overflow=0)
    ping_when_idle(engine, after=1.0, clock=clock)
    return engine


def _backend(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT pg_backend_pid()")).scalar_one()


def _drop(db, pid: int) -> None:
    """The server ends the connection (a restart, an idle timeout, a proxy in between)."""
    with db.engine.connect() as connection:
        assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()


def test_a_connection_that_sat_idle_is_pinged_and_replaced_when_the_server_dropped_it(postgres_db):
    now = [0.0]
    engine = _engine(postgres_db, lambda: now[0])
    first = _backend(engine)
    _drop(postgres_db, first)
    now[0] += 1.5  # idle past the threshold

    second = _backend(engine)  # no error: the ping found it dead and the pool connected again

    assert second != first
    engine.dispose()


def test_a_connection_in_steady_use_is_not_pinged_so_a_drop_fails_one_statement_and_the_pool_recovers(postgres_db):
    now = [0.0]
    engine = _engine(postgres_db, lambda: now[0])
    first = _backend(engine)
    _drop(postgres_db, first)
    now[0] += 0.5  # reused at once, as under load: no ping

    with pytest.raises(OperationalError):
        _backend(engine)
    assert _backend(engine) != first  # the disconnect invalidated the pool: the next checkout connects anew
    engine.dispose()


def test_a_statement_on_an_autocommit_connection_is_committed_without_a_transaction(any_db):
    with any_db.autocommit() as connection:
        connection.execute(insert(Lead.__table__).values(tenant_id="t", phone="+15550100000"))
        # no commit: another connection sees it at once
        with any_db.transaction() as session:
            assert session.scalar(select(Lead.phone).where(Lead.tenant_id == "t")) == "+15550100000"
