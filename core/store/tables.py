"""Tables. Uniqueness constraints carry the idempotency rules:

- a lead is one per tenant + E.164 phone;
- a call is one per Twilio CallSid (a retried webhook inserts nothing);
- a message is one per provider sid (a retried inbound SMS is ignored);
- an outbox row is one per idempotency key;
- an active booking is one per tenant + calendar + start (no double booking);
- an external id is one per tenant + connector + local record.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import text as sa_text
from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, TypeDecorator, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on every backend (SQLite drops the offset otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware datetime")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# The clock of the transaction in progress (core/store/db.py sets it), so a column's own `onupdate`
# (an UPDATE issued without the ORM's stamping, say) agrees with an injected clock.
ROW_CLOCK: ContextVar[Callable[[], datetime] | None] = ContextVar("row_clock", default=None)


def utcnow() -> datetime:
    clock = ROW_CLOCK.get()
    return clock() if clock is not None else datetime.now(timezone.utc)


CALL_SID_LENGTH = 64  # Twilio's are 34; a reported call's is derived to fit (core.textback.api_call_sid)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class Lead(Base):
    __tablename__ = "leads"
    __table_args__ = (UniqueConstraint("tenant_id", "phone", name="uq_leads_tenant_phone"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    phone: Mapped[str] = mapped_column(String(20))
    first_name: Mapped[str | None] = mapped_column(String(80))
    last_name: Mapped[str | None] = mapped_column(String(80))
    opted_out_at: Mapped[datetime | None]
    opt_out_source: Mapped[str | None] = mapped_column(String(40))
    do_not_text: Mapped[bool] = mapped_column(Boolean, default=False)  # set by staff in the CRM
    line_type: Mapped[str | None] = mapped_column(String(20))
    undeliverable_code: Mapped[int | None] = mapped_column(Integer)  # a carrier error that stops further sends
    crm_owner_id: Mapped[str | None] = mapped_column(String(64))  # the CRM owner staff assigned (two-way sync)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Call(Base):
    __tablename__ = "calls"
    __table_args__ = (Index("ix_calls_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    call_sid: Mapped[str] = mapped_column(String(CALL_SID_LENGTH), unique=True)
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"), index=True)
    from_number: Mapped[str] = mapped_column(String(32))
    to_number: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(20), default="ringing")  # ringing | answered | missed
    dial_status: Mapped[str | None] = mapped_column(String(20))
    skip_reason: Mapped[str | None] = mapped_column(String(40))
    texted: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(20), default="twilio")  # twilio | api
    answered_by: Mapped[str | None] = mapped_column(String(30))
    duration_seconds: Mapped[int | None] = mapped_column(Integer)
    recording_url: Mapped[str | None] = mapped_column(Text)
    transcription: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id"))
    business_number: Mapped[str] = mapped_column(String(20))
    playbook: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(40))  # asking | offering | booking | booked | opted_out | closed
    step: Mapped[str | None] = mapped_column(String(60))
    answers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    offered_slots: Mapped[list[Any]] = mapped_column(default=list)
    outcome: Mapped[str | None] = mapped_column(String(40))
    followups_sent: Mapped[int] = mapped_column(Integer, default=0)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)  # staff took over
    handoff_summary: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    closed_at: Mapped[datetime | None]


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id"), index=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    business_number: Mapped[str] = mapped_column(String(20))
    direction: Mapped[str] = mapped_column(String(10))  # inbound | outbound
    body: Mapped[str] = mapped_column(Text)
    provider_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(20))  # received | queued | sent | delivered | undelivered | failed | suppressed
    purpose: Mapped[str | None] = mapped_column(String(30))  # first | reply | followup | handoff | help | opt_out ...
    template: Mapped[str | None] = mapped_column(String(40))  # the template a first text came from (first_in_hours ...)
    error_code: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


class Booking(Base):
    __tablename__ = "bookings"
    __table_args__ = (
        Index("uq_bookings_active_slot", "tenant_id", "calendar_id", "start_at", unique=True,
              sqlite_where=sa_text("status IN ('held', 'creating', 'confirmed')"),
              postgresql_where=sa_text("status IN ('held', 'creating', 'confirmed')")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"))
    calendar_id: Mapped[str] = mapped_column(String(255))
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(20))  # held | creating | confirmed | released | cancelled
    external_event_id: Mapped[str | None] = mapped_column(String(255))
    link: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OutboxRow(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_status_not_before", "status", "not_before"),)  # the relay's scan

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)  # pending | done | failed | dead | parked
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    claimed_until: Mapped[datetime | None]  # a worker is running it until then; others keep off
    not_before: Mapped[datetime | None] = mapped_column(index=True)  # deferred: delay, quiet hours, follow-ups
    enqueued_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None]


class ExternalId(Base):
    __tablename__ = "external_ids"
    __table_args__ = (UniqueConstraint("tenant_id", "connector", "local_kind", "local_id", name="uq_external_ids_local"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    connector: Mapped[str] = mapped_column(String(40))
    local_kind: Mapped[str] = mapped_column(String(40))  # lead | conversation | opportunity | booking
    local_id: Mapped[int] = mapped_column(Integer)
    external_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OptOutEvent(Base):
    """Every opt-out and opt-in, with when and how, for audits and for the CRM."""

    __tablename__ = "opt_out_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    action: Mapped[str] = mapped_column(String(10))  # opt_out | opt_in
    source: Mapped[str] = mapped_column(String(40))  # sms_keyword | sms_phrase | carrier_21610 | crm | api
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Connection(Base):
    """One tenant's authorized vendor account for one connector role; its tokens are encrypted at rest."""

    __tablename__ = "connections"
    __table_args__ = (UniqueConstraint("tenant_id", "role", name="uq_connections_tenant_role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(20))  # sms | crm | calendar
    provider: Mapped[str] = mapped_column(String(40))  # clio | google | microsoft
    status: Mapped[str] = mapped_column(String(20), default="active")  # active | needs_reauth
    status_reason: Mapped[str | None] = mapped_column(Text)  # why it needs re-auth, as the vendor said it
    token_blob: Mapped[str] = mapped_column(Text)  # Fernet token of the JSON token set
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    expires_at: Mapped[datetime | None]  # of the access token; kept in the clear so listing needs no key
    account_label: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AdminUser(Base):
    """A person who signs in to /admin: an agency admin (every tenant) or a user of one business."""

    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id, with its parameters and salt
    tenant_id: Mapped[str | None] = mapped_column(String(64))  # None for an agency admin
    agency: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AdminSession(Base):
    """A signed-in browser: the cookie holds a random token, the table only its SHA-256."""

    __tablename__ = "admin_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("admin_users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SyncSubscription(Base):
    """A push subscription textback holds at a vendor: a Google channel, a Graph subscription, a Clio webhook.

    `secret_sha256` is the hash of what the vendor echoes back on every notification (Google's channel token,
    Graph's clientState), so a leaked database row cannot forge one. Clio signs with a secret it picks at the
    handshake and we must key an HMAC with it, so that one is kept (`signing_secret`). `path_token` is the
    unguessable part of the URL a Clio webhook calls, which names the row before anything is verified.
    """

    __tablename__ = "sync_subscriptions"
    __table_args__ = (UniqueConstraint("provider", "external_id", name="uq_sync_subscriptions_external"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    provider: Mapped[str] = mapped_column(String(20))  # google | microsoft | clio
    resource: Mapped[str] = mapped_column(String(255))  # the calendar id, mailbox or Clio model watched
    external_id: Mapped[str] = mapped_column(String(255))  # channel id | subscription id | webhook id
    resource_id: Mapped[str | None] = mapped_column(String(255))  # Google's resourceId (needed to stop it)
    secret_sha256: Mapped[str | None] = mapped_column(String(64))
    signing_secret: Mapped[str | None] = mapped_column(Text)
    path_token: Mapped[str | None] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(20), default="active")  # pending | active | stopped
    expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SyncCursor(Base):
    """Where the last incremental pull of one vendor feed stopped (a sync token, a delta link, a timestamp)."""

    __tablename__ = "sync_cursors"
    __table_args__ = (UniqueConstraint("tenant_id", "provider", "scope", name="uq_sync_cursors_feed"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(20))
    scope: Mapped[str] = mapped_column(String(255))  # the calendar id, mailbox or object type pulled
    cursor: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
