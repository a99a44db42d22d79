"""The generic job runner: claim → run the kind's step (prepare → one vendor call → record) → finish.

How each end is recorded on the outbox row (the contract is in core/jobs.py):

    done          the step finished; any earlier error is cleared
    pending       Deferred: waits for not_before; or a retryable failure, with last_error, claim released;
                  or OverQuota: the connection's request budget is spent, queued again for its slot
    parked        AuthExpired: the tenant's connection needs re-auth (reconnecting unparks it)
    failed        Rejected by the vendor, or a payload/tenant that cannot run
    dead          retries exhausted (sync/actors.py) or claimed too often by workers that died (sync/relay.py)

Any exception is retryable: a ConnectorError by its type, anything else as a bug that may pass
(a dead lock, a flaky dependency); both end dead with their last error when retries run out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from pydantic import ValidationError
from sqlalchemy import bindparam, or_, update

from connectors.base import AuthExpired, Rejected
from connectors.quota import OverQuota, job_requests
from core import appointments
from core.config import Tenant
from core.jobs import CALLER_WAITING, JobPayload, OutboxStatus, parse_payload
from core.outbox import Deferred, Kind, Pending
from core.store import connections
from core.store.tables import OutboxRow
from sync import crm_batch, metrics
from sync.locks import RecordBusy
from sync.runtime import Runtime

log = logging.getLogger(__name__)

Handler = Callable[[Runtime, Tenant, JobPayload, Pending], None]

# Longer than any single job runs; a row claimed longer ago is free again (its worker died).
CLAIM = timedelta(minutes=5)
# Claims one row may take before it is dead: retries plus the workers that died holding it.
MAX_ATTEMPTS = 15


def handlers() -> dict[Kind, tuple[str, Handler]]:
    """Each kind's step and the connector role it talks to (for flagging a connection that needs re-auth)."""
    from sync import crm_push, messaging, pulls, scheduling

    return {
        Kind.send_sms: ("sms", messaging.send_sms),
        Kind.followup: ("sms", messaging.send_followup),
        Kind.notify_staff: ("sms", messaging.notify_staff),
        Kind.crm_sync_lead: ("crm", crm_push.sync_lead),
        Kind.crm_log_conversation: ("crm", crm_push.log_conversation),
        Kind.crm_upsert_opportunity: ("crm", crm_push.upsert_opportunity),
        Kind.crm_record_booking: ("crm", crm_push.record_booking),
        Kind.offer_slots: ("calendar", scheduling.offer_slots),
        Kind.book_slot: ("calendar", scheduling.book_slot),
        Kind.reschedule_booking: ("calendar", scheduling.reschedule_booking),
        Kind.cancel_booking: ("calendar", scheduling.cancel_booking),
        Kind.calendar_pull: ("calendar", pulls.pull_calendar),
        Kind.calendar_event_changed: ("calendar", pulls.event_changed),
        Kind.crm_contact_changed: ("crm", pulls.contact_changed),
        Kind.crm_write_opt_out: ("crm", crm_push.write_opt_out),
        Kind.crm_pull: ("crm", pulls.pull_crm),
        Kind.watch_calendars: ("calendar", pulls.watch_calendars),
        Kind.watch_crm: ("crm", pulls.watch_crm),
    }


