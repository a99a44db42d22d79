"""Send one queued SMS; STOP is checked again at send time, not only when the text was written."""

from __future__ import annotations

from connectors.base import Rejected
from core.inbound import OPTED_OUT_ERRORS
from core.models import OutboundSMS
from core.outbox import Pending
from core.store.repo import opt_out
from core.store.tables import Lead, Message
from core.config import Tenant
from sync.runtime import Runtime


def send_sms(runtime: Runtime, tenant: Tenant, payload: dict, pending: Pending) -> None:
    with runtime.db.transaction() as session:
        message = session.get(Message, payload["message_id"])
        if message is None or message.status != "queued":
            return
        lead = session.get(Lead, message.lead_id)
        if lead.opted_out_at is not None:
            message.status = "suppressed"
            return
        outbound = OutboundSMS(to=lead.phone, from_=message.business_number, body=message.body,
                               status_callback=f"{runtime.settings.public_url}/twilio/sms/status")
    provider = runtime.connector(tenant, "sms")
    if provider is None:
        raise Rejected(f"tenant {tenant.id} has no sms connector")
    try:
        sent = provider.send(outbound)
    except Rejected as exc:
        code = getattr(exc, "code", None)
        with runtime.db.transaction() as session:
            message = session.get(Message, payload["message_id"])
            message.status, message.error_code = "failed", code
            if code in OPTED_OUT_ERRORS:
                opt_out(session, session.get(Lead, message.lead_id), source=f"carrier_{code}", now=runtime.now())
                return
        raise
    with runtime.db.transaction() as session:
        message = session.get(Message, payload["message_id"])
        message.provider_sid, message.status, message.sent_at = sent.provider_id, sent.status, runtime.now()
