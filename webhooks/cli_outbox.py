"""`textback outbox list | replay`: failed, dead and parked work, and how it goes round again."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Optional

import typer

from core.config import Settings

outbox_app = typer.Typer(help="Durable jobs: inspect and replay.", no_args_is_help=True)

_SPAN = re.compile(r"^(\d+(?:\.\d+)?)\s*(m|min|h|d|w)$")
_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}

TENANT = typer.Option(None, "--tenant", "-t", metavar="TENANT", help="only this tenant's rows")
KIND = typer.Option(None, "--kind", "-k", metavar="KIND", help="only this job kind, e.g. send_sms")
SINCE = typer.Option(None, "--since", metavar="WHEN",
                     help="only rows created since then: 30m, 2h, 3d, 1w ago, or a date/time such as 2031-05-06")


def register(app: typer.Typer) -> None:
    app.add_typer(outbox_app, name="outbox")


def parse_since(value: str | None, *, now: datetime) -> datetime | None:
    """`2h` (ago) or an ISO date/time (UTC unless it says otherwise) into an aware datetime."""
    if value is None:
        return None
    match = _SPAN.match(value.strip().lower())
    if match:
        return now - timedelta(**{_UNITS[match[2]]: float(match[1])})
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(f"{value!r} is neither a span (30m, 2h, 3d, 1w) nor a date such as 2031-05-06",
                                 param_hint="--since") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _statuses(values: list[str]) -> tuple:
    from core.jobs import OutboxStatus

    known = [status.value for status in OutboxStatus]
    bad = [value for value in values if value not in known]
    if bad:
        raise typer.BadParameter(f"{', '.join(bad)} is not a status; use one of {', '.join(known)}",
                                 param_hint="--status")
    return tuple(OutboxStatus(value) for value in values)


def _kind(value: str | None) -> str | None:
    from core.outbox import Kind

    known = [kind.value for kind in Kind]
    if value is not None and value not in known:
        raise typer.BadParameter(f"{value} is not a job kind; use one of {', '.join(known)}", param_hint="--kind")
    return value


@outbox_app.command("list")
def outbox_list(
    status: list[str] = typer.Option(["failed", "dead", "parked"], "--status", "-s",
                                     help="pending | done | failed | dead | parked (repeatable)"),
    row_id: list[int] = typer.Option([], "--id", metavar="ID", help="only this row (repeatable)"),
    tenant: Optional[str] = TENANT,
    kind: Optional[str] = KIND,
    since: Optional[str] = SINCE,
    limit: int = typer.Option(100, "--limit", "-n", min=1, help="show at most this many (oldest first)"),
) -> None:
    """List outbox rows: failed, dead and parked by default, with tenant, kind, age, attempts and error."""
    from core.store.db import Database
    from core.store.outbox_admin import RowFilter, human_age, list_rows

    statuses, kind = _statuses(status), _kind(kind)
    db = Database(Settings().database_url)
    now = db.clock()
    rows = RowFilter(statuses=statuses, tenant_id=tenant, kind=kind, ids=tuple(row_id),
                     since=parse_since(since, now=now))
    with db.transaction() as session:
        views, total = list_rows(session, rows, now=now, limit=limit)
    if views:
        typer.echo(f"{'id':>6}  {'tenant':<20} {'kind':<22} {'status':<8} {'age':>5} {'tries':>5}  error")
    for view in views:
        error = " ".join(view.error.split())
        typer.echo(f"{view.id:>6}  {view.tenant_id:<20} {view.kind:<22} {view.status:<8} "
                   f"{human_age(view.age):>5} {view.attempts:>5}  {error[:160]}")
    shown = f" (showing the oldest {len(views)})" if total > len(views) else ""
    typer.echo(f"{total} {'/'.join(status)} row(s){shown}")


@outbox_app.command("replay")
def outbox_replay(
    row_id: list[int] = typer.Option([], "--id", metavar="ID", help="replay this row (repeatable)"),
    status: list[str] = typer.Option(["dead"], "--status", "-s", help="failed | dead | parked (repeatable)"),
    tenant: Optional[str] = TENANT,
    kind: Optional[str] = KIND,
    since: Optional[str] = SINCE,
    every: bool = typer.Option(False, "--all", help="replay every matching row of every tenant"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print what would be replayed, change nothing"),
) -> None:
    """Put failed/dead/parked rows back to pending; the next relay pass (within seconds) enqueues them."""
    from core.store.db import Database
    from core.store.outbox_admin import REPLAYABLE, RowFilter, replay

    statuses, kind = _statuses(status), _kind(kind)
    if not set(statuses) <= REPLAYABLE:
        raise typer.BadParameter("only failed, dead or parked rows can be replayed", param_hint="--status")
    if not (row_id or tenant or every):
        raise typer.BadParameter("say which rows: --id N, --tenant T, or --all (try --dry-run first)")
    db = Database(Settings().database_url)
    rows = RowFilter(statuses=statuses, tenant_id=tenant, kind=kind, ids=tuple(row_id),
                     since=parse_since(since, now=db.clock()))
    with db.transaction() as session:
        ids = replay(session, rows, dry_run=dry_run)
    listed = ", ".join(map(str, ids[:20])) + (" ..." if len(ids) > 20 else "")
    verb = "would be set" if dry_run else "set"
    typer.echo(f"{len(ids)} row(s) {verb} back to pending{': ' + listed if ids else ''}")