def run_job(runtime: Runtime, outbox_id: int) -> None:
    """Run the row once. Raises what deserves a retry; records every other end on the row."""
    claimed = _claim(runtime, outbox_id)
    if claimed is None:
        return  # done already, not due, or another worker is on it: a duplicate delivery is a no-op
    kind, tenant_id, raw = claimed
    tenant = runtime.tenants.get(tenant_id)
    if tenant is None:
        _finish(runtime, outbox_id, OutboxStatus.failed, f"tenant {tenant_id!r} is no longer configured")
        return
    try:
        job = parse_payload(kind, raw)
    except (ValidationError, KeyError) as exc:
        _finish(runtime, outbox_id, OutboxStatus.failed, f"payload does not fit {kind}: {exc}")
        return
    role, handler = handlers()[kind]
    pending = Pending(job_row=outbox_id)
    batch = crm_batch.claim_companions(runtime, tenant, kind, outbox_id, job)  # a backlog of the kind, if batchable
    backlog = False
    try:
        with job_requests():  # once the step has sent a request, the next waits for its slot (connectors/quota.py)
            if batch is not None:
                crm_batch.push_together(runtime, tenant, kind, job, batch,
                                        alone=lambda: handler(runtime, tenant, job, pending))
            else:
                handler(runtime, tenant, job, pending)
    except Deferred as exc:
        _defer(runtime, outbox_id, exc)
    except AuthExpired as exc:
        metrics.connector_failed(tenant=tenant_id, role=role, exc=exc)
        _finish(runtime, outbox_id, OutboxStatus.parked, f"needs re-auth: {exc}")
        with runtime.db.transaction() as session:
            connections.mark_needs_reauth(session, tenant_id=tenant_id, role=role, reason=str(exc), now=runtime.now())
        _tell_waiting_caller(runtime, tenant, kind, job, f"the {role} connection needs re-authorising ({exc})")
    except (OverQuota, RecordBusy) as exc:
        _wait_for_slot(runtime, outbox_id, note=str(exc) if isinstance(exc, RecordBusy) else None)
        runtime.dispatch(pending)
        raise
    except Rejected as exc:
        metrics.connector_failed(tenant=tenant_id, role=role, exc=exc)
        _finish(runtime, outbox_id, OutboxStatus.failed, f"rejected: {exc}")
        _tell_waiting_caller(runtime, tenant, kind, job, f"the {role} refused the request ({exc})")
    except Exception as exc:
        metrics.connector_failed(tenant=tenant_id, role=role, exc=exc)
        metrics.JOB_RETRIES.labels(kind.value, type(exc).__name__).inc()
        _release(runtime, outbox_id, _describe(exc))
        runtime.dispatch(pending)  # what the step committed before it failed still goes out
        raise
    else:
        if not pending.completed:  # the step did not mark it done in its own last transaction
            _finish(runtime, outbox_id, OutboxStatus.done, None)
        backlog = batch is not None and crm_batch.full(batch)
    runtime.dispatch(pending)
    if backlog:  # a full batch: more are likely waiting, and their own messages may be far back in the queue
        crm_batch.push_backlog(runtime, tenant, kind, outbox_id)


def mark_dead(runtime: Runtime, outbox_id: int, reason: str) -> None:
    """Retries are exhausted: the row stays visible for replay, with the last error; a waiting caller is told."""
    with runtime.db.transaction() as session:
        row = session.get(OutboxRow, outbox_id)
        if row is None or row.status != OutboxStatus.pending:
            return
        kind, tenant_id, raw, last = Kind(row.kind), row.tenant_id, dict(row.payload), row.last_error
    error = f"{reason}; last error: {last}" if last else reason
    _finish(runtime, outbox_id, OutboxStatus.dead, error)
    metrics.DEAD_ROWS.labels(kind.value).inc()
    tenant = runtime.tenants.get(tenant_id)
    if tenant is not None:
        _tell_waiting_caller(runtime, tenant, kind, parse_payload(kind, raw), error)


def claim_lease(runtime: Runtime) -> timedelta:
    """CLAIM, or TEXTBACK_CLAIM_SECONDS when the runtime's settings name it."""
    seconds = getattr(runtime.settings, "claim_seconds", None)
    return timedelta(seconds=seconds) if seconds else CLAIM


