"""The API for other phone systems and admin tools, authenticated by a per-tenant key (bearer token).

Keys are stored as SHA-256 hashes in the tenants file (`api_key_sha256`); `textback apikey TENANT`
makes one. A missing key answers 401, a wrong one 403, and neither leaves a trace.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from core import constant_time, handoff, textback
from core.config import Tenant, to_e164
from core.outbox import Pending
from core.storable import storable
from core.store.tables import Call, Conversation
from sync import metrics
from sync.runtime import Runtime
from webhooks.params import RowId

router = APIRouter(prefix="/api/v1", tags=["api"])
# NUL dropped and lone surrogates mended before pydantic sees them (it refuses the latter): core/storable.py
StorableStr = Annotated[str, BeforeValidator(lambda value: storable(value) if isinstance(value, str) else value)]


NUMBER_LENGTH = Call.__table__.c.from_number.type.length


class MissedCallReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Bounded by the columns that keep them (a 40-character "number" is no phone number): a 422, not a 500.
    caller: StorableStr = Field(max_length=NUMBER_LENGTH, description="The caller's number, E.164 preferred",
                                examples=["+13105550123"])
    called: StorableStr = Field(max_length=NUMBER_LENGTH,
                                description="The business number that was called (identifies the tenant)",
                                examples=["+15550001111"])
    occurred_at: datetime = Field(description="When the call was missed (ISO 8601 with offset)")
    idempotency_key: StorableStr = Field(min_length=1, max_length=100,
                                 description="Unique per call in your system; a retry with the same key does nothing")


class MissedCallResult(BaseModel):
    call_id: int
    texted: bool
    skip_reason: str | None = Field(description="Why no text was sent (see the README's policy order)")
    duplicate: bool


class TakeoverResult(BaseModel):
    conversation_id: int
    paused: bool


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _require_bearer(authorization: str | None) -> None:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise HTTPException(401, "send the tenant's API key as Authorization: Bearer <key>",
                            headers={"WWW-Authenticate": "Bearer"})


def _key_matches(tenant: Tenant, authorization: str) -> bool:
    return tenant.api_key_sha256 is not None and constant_time.equal(hash_key(authorization[7:].strip()),
                                                                     tenant.api_key_sha256)


def _authorise(tenant: Tenant, authorization: str | None) -> None:
    _require_bearer(authorization)
    if not _key_matches(tenant, authorization):
        raise HTTPException(403, "this API key is not valid for the tenant that owns the number")


@router.post("/missed-calls", response_model=MissedCallResult, status_code=202,
             responses={401: {"description": "no API key"},
                        403: {"description": "the key is not valid for `called` (whoever owns it)"}})
async def report_missed_call(report: MissedCallReport, request: Request,
                             authorization: str | None = Header(None)) -> MissedCallResult:
    """Report a missed call from another phone system; the same policy and dedupe as Twilio calls apply."""
    runtime: Runtime = request.app.state.runtime
    # The key names the tenant before the number is looked at, so nobody can probe which numbers are
    # customers: no key is 401, and a key that is not valid for `called` is 403 whether anyone owns it or not.
    _require_bearer(authorization)
    tenant = runtime.tenants.by_number(report.called)
    if tenant is None or not _key_matches(tenant, authorization):
        raise HTTPException(403, "this API key is not valid for the number in `called`")
    if report.occurred_at.tzinfo is None:
        raise HTTPException(422, "occurred_at needs a UTC offset, e.g. 2026-11-27T14:03:00-05:00")

    def work():
        pending = Pending()
        with runtime.db.transaction() as session:
            outcome = textback.reported_missed_call(
                session, tenant=tenant, idempotency_key=report.idempotency_key, caller=report.caller,
                called=to_e164(report.called),
                occurred_at=report.occurred_at, now=runtime.now(), pending=pending)
        runtime.dispatch(pending)
        return outcome

    outcome = await run_in_threadpool(work)
    metrics.missed_call(tenant=tenant.id, outcome=outcome)
    return MissedCallResult(call_id=outcome.call_id, texted=outcome.texted, skip_reason=outcome.skip_reason,
                            duplicate=outcome.duplicate)


@router.post("/conversations/{conversation_id}/takeover", response_model=TakeoverResult)
async def takeover(conversation_id: RowId, request: Request, authorization: str | None = Header(None),
                   by: str = "staff") -> TakeoverResult:
    """Staff take a conversation over: the bot sends nothing more in it."""
    runtime: Runtime = request.app.state.runtime
    _require_bearer(authorization)

    def work():
        pending = Pending()
        with runtime.db.transaction() as session:
            conversation = session.get(Conversation, conversation_id)
            tenant = runtime.tenants.get(conversation.tenant_id) if conversation else None
            if conversation is None or tenant is None or not _key_matches(tenant, authorization):
                # Another tenant's conversation looks exactly like one that does not exist.
                raise HTTPException(404, f"no conversation {conversation_id} for this API key")
            handoff.take_over(session, conversation=conversation, by=storable(by), now=runtime.now(), pending=pending)
        runtime.dispatch(pending)
        return TakeoverResult(conversation_id=conversation_id, paused=True)

    return await run_in_threadpool(work)
