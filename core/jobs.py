"""The job contract: what an outbox row asks for, and what core decides before sync calls a vendor.

Every outbox row is one job. Its payload is a typed model (PAYLOADS, one per Kind); sync/ runs it
in four steps, the same for every kind:

    claim     the row is pending, due and not claimed by a live worker: it is ours for CLAIM
    prepare   a core function decides in one transaction what to do, from the database and the time:
                Skip(reason)       nothing to do (already done, opted out, answered meanwhile, ...)
                Defer(until)       not yet (quiet hours): the row waits, not_before = until
                a VendorCall       exactly one call to the tenant's vendor, described as data;
                                   the record it is about is marked in flight (a text is `sending`)
    call      sync/ makes that one call through the tenant's connector
    record    a core function stores the vendor's answer in one transaction, and writes the rows
              the result causes (a follow-up, a CRM push) to the outbox in that same transaction

Failures end visibly: RateLimited and Transient (and any unexpected exception) are retried with
backoff and then dead-lettered with the last error; AuthExpired parks the row; Rejected fails it.
A step the caller is waiting on that fails for good hands the caller to staff (core.appointments).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.outbox import Kind


class OutboxStatus(enum.StrEnum):
    pending = "pending"  # waiting to run (maybe not before `not_before`), or running under a claim
    done = "done"
    failed = "failed"  # the vendor refused it (Rejected), or its tenant is gone: replay after fixing
    dead = "dead"  # retries exhausted: replay with `textback outbox replay`
    parked = "parked"  # credentials need re-auth: reconnecting unparks it


FINISHED = frozenset({OutboxStatus.done, OutboxStatus.failed, OutboxStatus.dead, OutboxStatus.parked})


class MessageStatus(enum.StrEnum):
    received = "received"  # inbound
    queued = "queued"  # outbound, written, not yet handed to the provider
    sending = "sending"  # handed to the provider; no answer recorded yet (reconciled before any resend)
    accepted = "accepted"
    scheduled = "scheduled"
    sent = "sent"
    delivered = "delivered"
    undelivered = "undelivered"
    failed = "failed"
    read = "read"
    suppressed = "suppressed"  # never sent: opted out, answered meanwhile, landline, ...


# --- payloads ----------------------------------------------------------------------------

class JobPayload(BaseModel):
    # Rows written by an older release may carry keys this one no longer reads.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class SendSMSJob(JobPayload):
    message_id: int
    call_id: int | None = None  # the missed call a first text answers


class FollowupJob(JobPayload):
    conversation_id: int
    number: int


class NotifyStaffJob(JobPayload):
    to: str
    from_: str = Field(alias="from")
    body: str


class LeadJob(JobPayload):
    lead_id: int


class ConversationJob(JobPayload):
    conversation_id: int


class BookingJob(JobPayload):
    booking_id: int


class BookSlotJob(JobPayload):
    conversation_id: int
    slot: dict[str, Any]  # one of the conversation's offered slots (core.appointments.offer)


class CancelBookingJob(JobPayload):
    conversation_id: int
    booking_id: int | None = None  # without it, the lead's next confirmed appointment


class CalendarPullJob(JobPayload):
    """Pull what changed in one calendar since its stored cursor (a push said something changed, or the timer)."""

    calendar_id: str


class CalendarEventJob(JobPayload):
    """One event a push notification named: read it and apply what staff did to it."""

    calendar_id: str
    event_id: str


class ContactChangeJob(JobPayload):
    """Contact fields staff changed in the CRM, as the vendor's webhook reported them (the CRM owns these)."""

    contact_id: str
    changes: dict[str, str | None]
    occurred_at: datetime | None = None


class WatchJob(JobPayload):
    """A tenant-wide sync job (subscription upkeep, a CRM pull): the tenant is all it needs."""


PAYLOADS: dict[Kind, type[JobPayload]] = {
    Kind.send_sms: SendSMSJob,
    Kind.followup: FollowupJob,
    Kind.notify_staff: NotifyStaffJob,
    Kind.crm_sync_lead: LeadJob,
    Kind.crm_log_conversation: ConversationJob,
    Kind.crm_upsert_opportunity: ConversationJob,
    Kind.crm_record_booking: BookingJob,
    Kind.offer_slots: ConversationJob,
    Kind.book_slot: BookSlotJob,
    Kind.reschedule_booking: ConversationJob,
    Kind.cancel_booking: CancelBookingJob,
    Kind.calendar_pull: CalendarPullJob,
    Kind.calendar_event_changed: CalendarEventJob,
    Kind.crm_contact_changed: ContactChangeJob,
    Kind.crm_write_opt_out: LeadJob,
    Kind.crm_pull: WatchJob,
    Kind.watch_calendars: WatchJob,
    Kind.watch_crm: WatchJob,
}

# Jobs a caller is waiting on: when one fails for good, the caller is handed to staff instead of silence.
CALLER_WAITING = frozenset({Kind.offer_slots, Kind.book_slot, Kind.reschedule_booking, Kind.cancel_booking})


def parse_payload(kind: Kind, payload: dict[str, Any]) -> JobPayload:
    return PAYLOADS[kind].model_validate(payload)


# --- decisions ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Skip:
    reason: str


@dataclass(frozen=True)
class Defer:
    until: datetime
    reason: str


class VendorCall:
    """Base of the one vendor call a prepare step asks sync/ to make (each job module defines its own)."""