def _claim(runtime: Runtime, outbox_id: int) -> tuple[Kind, str, dict] | None:
    """Claim the row and read it in one statement (UPDATE ... RETURNING), or None when it is not free."""
    now = runtime.now()
    this_row = _OUTBOX.id == outbox_id
    # Each statement on its own (no BEGIN ... COMMIT): every delivery starts here, and under a backlog most of them
    # find their row pushed or taken by a batch, so its round trips are most of what a delivery costs. Such a
    # delivery changes nothing (no write, no commit to flush): a batch that lets a row go queues it again itself.
    with runtime.db.autocommit() as connection:
        claimed = connection.execute(_CLAIM, {"outbox_id": outbox_id, "now": now,
                                              "until": now + claim_lease(runtime)}).one_or_none()
        if claimed is None:
            return None  # done, or claimed by another job
        kind, tenant_id, payload, not_before = claimed
        if not_before is not None and not_before > now:
            # Delivered early (a delayed message, a replay): leave it for the relay to send when due.
            connection.execute(update(OutboxRow.__table__).where(this_row).values(
                claimed_until=None, enqueued_at=None, attempts=_OUTBOX.attempts - 1))
            return None
        try:
            return Kind(kind), tenant_id, dict(payload)
        except ValueError:
            connection.execute(update(OutboxRow.__table__).where(this_row).values(
                status=OutboxStatus.failed, claimed_until=None, last_error=f"unknown job kind {kind!r}"))
            return None


_OUTBOX = OutboxRow.__table__.c
_CLAIM = (  # Core, not an ORM UPDATE: the ORM's bulk-update machinery cost more CPU than the statement
    update(OutboxRow.__table__)
    .where(_OUTBOX.id == bindparam("outbox_id"), _OUTBOX.status == OutboxStatus.pending,
           or_(_OUTBOX.claimed_until.is_(None), _OUTBOX.claimed_until < bindparam("now")))
    .values(claimed_until=bindparam("until"), attempts=_OUTBOX.attempts + 1)
    .returning(_OUTBOX.kind, _OUTBOX.tenant_id, _OUTBOX.payload, _OUTBOX.not_before)
)  # built once: every job starts with it

def _tell_waiting_caller(runtime: Runtime, tenant: Tenant, kind: Kind, job: JobPayload, reason: str) -> None:
    """A step the caller waits on failed for good: the caller gets the handoff text, staff get the reason."""
    conversation_id = getattr(job, "conversation_id", None)
    if kind not in CALLER_WAITING or conversation_id is None:
        return
    pending = Pending()
    with runtime.db.transaction() as session:
        appointments.could_not_book(session, tenant=tenant, conversation_id=conversation_id, reason=reason,
                                    now=runtime.now(), pending=pending)
    runtime.dispatch(pending)


def _defer(runtime: Runtime, outbox_id: int, deferred: Deferred) -> None:
    with runtime.db.transaction() as session:
        row = session.get(OutboxRow, outbox_id)
        row.not_before, row.claimed_until, row.enqueued_at = deferred.until, None, None
        row.attempts = max(row.attempts - 1, 0)  # waiting for the window is not a failed attempt
        row.last_error = None
    runtime.dispatch([outbox_id])


def _wait_for_slot(runtime: Runtime, outbox_id: int, *, note: str | None = None) -> None:
    """The connection's budget is spent for now, or another job holds the record's lock: the job is queued
    again for later (sync/actors.py), and waiting is neither a failed attempt nor an error."""
    with runtime.db.transaction() as session:
        row = session.get(OutboxRow, outbox_id)
        row.claimed_until, row.enqueued_at = None, runtime.now()
        row.attempts = max(row.attempts - 1, 0)
        if note:
            row.last_error = note  # what it waits for, for whoever looks at the row meanwhile


def _finish(runtime: Runtime, outbox_id: int, status: OutboxStatus, error: str | None) -> None:
    with runtime.db.transaction() as session:
        row = session.get(OutboxRow, outbox_id)
        row.status, row.done_at, row.claimed_until, row.last_error = status, runtime.now(), None, error
        kind = row.kind
    if error:
        log.warning("outbox %s (%s) %s: %s", outbox_id, kind, status, error)


def _release(runtime: Runtime, outbox_id: int, error: str) -> None:
    """Release the claim so the retry (or the relay) can run it; the retry is in the queue now."""
    with runtime.db.transaction() as session:
        row = session.get(OutboxRow, outbox_id)
        row.last_error, row.claimed_until, row.enqueued_at = error[:2000], None, runtime.now()


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"
