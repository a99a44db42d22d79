"""Find the tenant a Twilio request is for and verify its X-Twilio-Signature.

The signature covers TEXTBACK_PUBLIC_URL + path + query (what Twilio was told to
call) and the form parameters, keyed with the tenant's auth token.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from fastapi import HTTPException, Request
from twilio.request_validator import RequestValidator

from core.config import Tenant
from core.storable import storable
from core.store.tables import Call, Message
from sync.runtime import Runtime


_CALLS, _MESSAGES = Call.__table__.c, Message.__table__.c
FIELD_LENGTHS = {"From": _CALLS.from_number.type.length, "To": _CALLS.to_number.type.length,
                 "DialCallStatus": _CALLS.dial_status.type.length, "AnsweredBy": _CALLS.answered_by.type.length,
                 "MessageStatus": _MESSAGES.status.type.length}


@dataclass(frozen=True)
class VerifiedRequest:
    tenant: Tenant
    form: dict[str, str]


async def verified_twilio_request(request: Request) -> VerifiedRequest:
    """A request about a call or text to one of our numbers (`To` names the business)."""
    return await _verified(request, ("To",))


async def verified_status_callback(request: Request) -> VerifiedRequest:
    """A delivery report for a text we sent: the business number is the sender (`From`); a messaging-service
    report may name only the recipient, so `To` is tried second. The signature proves which tenant's account
    sent it, and the route touches only that tenant's messages."""
    return await _verified(request, ("From", "To"))


async def _verified(request: Request, number_fields: tuple[str, ...]) -> VerifiedRequest:
    runtime: Runtime = request.app.state.runtime
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/x-www-form-urlencoded"):
        raise HTTPException(415, "Twilio webhooks are form-encoded (application/x-www-form-urlencoded)")
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    numbers = [form[field] for field in number_fields if form.get(field)]
    if not numbers:
        raise HTTPException(400, f"missing {' or '.join(number_fields)}: cannot tell which business this is for")
    tenant = next((t for t in map(runtime.tenants.by_number, numbers) if t is not None), None)
    if tenant is None:
        raise HTTPException(404, f"no tenant owns the number {numbers[0]}; add it to a tenant's phone_numbers")
    # For the request's log line (webhooks/app.py); set before the signature check so a forgery is attributed too.
    request.state.tenant_id, request.state.call_sid = tenant.id, form.get("CallSid") or form.get("MessageSid")
    sms = runtime.sms(tenant)
    if sms is None:
        raise HTTPException(404, f"tenant {tenant.id} has no sms connector configured")
    url = runtime.settings.public_url + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not _validator(sms.auth_token_for_signatures()).validate(url, form, signature):
        request.app.state.signature_failures.report(tenant_id=tenant.id, checked_url=url, seen_url=str(request.url),
                                      signed=bool(signature))
        raise HTTPException(403, "invalid or missing X-Twilio-Signature")
    return VerifiedRequest(tenant=tenant, form=_storable(form))


@functools.lru_cache(maxsize=1024)
def _validator(auth_token: str) -> RequestValidator:
    """One validator per auth token, not one per request (a rotated token simply gets its own)."""
    return RequestValidator(auth_token)


def _storable(form: dict[str, str]) -> dict[str, str]:
    """Signed as sent; kept as the database can: no NUL (core/storable.py), and the fields stored in short
    columns clipped to them (PostgreSQL refuses longer; a `From` of 40 characters is no phone number anyway,
    and is skipped as one)."""
    kept = {storable(k): storable(v) for k, v in form.items()}
    return {k: v[:FIELD_LENGTHS[k]] if k in FIELD_LENGTHS else v for k, v in kept.items()}


SID_LENGTH = 64  # Twilio's SIDs are 34 characters; the columns that keep them hold 64


def require(form: dict[str, str], *names: str) -> list[str]:
    missing = [n for n in names if not form.get(n)]
    if missing:
        raise HTTPException(400, f"missing form field(s): {', '.join(missing)}")
    too_long = [n for n in names if n.endswith("Sid") and len(form[n]) > SID_LENGTH]
    if too_long:
        raise HTTPException(400, f"{', '.join(too_long)} longer than {SID_LENGTH} characters is not a Twilio SID")
    return [form[n] for n in names]
