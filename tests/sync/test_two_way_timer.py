"""The two-way timer writes each period's pulls and upkeep once, however many workers tick."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from core.config import Settings, Tenant, TenantDirectory
from core.store.tables import OutboxRow
from sync.runtime import Runtime
from sync.two_way_timer import schedule_due

NOON = datetime(2031, 3, 4, 12, 0, tzinfo=timezone.utc)


def tenant(**two_way) -> Tenant:
    return Tenant.model_validate({
        "id": "firm", "name": "Firm", "vertical": "law", "timezone": "America/New_York",
        "phone_numbers": ["+15550001111"], "forward_to": ["+15550002222"], "hours": {"mon": "09:00-17:00"}, "two_way": two_way,
        "connectors": {"calendar": _Calendar(), "crm": _Clio()},
    })


class _Calendar:  # the timer reads only the connector config's type and calendars
    type, calendars = "google", ["a@firm.example", "b@firm.example"]


class _Clio:
    type = "clio"


def kinds(db) -> list[tuple[str, str]]:
    with db.transaction() as s:
        return [(r.kind, r.idempotency_key) for r in s.scalars(select(OutboxRow).order_by(OutboxRow.id))]


def test_two_workers_ticking_in_one_period_write_one_pull_per_calendar_and_one_upkeep(sqlite_db):
    # Given: two workers' runtimes on one database
    clock, settings = [NOON], Settings(database_url=sqlite_db.url, redis_url="stub://")
    workers = [Runtime(settings=settings, db=sqlite_db, tenants=TenantDirectory([tenant(pull_minutes=15)]),
                       clock=lambda: clock[0]) for _ in range(2)]
    # When: both tick twice within the same 15 minutes
    for runtime in workers * 2:
        schedule_due(runtime)
    # Then
    assert sorted(k for k, _ in kinds(sqlite_db)) == ["calendar_pull", "calendar_pull", "watch_calendars", "watch_crm"]
    # And the next period brings the next pulls, but no new upkeep within the hour
    clock[0] = NOON + timedelta(minutes=15)
    schedule_due(workers[1])
    assert sorted(k for k, _ in kinds(sqlite_db)).count("calendar_pull") == 4
    assert sorted(k for k, _ in kinds(sqlite_db)).count("watch_calendars") == 1


def test_a_worker_that_loses_the_race_for_a_period_s_rows_finds_them_instead_of_failing_its_tick(any_db):
    """Two workers started together tick together: the one whose insert comes second meets the unique key."""
    from sqlalchemy import event

    settings = Settings(database_url=any_db.url, redis_url="stub://")
    runtime = Runtime(settings=settings, db=any_db, tenants=TenantDirectory([tenant(pull_minutes=15)]),
                      clock=lambda: NOON)
    other = Runtime(settings=settings, db=any_db, tenants=TenantDirectory([tenant(pull_minutes=15)]),
                    clock=lambda: NOON)
    raced = []

    def the_other_worker_first(conn, cursor, statement, *_):
        if statement.lstrip().upper().startswith("INSERT INTO OUTBOX") and not raced:
            raced.append(True)  # after this worker looked the keys up, before it inserts
            other_ids = schedule_due(other)
            assert len(other_ids) == 4

    event.listen(any_db.engine, "before_cursor_execute", the_other_worker_first)
    try:
        ids = schedule_due(runtime)
    finally:
        event.remove(any_db.engine, "before_cursor_execute", the_other_worker_first)
    assert raced and ids == []  # the rows are the other worker's, dispatched by it
    assert sorted(k for k, _ in kinds(any_db)) == ["calendar_pull", "calendar_pull", "watch_calendars", "watch_crm"]
