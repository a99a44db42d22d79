"""A backlog of CRM pushes coalesced into batch calls (HubSpot's batch endpoints: up to 100 inputs).

When a batchable job runs (a contact push, a transcript, a deal: sync/crm_batch_pushes.py) and other rows of
the same kind for the same tenant are due and waiting (an outage ended, an import, a busy day), the job claims
up to BATCH_LIMIT - 1 of them and pushes them all together, in a few batch calls instead of a few requests
each. Nothing waits to form a batch: a fresh lead with no backlog behind it runs alone at once, so batching
never delays it; a batch forms only from rows already waiting.

Each kind says who a row is about (the caller whose record lock it needs) and whether it fits a batch at all:
a row that does not (a transcript whose contact is not in the CRM yet, a record already mapped and only to be
updated) is not claimed and takes the single path, which does what a batch leaves out. The callers' record locks
are taken first (sync/locks.py, all in one call), and only rows whose lock the job got are claimed, like any job
(sync/runner.py), so no other worker runs them meanwhile. A companion that no longer fits once locked is let go
again and runs from its own message. If the batch fails, every companion is let go, unharmed; the job's own row
fails or retries as usual. The job's own row, when it does not fit or its lock is held, runs alone after the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy import or_, select, update
from sqlalchemy.exc import DataError

from connectors.base import RateLimited
from connectors.quota import job_requests
from core.config import Tenant
from core.jobs import JobPayload, OutboxStatus, parse_payload
from core.outbox import Kind
from core.store.tables import OutboxRow
from sync.crm_batch_pushes import BATCHABLE, Batchable
from sync.locks import RecordBusy
from sync.runtime import Runtime

log = logging.getLogger(__name__)

BATCH_LIMIT = 100
ROUNDS = 10  # batches one job pushes in a row while a backlog lasts (sync/runner.py, push_backlog)
# Waiting rows looked at for companions: rows that do not fit are passed over, so look past the first batch.
WINDOW = 5 * BATCH_LIMIT

Companions = list[tuple[int, JobPayload]]


def batchable(runtime: Runtime, tenant: Tenant, kind: Kind) -> Batchable | None:
    """The kind's batch push, when the kind has one and the tenant's CRM the batch calls it makes."""
    spec = BATCHABLE.get(kind)
    crm = runtime.crm(tenant)
    return spec if spec is not None and callable(getattr(crm, spec.capability, None)) else None


@dataclass
class Batch:
    """A job's batch: its companions, claimed; the job's own row with them if it fits (`joined`); and the record
    locks of all of them, held under `token` until push_together frees them."""

    companions: Companions
    joined: bool
    locks: list[str]
    token: str


def claim_companions(runtime: Runtime, tenant: Tenant, kind: Kind, outbox_id: int,
                     job: JobPayload | None) -> Batch | None:
    """Other due, unclaimed rows of the kind for the tenant that fit a batch and whose callers' locks are free, now
    locked and claimed by this job (oldest first); None when there are none.

    The locks come before the claim: a row whose caller another job is writing about (a transcript batch and a
    deal batch for the same new callers, say) is never claimed, rather than claimed and let go again and again
    (bench/crm_push.py counted 29,000 companions let go for 6,000 rows when the locks came after)."""
    from sync.runner import claim_lease

    spec = batchable(runtime, tenant, kind)
    if spec is None:
        return None
    now = runtime.now()
    free = (OutboxRow.tenant_id == tenant.id, OutboxRow.kind == kind.value,
            OutboxRow.status == OutboxStatus.pending, OutboxRow.id != outbox_id,
            or_(OutboxRow.claimed_until.is_(None), OutboxRow.claimed_until < now),
            or_(OutboxRow.not_before.is_(None), OutboxRow.not_before <= now))
    window = select(OutboxRow.id).where(*free).order_by(OutboxRow.id).limit(WINDOW).scalar_subquery()
    try:
        with runtime.db.transaction() as session:
            waiting = session.execute(spec.fitting(tenant).where(OutboxRow.id.in_(window)).order_by(OutboxRow.id)
                                      .limit(2 * BATCH_LIMIT)).all()  # room for rows whose lock is held
            if not waiting:
                return None
            [own] = spec.callers(session, tenant, [job]) if job is not None else [None]
    except DataError as exc:  # a payload whose id is no number (PostgreSQL refuses the cast): no batch for now;
        # the row fails on its own path ("payload does not fit"), and batches form again once it has
        log.warning("outbox: no %s batch for %s: a waiting row's payload does not fit: %s", kind.value, tenant.id,
                    str(exc).splitlines()[0])
        return None
    fitting = []
    for row_id, payload, caller in waiting:
        try:
            fitting.append((row_id, parse_payload(kind, payload), _lock(tenant, caller)))
        except (ValidationError, KeyError, TypeError):
            continue  # a payload the single path will report on
    if not fitting:
        return None
    wanted = ([_lock(tenant, own)] if own is not None else []) + [key for _, _, key in fitting]
    token, taken = runtime.locks.take(wanted)
    held = [key for key, got in zip(wanted, taken) if got]  # a key named twice (one caller's two rows) is taken once
    joined = own is not None and taken[0]
    lockable = [(row_id, each, key) for (row_id, each, key), got in zip(fitting, taken[len(wanted) - len(fitting):])
                if got][:BATCH_LIMIT - 1]
    try:
        with runtime.db.transaction() as session:
            lease = now + claim_lease(runtime)  # TEXTBACK_CLAIM_SECONDS, as for the job's own row
            claimed = set(session.scalars(update(OutboxRow).where(
                OutboxRow.id.in_([row_id for row_id, _, _ in lockable]), *free[2:])
                .values(claimed_until=lease, attempts=OutboxRow.attempts + 1).returning(OutboxRow.id))) \
                if lockable else set()
    except BaseException:
        runtime.locks.free(held, token)
        raise
    companions = [(row_id, each) for row_id, each, _ in lockable if row_id in claimed]
    keep = {key for row_id, _, key in lockable if row_id in claimed} | ({wanted[0]} if joined else set())
    if not companions:
        keep = set()
    runtime.locks.free([key for key in held if key not in keep], token)
    return Batch(companions, joined, sorted(keep), token) if companions else None


def full(batch: Batch) -> bool:
    return len(batch.companions) >= BATCH_LIMIT - 1


def push_backlog(runtime: Runtime, tenant: Tenant, kind: Kind, outbox_id: int) -> None:
    """After a full batch, more batches of the kind while the backlog lasts (up to ROUNDS in all), each of rows
    that are waiting and fit. Under a backlog most deliveries find their row already pushed by a batch, so the
    next batch would otherwise wait for a delivery that finds one still waiting; bench.crm_push saw HubSpot hear
    nothing for seconds at a time while the workers went through such deliveries with thousands of rows pending.
    A round that fails lets its rows go unharmed (they run from their own messages) and ends the run of rounds."""
    for _ in range(ROUNDS - 1):
        try:
            batch = claim_companions(runtime, tenant, kind, outbox_id, None)
            if batch is None:
                return
            with job_requests():
                push_together(runtime, tenant, kind, None, batch, alone=lambda: None)
        except Exception as exc:  # noqa: BLE001 (the rows are let go; the job that ran this is done already)
            level = logging.INFO if isinstance(exc, (RateLimited, RecordBusy)) else logging.WARNING
            log.log(level, "outbox: a backlog batch of %s for %s stopped: %s: %s", kind.value, tenant.id,
                    type(exc).__name__, exc)
            return
        if not full(batch):
            return


def push_together(runtime: Runtime, tenant: Tenant, kind: Kind, job: JobPayload | None, batch: Batch, *,
                  alone: Callable[[], None]) -> None:
    """The batch's rows in one batch push; companions it did not push are let go, and its locks freed, whatever
    happens (the batch failing). The job itself, when it is not in the batch, runs `alone` afterwards."""
    settled: set[int] = set()
    try:
        joined = _push_together(runtime, tenant, BATCHABLE[kind], job, batch, settled)
    finally:
        try:
            let_go(runtime, [row_id for row_id, _ in batch.companions if row_id not in settled])
        finally:
            runtime.locks.free(batch.locks, batch.token)
    if not joined:
        alone()


def _push_together(runtime: Runtime, tenant: Tenant, spec: Batchable, job: JobPayload | None, batch: Batch,
                   settled: set[int]) -> bool:
    rows: list[tuple[int | None, JobPayload]] = ([(None, job)] if batch.joined else []) + batch.companions
    with runtime.db.transaction() as session:  # another job may have written a record before we locked it
        still = spec.callers(session, tenant, [each for _, each in rows])
    fit = [(row_id, each) for (row_id, each), caller in zip(rows, still) if caller is not None]
    pushed = {row_id for row_id, _ in fit}
    unfit = [row_id for row_id, _ in batch.companions if row_id not in pushed]
    let_go(runtime, unfit)
    settled.update(unfit)
    if fit:
        spec.push(runtime, tenant, [each for _, each in fit])
    finished = [row_id for row_id in pushed if row_id is not None]
    _done(runtime, finished)
    settled.update(finished)
    log.info("outbox: %d %s pushes for %s in one batch (%d let go)", len(fit), spec.capability, tenant.id,
             len(batch.companions) - len(finished))
    return None in pushed


def _lock(tenant: Tenant, caller: int) -> str:
    return f"crm:{tenant.id}:lead:{caller}"  # the single path's lock (sync/crm_push.py _writing)


def let_go(runtime: Runtime, row_ids: list[int]) -> None:
    """Companions this batch did not push: unclaimed, as if never tried, and queued again. Their own messages may
    be in the queue still, or may have come while they were claimed here and found nothing to do: only a message
    sent now is sure to come after the release. The one left over is a no-op at its claim.

    (Queuing again only the rows whose message had come meanwhile, told by a mark the delivery wrote, lost rows:
    the dispatcher notes "enqueued" after the message is sent, and a note landing after the delivery's mark hid
    it, so the row waited for the relay's 15-minute pass; bench.crm_push stranded 9,300 rows of 15,000 so.)"""
    if not row_ids:
        return
    with runtime.db.transaction() as session:
        released = session.scalars(update(_ROWS).where(_ROWS.c.id.in_(row_ids))
                                   .values(claimed_until=None, attempts=_ROWS.c.attempts - 1)
                                   .returning(_ROWS.c.id)).all()
    runtime.dispatch(sorted(released))


_ROWS = OutboxRow.__table__


def _done(runtime: Runtime, row_ids: list[int]) -> None:
    if not row_ids:
        return
    now = runtime.now()
    with runtime.db.transaction() as session:
        session.execute(update(OutboxRow).where(OutboxRow.id.in_(row_ids)).values(
            status=OutboxStatus.done, done_at=now, claimed_until=None, last_error=None))
