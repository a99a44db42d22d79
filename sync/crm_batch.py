"""A backlog of contact pushes coalesced into batch calls (HubSpot's batch endpoints: up to 100 inputs).

When a crm_sync_lead job runs and other rows of the same kind for the same tenant are due and
waiting (an outage ended, an import, a busy day), the job claims up to BATCH_LIMIT - 1 of them and
pushes all their callers in one `upsert_contacts` call instead of one search and one write each.
Nothing waits to form a batch: a fresh lead with no backlog behind it runs alone at once, so
batching never delays it; a batch forms only from rows already waiting.

Each companion row is claimed like any job (sync/runner.py), so no other worker runs it meanwhile,
and each caller's record lock is taken (sync/locks.py). A companion whose lock is held, or whose
caller is already in the CRM (a refresh, which the single path does), is let go again and queued
for its own run. If the batch call fails, every companion is let go and queued again, unharmed;
the job's own row fails or retries as usual.
"""

from __future__ import annotations

import contextlib
import logging

from sqlalchemy import or_, select, update

from core.config import Tenant
from core.jobs import LeadJob, OutboxStatus
from core.models import ContactRecord
from core.outbox import Kind
from core.store.repo import external_id
from core.store.tables import Lead, OutboxRow
from sync.locks import RecordBusy
from sync.runtime import Runtime

log = logging.getLogger(__name__)

BATCH_LIMIT = 100


def batches(runtime: Runtime, tenant: Tenant) -> bool:
    crm = runtime.crm(tenant)
    return crm is not None and callable(getattr(crm, "upsert_contacts", None))


def claim_companions(runtime: Runtime, tenant: Tenant, outbox_id: int) -> list[tuple[int, LeadJob]]:
    """Other due, unclaimed contact pushes of the tenant, now claimed by this job (oldest first)."""
    from sync.runner import CLAIM

    now = runtime.now()
    free = (OutboxRow.tenant_id == tenant.id, OutboxRow.kind == Kind.crm_sync_lead.value,
            OutboxRow.status == OutboxStatus.pending, OutboxRow.id != outbox_id,
            or_(OutboxRow.claimed_until.is_(None), OutboxRow.claimed_until < now),
            or_(OutboxRow.not_before.is_(None), OutboxRow.not_before <= now))
    claimed = []
    with runtime.db.transaction() as session:
        waiting = session.execute(select(OutboxRow.id, OutboxRow.payload).where(*free).order_by(OutboxRow.id)
                                  .limit(BATCH_LIMIT - 1)).all()
        for row_id, payload in waiting:
            taken = session.execute(update(OutboxRow).where(OutboxRow.id == row_id, *free[2:])
                                    .values(claimed_until=now + CLAIM, attempts=OutboxRow.attempts + 1)).rowcount
            if taken and isinstance(payload, dict) and isinstance(payload.get("lead_id"), int):
                claimed.append((row_id, LeadJob(lead_id=payload["lead_id"])))
            elif taken:
                let_go(runtime, [row_id])  # a payload the single path will report on
    return claimed


def sync_leads(runtime: Runtime, tenant: Tenant, job: LeadJob, companions: list[tuple[int, LeadJob]]) -> None:
    """The job's caller and its companions' in one batch; companions it did not push are let go, whatever
    happens (the job's own lock busy, the batch call failing)."""
    settled: set[int] = set()
    try:
        _sync_leads(runtime, tenant, job, companions, settled)
    finally:
        let_go(runtime, [row_id for row_id, _ in companions if row_id not in settled])


def _sync_leads(runtime: Runtime, tenant: Tenant, job: LeadJob, companions: list[tuple[int, LeadJob]],
                settled: set[int]) -> None:
    from sync.crm_push import _remember, ensure_contact

    kind = tenant.connectors["crm"].type
    with contextlib.ExitStack() as held:
        held.enter_context(runtime.locks.hold(f"crm:{tenant.id}:lead:{job.lead_id}"))
        taken, dropped = [], []
        for row_id, companion in companions:
            try:
                held.enter_context(runtime.locks.hold(f"crm:{tenant.id}:lead:{companion.lead_id}"))
            except RecordBusy:
                dropped.append(row_id)
            else:
                taken.append((row_id, companion))
        contacts, rows, single = [], [], False
        with runtime.db.transaction() as session:
            for row_id, lead_job in [(None, job), *taken]:
                lead = session.get(Lead, lead_job.lead_id)
                mapped = lead is not None and external_id(session, tenant_id=tenant.id, connector=kind,
                                                          local_kind="lead", local_id=lead.id) is not None
                if lead is None or mapped:
                    if row_id is None:
                        single = True  # the job's own caller takes the single path (a refresh, or a gone lead)
                    else:
                        dropped.append(row_id)
                    continue
                contacts.append((lead.id, ContactRecord(phone=lead.phone, first_name=lead.first_name,
                                                        last_name=lead.last_name)))
                rows.append(row_id)
        let_go(runtime, dropped)
        settled.update(dropped)
        ids = runtime.crm(tenant).upsert_contacts([contact for _, contact in contacts]) if contacts else []
        for (lead_id, _), contact_id in zip(contacts, ids):
            _remember(runtime, tenant, "lead", lead_id, contact_id)
        finished = [row_id for row_id in rows if row_id is not None]
        _done(runtime, finished)
        settled.update(finished)
        if single:
            ensure_contact(runtime, tenant, job.lead_id, refresh=True)
    log.info("outbox: %d contact pushes for %s in one batch (%d let go)", len(contacts), tenant.id, len(dropped))


def let_go(runtime: Runtime, row_ids: list[int]) -> None:
    """Companions this batch did not push: unclaimed, as if never tried, and queued for their own run."""
    if not row_ids:
        return
    with runtime.db.transaction() as session:
        session.execute(update(OutboxRow).where(OutboxRow.id.in_(row_ids))
                        .values(claimed_until=None, attempts=OutboxRow.attempts - 1, enqueued_at=None))
    runtime.dispatch(row_ids)


def _done(runtime: Runtime, row_ids: list[int]) -> None:
    if not row_ids:
        return
    now = runtime.now()
    with runtime.db.transaction() as session:
        session.execute(update(OutboxRow).where(OutboxRow.id.in_(row_ids)).values(
            status=OutboxStatus.done, done_at=now, claimed_until=None, last_error=None))
