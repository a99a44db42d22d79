"""Send texts: claim → prepare (core.sending decides) → one provider call → record. See core/jobs.py."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from connectors.base import Ambiguous, ConnectorError, Rejected, SMSProvider
from core import sending
from core.config import Tenant
from core.jobs import Defer, FollowupJob, NotifyStaffJob, SendSMSJob, Skip
from core.models import OutboundSMS
from core.outbox import Deferred, Pending
from core.store.tables import Call
from sync import metrics
from sync.runtime import Runtime

# A first text with a line-type lookup takes two vendor calls, each its own step.
MAX_STEPS = 3


def send_sms(runtime: Runtime, tenant: Tenant, job: SendSMSJob, pending: Pending) -> None:
    provider = _provider(runtime, tenant)
    for _ in range(MAX_STEPS):
        with runtime.db.transaction() as session:
            decision = sending.prepare_send(session, tenant=tenant, job=job, now=runtime.now(),
                                            status_callback=f"{runtime.settings.public_url}/twilio/sms/status")
        match decision:
            case Skip():
                return
            case Defer(until=until, reason=reason):
                raise Deferred(until, reason)
            case sending.LookUpLineType(number=number):
                line_type = provider.line_type(number)
                with runtime.db.transaction() as session:
                    sending.record_line_type(session, job=job, line_type=line_type)
            case sending.LookUpSent(sms=sms, known_ids=known_ids):
                found = provider.find_sent(sms, known_ids=known_ids)
                if found is None:
                    with runtime.db.transaction() as session:
                        sending.record_not_sent(session, job=job)  # the provider never had it: send it now
                    continue
                _record_sent(runtime, tenant, job, found, pending, called_at=_called_at(runtime, job))
                return
            case sending.Send(sms=sms, called_at=called_at):
                _send(runtime, tenant, provider, job, sms, pending, called_at=called_at)
                return
    raise RuntimeError(f"message {job.message_id}: no decision after {MAX_STEPS} steps")


def _send(runtime: Runtime, tenant: Tenant, provider: SMSProvider, job: SendSMSJob, sms: OutboundSMS,
          pending: Pending, *, called_at: datetime | None) -> None:
    try:
        sent = provider.send(sms)
    except Ambiguous:
        raise  # stays `sending`: the retry asks the provider before it sends again
    except Rejected as exc:
        with runtime.db.transaction() as session:
            sending.record_refused(session, job=job, error_code=getattr(exc, "code", None), now=runtime.now(),
                                   pending=pending)
        raise
    except ConnectorError:
        with runtime.db.transaction() as session:
            sending.record_not_sent(session, job=job)
        raise
    _record_sent(runtime, tenant, job, sent, pending, called_at=called_at)


def _record_sent(runtime: Runtime, tenant: Tenant, job: SendSMSJob, sent, pending: Pending, *,
                 called_at: datetime | None) -> None:
    now = runtime.now()
    with runtime.db.transaction() as session:
        purpose = sending.record_sent(session, tenant=tenant, job=job, sent=sent, now=now, pending=pending)
        pending.complete_job(session, now)
    metrics.TEXTS_SENT.labels(tenant.id, purpose).inc()
    if purpose == "first" and called_at is not None:
        metrics.FIRST_TEXT_SECONDS.labels(tenant.id).observe(max((now - called_at).total_seconds(), 0.0))


def _called_at(runtime: Runtime, job: SendSMSJob) -> datetime | None:
    """When a first text's call came in (for the metric), on the rare path that did not read it already."""
    if job.call_id is None:
        return None
    with runtime.db.transaction() as session:
        return session.scalar(select(Call.created_at).where(Call.id == job.call_id))


def send_followup(runtime: Runtime, tenant: Tenant, job: FollowupJob, pending: Pending) -> None:
    """No vendor call of its own: it queues the follow-up text (a send_sms job) or decides not to."""
    with runtime.db.transaction() as session:
        sending.prepare_followup(session, tenant=tenant, job=job, now=runtime.now(), pending=pending)


def notify_staff(runtime: Runtime, tenant: Tenant, job: NotifyStaffJob, pending: Pending) -> None:
    """A one-line notice to a staff phone (not part of the caller's transcript). It has no message row to be
    `sending`, so it looks first: a notice names its conversation, so an identical one already there is this one."""
    provider, sms = _provider(runtime, tenant), OutboundSMS(to=job.to, from_=job.from_, body=job.body)
    if provider.find_sent(sms, known_ids=frozenset()) is None:
        provider.send(sms)
        metrics.TEXTS_SENT.labels(tenant.id, "notify_staff").inc()


def _provider(runtime: Runtime, tenant: Tenant) -> SMSProvider:
    provider = runtime.sms(tenant)
    if provider is None:
        raise Rejected(f"tenant {tenant.id} has no sms connector")
    return provider
