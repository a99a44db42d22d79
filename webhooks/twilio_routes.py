"""Twilio webhooks: voice (ring the staff), dial-complete (missed?), inbound SMS, delivery status."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from core import inbound, textback
from core.outbox import Pending
from sync.runtime import Runtime
from webhooks.twilio_auth import VerifiedRequest, require, verified_twilio_request

router = APIRouter(prefix="/twilio")

DIAL_COMPLETE = "/twilio/voice/dial-complete"


def _twiml(response) -> Response:
    return Response(content=str(response), media_type="application/xml")


def _in_transaction(runtime: Runtime, work):
    """Run core work in one transaction, then dispatch what it queued (after commit, never before)."""
    pending = Pending()
    try:
        with runtime.db.transaction() as session:
            result = work(session, pending)
    except inbound.InvalidInput as exc:
        raise HTTPException(400, str(exc)) from exc
    runtime.dispatch(pending.ids)
    return result


@router.post("/voice")
async def voice(request: Request, verified: VerifiedRequest = Depends(verified_twilio_request)) -> Response:
    runtime: Runtime = request.app.state.runtime
    tenant = verified.tenant
    call_sid, caller, called = require(verified.form, "CallSid", "From", "To")
    if tenant.missed_call.mode == "forwarded":
        outcome = await run_in_threadpool(_in_transaction, runtime, lambda s, p: textback.forwarded_call(
            s, tenant=tenant, call_sid=call_sid, caller=caller, called=called, now=runtime.now(), pending=p))
        return _twiml(_missed_answer(tenant.name, texted=outcome.texted))
    await run_in_threadpool(_in_transaction, runtime, lambda s, p: textback.call_started(
        s, tenant=tenant, call_sid=call_sid, caller=caller, called=called))
    response = VoiceResponse()
    dial = response.dial(action=DIAL_COMPLETE, method="POST", timeout=tenant.missed_call.ring_seconds)
    for number in tenant.forward_to:
        dial.number(number)
    return _twiml(response)


@router.post("/voice/dial-complete")
async def dial_complete(request: Request, verified: VerifiedRequest = Depends(verified_twilio_request)) -> Response:
    runtime: Runtime = request.app.state.runtime
    tenant = verified.tenant
    call_sid, caller, called, status = require(verified.form, "CallSid", "From", "To", "DialCallStatus")
    outcome = await run_in_threadpool(_in_transaction, runtime, lambda s, p: textback.dial_completed(
        s, tenant=tenant, call_sid=call_sid, caller=caller, called=called, dial_status=status,
        now=runtime.now(), pending=p))
    if status not in textback.MISSED_DIAL_STATUSES:
        response = VoiceResponse()
        response.hangup()
        return _twiml(response)
    return _twiml(_missed_answer(tenant.name, texted=outcome.texted))


@router.post("/sms")
async def sms(request: Request, verified: VerifiedRequest = Depends(verified_twilio_request)) -> Response:
    runtime: Runtime = request.app.state.runtime
    message_sid, caller, called = require(verified.form, "MessageSid", "From", "To")
    body = verified.form.get("Body", "")
    await run_in_threadpool(_in_transaction, runtime, lambda s, p: inbound.inbound_sms(
        s, tenant=verified.tenant, message_sid=message_sid, caller=caller, called=called, body=body,
        now=runtime.now(), pending=p))
    return _twiml(MessagingResponse())  # replies go out through the outbox, never inline


@router.post("/sms/status")
async def sms_status(request: Request, verified: VerifiedRequest = Depends(verified_twilio_request)) -> Response:
    runtime: Runtime = request.app.state.runtime
    message_sid, status = require(verified.form, "MessageSid", "MessageStatus")
    raw_code = verified.form.get("ErrorCode") or None
    error_code = int(raw_code) if raw_code and raw_code.isdigit() else None
    await run_in_threadpool(_in_transaction, runtime, lambda s, p: inbound.delivery_status(
        s, message_sid=message_sid, status=status, error_code=error_code, now=runtime.now()))
    return Response(status_code=204)


def _missed_answer(business: str, *, texted: bool) -> VoiceResponse:
    response = VoiceResponse()
    if texted:
        response.say(f"Sorry, nobody at {business} could take your call right now. "
                     "We will text you at this number in a moment. Goodbye.")
    else:
        response.say(f"Sorry, nobody at {business} could take your call right now. Please try again later. Goodbye.")
    response.hangup()
    return response
