"""Twilio webhooks: voice (ring the staff), dial-complete (missed?), voicemail, inbound SMS, delivery status.

Each route: verify the signature, parse, hand off to core in one transaction, answer (TwiML).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from core import inbound, textback, voicemail
from core.config import Tenant
from core.outbox import Pending
from sync import metrics
from sync.runtime import Runtime
from webhooks.twilio_auth import VerifiedRequest, require, verified_status_callback, verified_twilio_request

router = APIRouter(prefix="/twilio")

DIAL_COMPLETE = "/twilio/voice/dial-complete"
WHISPER = "/twilio/voice/whisper"
WHISPER_RESULT = "/twilio/voice/whisper-result"
RECORDING = "/twilio/voice/recording"
TRANSCRIPTION = "/twilio/voice/transcription"


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
    runtime.dispatch(pending)
    return result


def _int(form: dict[str, str], name: str) -> int | None:
    value = form.get(name)
    # ASCII digits only ("²" passes isdigit, not int), and short enough for an INTEGER column on PostgreSQL.
    return int(value) if value and value.isascii() and value.isdigit() and len(value) <= 9 else None


@router.post("/voice")
async def voice(request: Request, verified: VerifiedRequest = Depends(verified_twilio_request)) -> Response:
    runtime: Runtime = request.app.state.runtime
    tenant = verified.tenant
    call_sid, caller, called = require(verified.form, "CallSid", "From", "To")
    if tenant.missed_call.mode == "forwarded":
        outcome = await run_in_threadpool(_in_transaction, runtime, lambda s, p: textback.forwarded_call(
            s, tenant=tenant, call_sid=call_sid, caller=caller, called=called, now=runtime.now(), pending=p))
        metrics.missed_call(tenant=tenant.id, outcome=outcome)
        return _twiml(_missed_answer(tenant, texted=outcome.texted))
    await run_in_threadpool(_in_transaction, runtime, lambda s, p: textback.call_started(
        s, tenant=tenant, call_sid=call_sid, caller=caller, called=called, now=runtime.now()))
    response = VoiceResponse()
    dial = response.dial(action=DIAL_COMPLETE, method="POST", timeout=tenant.missed_call.ring_seconds)
    for number in tenant.forward_to:
        options = {}
        if tenant.missed_call.machine_detection:
            options["machine_detection"] = "Enable"
        if tenant.missed_call.whisper:
            options["url"] = WHISPER
        dial.number(number, **options)
    return _twiml(response)


@router.post("/voice/whisper")
async def whisper(verified: VerifiedRequest = Depends(verified_twilio_request)) -> Response:
    """Played to the staff member who picks up: a key press proves a person, not voicemail, answered."""
    response = VoiceResponse()
    gather = response.gather(num_digits=1, action=WHISPER_RESULT, method="POST", timeout=6)
    gather.say(f"Call for {verified.tenant.name}. Press any key to take it.")
    response.hangup()
    return _twiml(response)


@router.post("/voice/whisper-result")
async def whisper_result(verified: VerifiedRequest = Depends(verified_twilio_request)) -> Response:
    response = VoiceResponse()
    if not verified.form.get("Digits"):
        response.hangup()
    return _twiml(response)  # an empty response bridges the caller to the staff member


@router.post("/voice/dial-complete")
async def dial_complete(request: Request, verified: VerifiedRequest = Depends(verified_twilio_request)) -> Response:
    runtime: Runtime = request.app.state.runtime
    tenant, form = verified.tenant, verified.form
    call_sid, caller, called, status = require(form, "CallSid", "From", "To", "DialCallStatus")
    outcome = await run_in_threadpool(_in_transaction, runtime, lambda s, p: textback.dial_completed(
        s, tenant=tenant, call_sid=call_sid, caller=caller, called=called, dial_status=status,
        answered_by=form.get("AnsweredBy") or None, duration=_int(form, "DialCallDuration"),
        now=runtime.now(), pending=p))
    metrics.missed_call(tenant=tenant.id, outcome=outcome)
    if not outcome.missed:
        response = VoiceResponse()
        response.hangup()
        return _twiml(response)
    return _twiml(_missed_answer(tenant, texted=outcome.texted))


@router.post("/voice/recording")
async def recording(request: Request, verified: VerifiedRequest = Depends(verified_twilio_request)) -> Response:
    runtime: Runtime = request.app.state.runtime
    call_sid, url = require(verified.form, "CallSid", "RecordingUrl")
    await run_in_threadpool(_in_transaction, runtime, lambda s, p: voicemail.recording_ready(
        s, call_sid=call_sid, recording_url=url, pending=p))
    response = VoiceResponse()
    response.hangup()
    return _twiml(response)


@router.post("/voice/transcription")
async def transcription(request: Request, verified: VerifiedRequest = Depends(verified_twilio_request)) -> Response:
    runtime: Runtime = request.app.state.runtime
    call_sid = require(verified.form, "CallSid")[0]
    text = verified.form.get("TranscriptionText", "") if verified.form.get("TranscriptionStatus") != "failed" else ""
    await run_in_threadpool(_in_transaction, runtime, lambda s, p: voicemail.transcription_ready(
        s, call_sid=call_sid, text=text, recording_url=verified.form.get("RecordingUrl"), pending=p))
    return Response(status_code=204)


@router.post("/sms")
async def sms(request: Request, verified: VerifiedRequest = Depends(verified_twilio_request)) -> Response:
    runtime: Runtime = request.app.state.runtime
    message_sid, caller, called = require(verified.form, "MessageSid", "From", "To")
    body = verified.form.get("Body", "")
    await run_in_threadpool(_in_transaction, runtime, lambda s, p: inbound.inbound_sms(
        s, tenant=verified.tenant, message_sid=message_sid, caller=caller, called=called, body=body,
        now=runtime.now(), pending=p, interpreter=runtime.interpreter(verified.tenant)))
    return _twiml(MessagingResponse())  # replies go out through the outbox, never inline


@router.post("/sms/status")
async def sms_status(request: Request, verified: VerifiedRequest = Depends(verified_status_callback)) -> Response:
    runtime: Runtime = request.app.state.runtime
    message_sid, status = require(verified.form, "MessageSid", "MessageStatus")
    error_code = _int(verified.form, "ErrorCode")
    message_id = _int(dict(request.query_params), "m")  # our marker in the StatusCallback URL
    await run_in_threadpool(_in_transaction, runtime, lambda s, p: inbound.delivery_status(
        s, tenant_id=verified.tenant.id, message_sid=message_sid, message_id=message_id, status=status,
        error_code=error_code, now=runtime.now(), pending=p))
    return Response(status_code=204)


def _missed_answer(tenant: Tenant, *, texted: bool) -> VoiceResponse:
    response = VoiceResponse()
    if tenant.missed_call.greeting:
        response.say(tenant.missed_call.greeting)
    elif texted:
        response.say(f"Sorry, nobody at {tenant.name} could take your call right now. "
                     "We will text you at this number in a moment.")
    else:
        response.say(f"Sorry, nobody at {tenant.name} could take your call right now. Please try again later.")
    if tenant.missed_call.voicemail:
        response.say("Please leave a message after the tone.")
        response.record(action=RECORDING, method="POST", max_length=120, play_beep=True,
                        transcribe=True, transcribe_callback=TRANSCRIPTION)
    else:
        response.say("Goodbye.")
    response.hangup()
    return response
