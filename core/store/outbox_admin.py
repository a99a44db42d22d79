"""What an operator sees of the outbox, and how a fixed failure is sent round again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from core.jobs import OutboxStatus
from core.store.tables import OutboxRow

TROUBLE = (OutboxStatus.failed, OutboxStatus.dead, OutboxStatus.parked)
REPLAYABLE = frozenset(TROUBLE)


@dataclass(frozen=True)
class RowFilter:
    statuses: tuple[OutboxStatus, ...] = TROUBLE
    tenant_id: str | None = None
    kind: str | None = None
    ids: tuple[int, ...] = ()
    since: datetime | None = None  # created at or after this instant

    def apply(self, query: Select) -> Select:
        query = query.where(OutboxRow.status.in_([s.value for s in self.statuses]))
        if self.tenant_id:
            query = query.where(OutboxRow.tenant_id == self.tenant_id)
        if self.kind:
            query = query.where(OutboxRow.kind == self.kind)
        if self.ids:
            query = query.where(OutboxRow.id.in_(self.ids))
        if self.since is not None:
            query = query.where(OutboxRow.created_at >= self.since)
        return query


@dataclass(frozen=True)
class RowView:
    id: int
    tenant_id: str
    kind: str
    status: str
    age: timedelta
    attempts: int
    error: str  # empty for rows that finished well: a done row never shows an earlier attempt's error


def list_rows(session: Session, rows: RowFilter, now: datetime, limit: int = 100) -> tuple[list[RowView], int]:
    """The matching rows, oldest first (at most `limit`), and how many match in all."""
    total = session.scalar(rows.apply(select(func.count()).select_from(OutboxRow))) or 0
    found = session.scalars(rows.apply(select(OutboxRow)).order_by(OutboxRow.id).limit(limit)).all()
    return [RowView(id=row.id, tenant_id=row.tenant_id, kind=row.kind, status=row.status,
                    age=max(now - row.created_at, timedelta(0)), attempts=row.attempts,
                    error="" if row.status == OutboxStatus.done else (row.last_error or ""))
            for row in found], total


def replay(session: Session, rows: RowFilter, *, dry_run: bool = False) -> list[int]:
    """Set the matching failed/dead/parked rows back to pending with a fresh retry budget; returns their ids."""
    if not set(rows.statuses) <= REPLAYABLE:
        raise ValueError("only failed, dead or parked rows can be replayed")
    ids = list(session.scalars(rows.apply(select(OutboxRow.id)).order_by(OutboxRow.id)))
    if ids and not dry_run:
        session.execute(update(OutboxRow).where(OutboxRow.id.in_(ids)).values(
            status=OutboxStatus.pending.value, attempts=0, enqueued_at=None, claimed_until=None, not_before=None))
    return ids


def human_age(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
