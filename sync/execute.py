"""Run one outbox row: load it, call its handler, record the result.

Handlers are idempotent (a row may run again after a crash between the
handler's commit and the row being marked done). Failures are classified by
the connector error tree:

    RateLimited   -> row stays pending, the actor retries after retry_after
    Transient     -> row stays pending, the actor retries with backoff
    AuthExpired   -> row parked (needs re-auth), no retries burned
    Rejected      -> row failed, no retry
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import or_, update

from connectors.base import AuthExpired, ConnectorError, Rejected
from core.config import Tenant
from core.outbox import Deferred, Kind, Pending
from core.store import connections
from core.store.tables import OutboxRow
from sync.runtime import Runtime

log = logging.getLogger(__name__)

Handler = Callable[[Runtime, Tenant, dict, Pending], None]

# Longer than any single handler runs; a row claimed longer ago is free again (its worker died).
CLAIM = timedelta(minutes=5)


class OutboxGone(Exception):
    """The row's tenant was removed from the config; nothing can run it."""


def handlers() -> dict[str, Handler]:
    from sync import crm_push, messaging, scheduling

    return {
        Kind.send_sms.value: messaging.send_sms,
        Kind.followup.value: messaging.send_followup,
        Kind.notify_staff.value: messaging.notify_staff,
        Kind.crm_sync_lead.value: crm_push.sync_lead,
        Kind.crm_log_conversation.value: crm_push.log_conversation,
        Kind.crm_upsert_opportunity.value: crm_push.upsert_opportunity,
        Kind.crm_record_booking.value: crm_push.record_booking,
        Kind.offer_slots.value: scheduling.offer_slots,
        Kind.book_slot.value: scheduling.book_slot,
        Kind.reschedule_booking.value: scheduling.reschedule_booking,
        Kind.cancel_booking.value: scheduling.cancel_booking,
    }


def execute(runtime: Runtime, outbox_id: int) -> None:
    """Execute the row once. Raises ConnectorError subclasses that deserve a retry."""
    now = runtime.now()
    with runtime.db.transaction() as session:
        claimed = session.execute(
            update(OutboxRow)
            .where(OutboxRow.id == outbox_id, OutboxRow.status == "pending",
                   or_(OutboxRow.claimed_until.is_(None), OutboxRow.claimed_until < now))
            .values(claimed_until=now + CLAIM, attempts=OutboxRow.attempts + 1)
        ).rowcount
        if not claimed:
            return  # done already, or another worker is on it: a duplicate delivery is a no-op
        row = session.get(OutboxRow, outbox_id)
        if row.not_before is not None and row.not_before > now:
            # Delivered early (a delayed message, a replay): leave it for the relay to send when due.
            row.claimed_until, row.enqueued_at, row.attempts = None, None, row.attempts - 1
            return
        kind, tenant_id, payload = row.kind, row.tenant_id, dict(row.payload)
    tenant = runtime.tenants.get(tenant_id)
    if tenant is None:
        _finish(runtime, outbox_id, "failed", f"tenant {tenant_id!r} is no longer configured")
        return
    pending = Pending()
    try:
        handlers()[kind](runtime, tenant, payload, pending)
    except Deferred as exc:
        _defer(runtime, outbox_id, exc)
        runtime.dispatch(pending.ids)
        return
    except AuthExpired as exc:
        _finish(runtime, outbox_id, "parked", f"needs re-auth: {exc}")
        _flag_connection(runtime, tenant_id, kind, exc)
        runtime.dispatch(pending.ids)
        return
    except Rejected as exc:
        _finish(runtime, outbox_id, "failed", f"rejected: {exc}")
        runtime.dispatch(pending.ids)  # what the handler committed before the refusal (e.g. telling the caller)
        return
    except ConnectorError as exc:
        _record_error(runtime, outbox_id, f"{type(exc).__name__}: {exc}")
        raise
    _finish(runtime, outbox_id, "done", None)
    runtime.dispatch(pending.ids)


# The connector role each handler module talks to; a job of another module flags no connection.
_ROLE_OF_MODULE = {"sync.messaging": "sms", "sync.crm_push": "crm", "sync.scheduling": "calendar"}


def _flag_connection(runtime: Runtime, tenant_id: str, kind: str, exc: AuthExpired) -> None:
    """Mark the tenant's OAuth connection for the job's role needs_reauth (a no-op for config-only credentials)."""
    role = _ROLE_OF_MODULE.get(handlers()[kind].__module__)
    if role is not None:
        with runtime.db.transaction() as session:
            connections.mark_needs_reauth(session, tenant_id=tenant_id, role=role, reason=str(exc), now=runtime.now())


def _defer(runtime: Runtime, outbox_id: int, deferred: Deferred) -> None:
    with runtime.db.transaction() as session:
        row = session.get(OutboxRow, outbox_id)
        row.not_before, row.claimed_until, row.enqueued_at = deferred.until, None, None
        row.last_error = f"deferred: {deferred.reason}"
    runtime.dispatch([outbox_id])


def mark_dead(runtime: Runtime, outbox_id: int, reason: str) -> None:
    """Retries are exhausted: keep the row visible for replay."""
    _finish(runtime, outbox_id, "dead", reason)


def _finish(runtime: Runtime, outbox_id: int, status: str, error: str | None) -> None:
    with runtime.db.transaction() as session:
        row = session.get(OutboxRow, outbox_id)
        row.status = status
        row.done_at = runtime.now()
        row.claimed_until = None
        if error:
            row.last_error = error
            log.warning("outbox %s (%s) %s: %s", outbox_id, row.kind, status, error)


def _record_error(runtime: Runtime, outbox_id: int, error: str) -> None:
    """Release the claim so the retry (or the relay) can run it; the retry is in the queue now."""
    with runtime.db.transaction() as session:
        row = session.get(OutboxRow, outbox_id)
        row.last_error, row.claimed_until, row.enqueued_at = error, None, runtime.now()
