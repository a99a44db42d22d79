"""`textback outbox list | replay`: what an operator sees of failed work, and how it goes round again."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from core.outbox import Kind, Pending
from core.store.db import Database
from core.store.migrate import upgrade
from core.store.outbox_admin import RowFilter, human_age, list_rows
from core.store.tables import OutboxRow
from webhooks.cli import app

runner = CliRunner()
def flat(output: str) -> str:
    """Click's error box, unwrapped."""
    return " ".join(output.replace("│", " ").split())


T0 = datetime(2031, 5, 6, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    monkeypatch.setenv("TEXTBACK_DATABASE_URL", url)
    database = Database(url, clock=lambda: T0)
    upgrade(database.engine)
    with database.transaction() as session:
        pending = Pending()
        rows = [("smith-law", Kind.send_sms, "dead", 11, "Transient: twilio 503 Service Unavailable\nretry later"),
                ("smith-law", Kind.crm_sync_lead, "failed", 1, "Rejected: hubspot 400 Property values were not valid"),
                ("acme-plumbing", Kind.offer_slots, "dead", 11, "RuntimeError: boom"),
                ("acme-plumbing", Kind.crm_sync_lead, "parked", 1, "AuthExpired: invalid_grant"),
                ("smith-law", Kind.send_sms, "done", 2, "Transient: earlier attempt timed out")]
        for n, (tenant, kind, status, attempts, error) in enumerate(rows):
            row = session.get(OutboxRow, pending.add(session, tenant_id=tenant, kind=kind, key=f"k{n}",
                                                     payload={"message_id": n}))
            row.status, row.attempts, row.last_error = status, attempts, error
    yield database
    database.dispose()


def test_list_shows_failed_dead_and_parked_rows_with_tenant_kind_age_attempts_and_error(db):
    result = runner.invoke(app, ["outbox", "list"])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["id", "tenant", "kind", "status", "age", "tries", "error"]
    assert len(lines) == 1 + 4 + 1 and lines[-1] == "4 failed/dead/parked row(s)"
    dead_sms = next(line for line in lines if "send_sms" in line)
    assert dead_sms.split()[:3] == ["1", "smith-law", "send_sms"] and " dead " in dead_sms
    assert "11  Transient: twilio 503 Service Unavailable retry later" in dead_sms  # one line per row
    assert "earlier attempt timed out" not in result.output  # a done row is not a problem


def test_list_filters_by_tenant_kind_and_status(db):
    result = runner.invoke(app, ["outbox", "list", "--tenant", "acme-plumbing", "--kind", "crm_sync_lead"])
    assert result.exit_code == 0 and "AuthExpired: invalid_grant" in result.output
    assert result.output.splitlines()[-1] == "1 failed/dead/parked row(s)"

    done = runner.invoke(app, ["outbox", "list", "-s", "done"])
    assert done.exit_code == 0 and done.output.splitlines()[-1] == "1 done row(s)"
    assert "earlier attempt timed out" not in done.output  # finished rows carry no stale error


def test_an_unknown_status_is_an_error_that_names_the_choices(db):
    result = runner.invoke(app, ["outbox", "list", "--status", "bogus"])

    assert result.exit_code == 2
    assert "bogus is not a status; use one of pending, done, failed, dead, parked" in flat(result.output)


def test_age_is_counted_on_the_clock_given(db):
    with db.transaction() as session:
        views, total = list_rows(session, RowFilter(), now=T0 + timedelta(hours=5, minutes=3))
    assert total == 4 and {human_age(view.age) for view in views} == {"5h"}
    assert [human_age(timedelta(seconds=s)) for s in (4, 61, 86400 * 3)] == ["4s", "1m", "3d"]


def test_replay_needs_a_scope_and_dry_run_changes_nothing(db):
    assert runner.invoke(app, ["outbox", "replay"]).exit_code == 2

    dry = runner.invoke(app, ["outbox", "replay", "--all", "--dry-run"])
    assert dry.exit_code == 0 and dry.output.strip() == "2 row(s) would be set back to pending: 1, 3"
    with db.transaction() as session:
        assert {row.status for row in session.query(OutboxRow).filter(OutboxRow.id.in_([1, 3]))} == {"dead"}


def test_replay_by_tenant_or_id_resets_only_those_rows(db):
    result = runner.invoke(app, ["outbox", "replay", "--tenant", "acme-plumbing", "--status", "dead"])
    assert result.exit_code == 0 and result.output.strip() == "1 row(s) set back to pending: 3"

    by_id = runner.invoke(app, ["outbox", "replay", "--id", "2", "--status", "failed"])
    assert by_id.exit_code == 0 and by_id.output.strip() == "1 row(s) set back to pending: 2"

    with db.transaction() as session:
        status = {row.id: (row.status, row.attempts, row.enqueued_at) for row in session.query(OutboxRow)}
    assert status[3] == ("pending", 0, None) and status[2] == ("pending", 0, None)
    assert status[1][0] == "dead" and status[4][0] == "parked"  # other tenants' and other statuses' rows untouched


def test_done_rows_cannot_be_replayed(db):
    result = runner.invoke(app, ["outbox", "replay", "--all", "--status", "done"])
    assert result.exit_code == 2 and "only failed, dead or parked" in flat(result.output)


def test_since_keeps_only_rows_created_from_that_date_on(db):
    everything = runner.invoke(app, ["outbox", "list", "--since", "2031-05-06"])
    nothing = runner.invoke(app, ["outbox", "list", "--since", "2031-05-07T00:00:00+00:00"])
    replayed = runner.invoke(app, ["outbox", "replay", "--all", "--since", "2031-05-07", "--dry-run"])

    assert everything.exit_code == 0 and everything.output.splitlines()[-1] == "4 failed/dead/parked row(s)"
    assert nothing.exit_code == 0 and nothing.output.splitlines() == ["0 failed/dead/parked row(s)"]
    assert replayed.output.strip() == "0 row(s) would be set back to pending"


def test_list_by_id_shows_just_those_rows(db):
    result = runner.invoke(app, ["outbox", "list", "--id", "1", "--id", "3"])

    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.output.splitlines()[1:-1]] == ["1", "3"]
    assert result.output.splitlines()[-1] == "2 failed/dead/parked row(s)"
