"""A seeded data set whose report is known by hand (tests/core/test_report.py spells out the answers).

Two tenants in March 2031. alpha: six calls missed (four texted, three replied, two qualified,
one booked; one skipped for cooldown, one for opt-out), one answered, one in February;
beta: three missed (two texted and replied, one booked, one handed off with a dead CRM job,
one withheld number).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from core.store.db import Database
from core.store.tables import Booking, Call, Conversation, ExternalId, Lead, Message, OptOutEvent, OutboxRow

T0 = datetime(2031, 3, 3, 14, 0, tzinfo=timezone.utc)


def at(seconds: float, base: datetime = T0) -> datetime:
    return base + timedelta(seconds=seconds)


class Seeder:
    def __init__(self, session) -> None:
        self.session = session
        self.count = 0

    def call(self, tenant: str, *, base: datetime, status: str = "missed", skip: str | None = None,
             dial_status: str = "no-answer", source: str = "twilio") -> tuple[Call, Lead]:
        self.count += 1
        lead = Lead(tenant_id=tenant, phone=f"+1555010{self.count:04d}", created_at=base)
        self.session.add(lead)
        self.session.flush()
        call = Call(tenant_id=tenant, call_sid=f"CA{self.count:032d}", lead_id=lead.id, from_number=lead.phone,
                    to_number="+15550001111", status=status, dial_status=dial_status, skip_reason=skip,
                    texted=skip is None and status == "missed", source=source, created_at=base)
        self.session.add(call)
        self.session.flush()
        return call, lead

    def conversation(self, call: Call, *, template: str = "first_in_hours", first_after: float | None,
                     reply_after: float | None = None, state: str = "asking", outcome: str | None = None,
                     first_status: str = "delivered", first_error: int | None = None,
                     followups: int = 0) -> Conversation:
        base = call.created_at
        conversation = Conversation(tenant_id=call.tenant_id, lead_id=call.lead_id, call_id=call.id,
                                    business_number=call.to_number, playbook="law", state=state, step="matter",
                                    answers={"matter_type": "family"}, offered_slots=[], outcome=outcome,
                                    followups_sent=followups, created_at=base)
        self.session.add(conversation)
        self.session.flush()
        self.message(conversation, "outbound", "Smith & Lee Law (automated): sorry we missed you...",
                     created=at(1, base), sent=at(first_after, base) if first_after is not None else None,
                     purpose="first", template=template, status=first_status if first_after is not None else "queued",
                     error=first_error)
        if reply_after is not None:
            self.message(conversation, "inbound", "hi its about custody for my kid",
                         created=at(first_after + reply_after, base), purpose=None, status="received")
        return conversation

    def message(self, conversation: Conversation, direction: str, body: str, *, created: datetime,
                sent: datetime | None = None, purpose: str | None, status: str, template: str | None = None,
                error: int | None = None) -> Message:
        message = Message(tenant_id=conversation.tenant_id, conversation_id=conversation.id,
                          lead_id=conversation.lead_id, business_number=conversation.business_number,
                          direction=direction, body=body, status=status, purpose=purpose, template=template,
                          error_code=error, created_at=created, sent_at=sent)
        self.session.add(message)
        self.session.flush()
        return message

    def outbox(self, tenant: str, kind: str, key: str, *, created: datetime, payload: dict | None = None,
               status: str = "done", error: str | None = None) -> OutboxRow:
        row = OutboxRow(tenant_id=tenant, kind=kind, payload=payload or {}, idempotency_key=key, status=status,
                        attempts=10 if status == "dead" else 1, last_error=error, created_at=created)
        self.session.add(row)
        self.session.flush()
        return row

    def qualified(self, conversation: Conversation, after: float) -> None:
        self.outbox(conversation.tenant_id, "offer_slots", f"offer:{conversation.id}:SM{conversation.id}",
                    created=at(after, conversation.created_at), payload={"conversation_id": conversation.id})

    def booking(self, conversation: Conversation, *, calendar: str, status: str, after: float,
                event: str | None = None) -> Booking:
        start = conversation.created_at + timedelta(days=1)
        booking = Booking(tenant_id=conversation.tenant_id, conversation_id=conversation.id,
                          lead_id=conversation.lead_id, calendar_id=calendar, start_at=start,
                          end_at=start + timedelta(minutes=30), status=status, external_event_id=event,
                          link=f"https://calendar.example/{event}" if event else None,
                          created_at=at(after - 30, conversation.created_at))
        self.session.add(booking)
        self.session.flush()
        if status == "confirmed":
            self.outbox(conversation.tenant_id, "crm_record_booking", f"crm-booking:{booking.id}",
                        created=at(after, conversation.created_at), payload={"booking_id": booking.id})
        return booking


def seed_known_report(db: Database) -> dict[str, int]:
    """Writes the data set; returns the ids a test needs by name."""
    ids: dict[str, int] = {}
    with db.transaction() as session:
        s = Seeder(session)
        # alpha
        a1, lead_a1 = s.call("alpha", base=T0)
        c = s.conversation(a1, first_after=10, reply_after=60, state="booked", outcome="booked")
        s.qualified(c, 200)
        booking = s.booking(c, calendar="cal-a", status="confirmed", after=300, event="evt-a1")
        session.add(ExternalId(tenant_id="alpha", connector="hubspot", local_kind="lead", local_id=lead_a1.id,
                               external_id="hs-501", created_at=at(50)))
        ids.update(a1_call=a1.id, a1_booking=booking.id)

        a2, _ = s.call("alpha", base=at(3600))
        c = s.conversation(a2, first_after=20, reply_after=100, state="booking", outcome="qualified")
        s.qualified(c, 250)
        s.booking(c, calendar="cal-a", status="held", after=400)  # never confirmed: not booked

        a3, _ = s.call("alpha", base=at(7200), dial_status="forwarded")
        c = s.conversation(a3, template="first_after_hours", first_after=30, first_status="undelivered",
                           first_error=30003, followups=1)
        ids["a3_conversation"] = c.id
        first = session.scalar(select(Message.id).where(Message.conversation_id == c.id))
        s.outbox("alpha", "send_sms", f"sms:{first}:resend", created=at(7300), payload={"message_id": first},
                 status="failed", error="Rejected: twilio 400 21610")

        s.call("alpha", base=at(7300), skip="cooldown")
        s.call("alpha", base=at(7400), skip="opted_out")

        a6, lead_a6 = s.call("alpha", base=at(9000), source="api", dial_status="reported")
        s.conversation(a6, first_after=40, reply_after=20, state="opted_out", outcome="opted_out")
        session.add(OptOutEvent(tenant_id="alpha", lead_id=lead_a6.id, action="opt_out", source="sms_keyword",
                                created_at=at(9100)))
        s.call("alpha", base=at(9500), status="answered", dial_status="completed")  # not a missed call
        s.call("alpha", base=datetime(2031, 2, 1, 15, tzinfo=timezone.utc))  # before the window
        # beta
        b1, _ = s.call("beta", base=at(600))
        c = s.conversation(b1, first_after=5, reply_after=30, state="booked", outcome="booked")
        s.qualified(c, 120)
        s.booking(c, calendar="cal-b", status="confirmed", after=180, event="evt-b1")

        b2, _ = s.call("beta", base=at(1200))
        c = s.conversation(b2, first_after=15, reply_after=45, state="handoff", outcome="needs_human")
        c.handoff_summary = "Caller asks for a person. Transcript: conversation %d." % c.id
        s.outbox("beta", "crm_log_conversation", f"crm-log:{c.id}:3:handoff", created=at(1300),
                 payload={"conversation_id": c.id}, status="dead", error="Traceback...\nRejected: 400 bad property")
        ids.update(b2_call=b2.id, b2_conversation=c.id)

        s.call("beta", base=at(1800), skip="invalid_number")
    return ids
