"""Voicemail left after a missed call: attached to the call and the lead, pushed to the CRM with the transcript."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.outbox import Kind, Pending, log_conversation_later
from core.store.tables import Call, Conversation


def recording_ready(session: Session, *, call_sid: str, recording_url: str, pending: Pending) -> None:
    call = session.scalar(select(Call).where(Call.call_sid == call_sid))
    if call is not None and call.recording_url != recording_url:
        call.recording_url = recording_url
        _push(session, call, pending, reason="recording")


def transcription_ready(session: Session, *, call_sid: str, text: str, recording_url: str | None,
                        pending: Pending) -> None:
    call = session.scalar(select(Call).where(Call.call_sid == call_sid))
    if call is None or (call.transcription == text and call.recording_url == (recording_url or call.recording_url)):
        return
    call.transcription = text or call.transcription
    call.recording_url = recording_url or call.recording_url
    _push(session, call, pending, reason=f"transcription-{len(call.transcription or '')}")


def _push(session: Session, call: Call, pending: Pending, *, reason: str) -> None:
    conversation = session.scalar(select(Conversation).where(Conversation.call_id == call.id))
    if conversation is not None:
        log_conversation_later(session, conversation, pending, reason=reason)
    elif call.lead_id is not None:
        pending.add(session, tenant_id=call.tenant_id, kind=Kind.crm_sync_lead,
                    key=f"crm-lead:{call.lead_id}:voicemail:{call.id}", payload={"lead_id": call.lead_id})
