"""A backlog of CRM pushes coalesced into batch calls (HubSpot's batch endpoints: up to 100 inputs).

When a batchable job runs (a contact push, a transcript, a deal: sync/crm_batch_pushes.py) and other rows of
the same kind for the same tenant are due and waiting (an outage ended, an import, a busy day), the job claims
up to BATCH_LIMIT - 1 of them and pushes them all together, in a few batch calls instead of a few requests
each. Nothing waits to form a batch: a fresh lead with no backlog behind it runs alone at once, so batching
never delays it; a batch forms only from rows already waiting.

Each kind says who a row is about (the caller whose record lock it needs) and whether it fits a batch at all:
a row that does not (a transcript whose contact is not in the CRM yet, a record already mapped and only to be
updated) is not claimed and takes the single path, which does what a batch leaves out. Each companion row is
claimed like any job (sync/runner.py), so no other worker runs it meanwhile, and each caller's record lock is
taken (sync/locks.py). A companion whose lock is held, or that no longer fits once locked, is let go again and
queued for its own run. If the batch fails, every companion is let go and queued again, unharmed; the job's
own row fails or retries as usual. The job's own row, when it does not fit, runs alone after the batch.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from pydantic import ValidationError
from sqlalchemy import or_, select, update

from core.config import Tenant
from core.jobs import JobPayload, OutboxStatus, parse_payload
from core.outbox import Kind
from core.store.tables import OutboxRow
from sync.crm_batch_pushes import BATCHABLE, Batchable
from sync.locks import RecordBusy
from sync.runtime import Runtime

log = logging.getLogger(__name__)

BATCH_LIMIT = 100
# Waiting rows looked at for companions: rows that do not fit are passed over, so look past the first batch.
WINDOW = 5 * BATCH_LIMIT

Companions = list[tuple[int, JobPayload]]


def batchable(runtime: Runtime, tenant: Tenant, kind: Kind) -> Batchable | None:
    """The kind's batch push, when the kind has one and the tenant's CRM the batch calls it makes."""
    spec = BATCHABLE.get(kind)
    crm = runtime.crm(tenant)
    return spec if spec is not None and callable(getattr(crm, spec.capability, None)) else None


def claim_companions(runtime: Runtime, tenant: Tenant, kind: Kind, outbox_id: int) -> Companions:
    """Other due, unclaimed rows of the kind for the tenant that fit a batch, now claimed by this job (oldest first)."""
    from sync.runner import claim_lease

    spec = batchable(runtime, tenant, kind)
    if spec is None:
        return []
    now = runtime.now()
    free = (OutboxRow.tenant_id == tenant.id, OutboxRow.kind == kind.value,
            OutboxRow.status == OutboxStatus.pending, OutboxRow.id != outbox_id,
            or_(OutboxRow.claimed_until.is_(None), OutboxRow.claimed_until < now),
            or_(OutboxRow.not_before.is_(None), OutboxRow.not_before <= now))
    with runtime.db.transaction() as session:
        waiting = session.execute(select(OutboxRow.id, OutboxRow.payload).where(*free).order_by(OutboxRow.id)
                                  .limit(WINDOW)).all()
        jobs: Companions = []
        for row_id, payload in waiting:
            try:
                jobs.append((row_id, parse_payload(kind, payload)))
            except (ValidationError, KeyError, TypeError):
                continue  # a payload the single path will report on
        callers = spec.callers(session, tenant, [job for _, job in jobs]) if jobs else []
        fitting = [(row_id, job) for (row_id, job), caller in zip(jobs, callers) if caller is not None]
        fitting = fitting[:BATCH_LIMIT - 1]
        if not fitting:
            return []
        lease = now + claim_lease(runtime)  # TEXTBACK_CLAIM_SECONDS, as for the job's own row
        taken = set(session.scalars(update(OutboxRow).where(OutboxRow.id.in_([row_id for row_id, _ in fitting]),
                                                            *free[2:])
                                    .values(claimed_until=lease, attempts=OutboxRow.attempts + 1)
                                    .returning(OutboxRow.id)))
    return [(row_id, job) for row_id, job in fitting if row_id in taken]


def push_together(runtime: Runtime, tenant: Tenant, kind: Kind, job: JobPayload, companions: Companions, *,
                  alone: Callable[[], None]) -> None:
    """The job and its companions in one batch push; companions it did not push are let go, whatever happens (a
    lock held, the batch failing). The job itself, when it does not fit the batch, runs `alone` afterwards."""
    settled: set[int] = set()
    try:
        joined = _push_together(runtime, tenant, BATCHABLE[kind], job, companions, settled)
    finally:
        let_go(runtime, [row_id for row_id, _ in companions if row_id not in settled])
    if not joined:
        alone()


def _push_together(runtime: Runtime, tenant: Tenant, spec: Batchable, job: JobPayload, companions: Companions,
                   settled: set[int]) -> bool:
    rows: list[tuple[int | None, JobPayload]] = [(None, job), *companions]
    with contextlib.ExitStack() as held:
        with runtime.db.transaction() as session:
            callers = spec.callers(session, tenant, [each for _, each in rows])
        locked = []
        for (row_id, each), caller in zip(rows, callers):
            if caller is None:
                continue
            try:
                held.enter_context(runtime.locks.hold(f"crm:{tenant.id}:lead:{caller}"))
            except RecordBusy:
                continue  # another job writes about this caller (or this batch has one of theirs already)
            locked.append((row_id, each))
        with runtime.db.transaction() as session:  # another job may have written the record before we locked it
            still = spec.callers(session, tenant, [each for _, each in locked]) if locked else []
            fit = [(row_id, each) for (row_id, each), caller in zip(locked, still) if caller is not None]
        pushed = {row_id for row_id, _ in fit}
        unfit = [row_id for row_id, _ in companions if row_id not in pushed]
        let_go(runtime, unfit)
        settled.update(unfit)
        if fit:
            spec.push(runtime, tenant, [each for _, each in fit])
        finished = [row_id for row_id in pushed if row_id is not None]
        _done(runtime, finished)
        settled.update(finished)
    log.info("outbox: %d %s pushes for %s in one batch (%d let go)", len(fit), spec.capability, tenant.id,
             len(companions) - len(finished))
    return None in pushed


def let_go(runtime: Runtime, row_ids: list[int]) -> None:
    """Companions this batch did not push: unclaimed, as if never tried. Each one's own message, still in the
    queue, runs it; one whose message came while it was claimed here (and was turned away, which forgets the
    row's enqueued mark: sync/runner.py) is queued again. Queuing them all again (as before) left a message
    behind for every companion let go: 19,000 extra deliveries ahead of the last rows of a 9,000-job backlog."""
    if not row_ids:
        return
    with runtime.db.transaction() as session:
        released = session.execute(update(_ROWS).where(_ROWS.c.id.in_(row_ids))
                                   .values(claimed_until=None, attempts=_ROWS.c.attempts - 1)
                                   .returning(_ROWS.c.id, _ROWS.c.enqueued_at)).all()
    runtime.dispatch([row_id for row_id, enqueued_at in released if enqueued_at is None])


_ROWS = OutboxRow.__table__


def _done(runtime: Runtime, row_ids: list[int]) -> None:
    if not row_ids:
        return
    now = runtime.now()
    with runtime.db.transaction() as session:
        session.execute(update(OutboxRow).where(OutboxRow.id.in_(row_ids)).values(
            status=OutboxStatus.done, done_at=now, claimed_until=None, last_error=None))
