"""The connector protocols, their configuration base and their one error tree.

    ConnectorError                 anything a vendor call can fail with
     ├── RateLimited(retry_after)  429 or an equivalent quota answer; retry after the delay
     ├── Transient                 5xx, timeouts, connection resets; retry with backoff
     │    └── Ambiguous            no answer after the request went out: it may have taken effect,
     │                             so look before doing it again (a text is never sent twice)
     ├── AuthExpired               credentials revoked/expired; park and ask for re-auth
     └── Rejected                  the vendor said no (4xx); retrying will not help

Every connector maps vendor/HTTP failures into this tree at its boundary, so the
sync layer decides retries from the type alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from core.secrets import Reference, Secret, SecretReferenceError, resolve_secret_ref  # noqa: F401  (re-exported)
from core.models import (
    BookingRecord,
    BusyInterval,
    ContactRecord,
    ConversationLog,
    CreatedEvent,
    EventRequest,
    Opportunity,
    OutboundSMS,
    SentSMS,
    TranscriptLine,
)


class ConnectorError(Exception):
    """Base of every failure a connector reports."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RateLimited(ConnectorError):
    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = 429) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class Transient(ConnectorError):
    pass


class Ambiguous(Transient):
    pass


class AuthExpired(ConnectorError):
    pass


class Rejected(ConnectorError):
    pass


def error_for_status(status: int, message: str, *, retry_after: float | None = None) -> ConnectorError:
    """The most specific ConnectorError for an HTTP status."""
    if status == 429:
        return RateLimited(message, retry_after=retry_after)
    if status in (401, 403):
        return AuthExpired(message, status=status)
    if status >= 500 or status == 408:
        return Transient(message, status=status)
    return Rejected(message, status=status)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


# Secrets (env:NAME / file:PATH, never inline) are resolved by core.secrets; re-exported for connectors.
class ConnectorConfig(BaseModel):
    """Base of every connector's configuration model (one per connector module)."""

    model_config = ConfigDict(extra="forbid")

    type: str
    base_url: str | None = None


# --- calendar helpers --------------------------------------------------------------------

def query_windows(start: datetime, end: datetime, span: timedelta) -> Iterator[tuple[datetime, datetime]]:
    """[start, end) cut into spans a vendor's free/busy query accepts."""
    while start < end:
        stop = min(start + span, end)
        yield start, stop
        start = stop


def merged_busy(intervals: list[BusyInterval]) -> list[BusyInterval]:
    """Sorted, with overlaps and the seams between query windows joined."""
    merged: list[BusyInterval] = []
    for interval in sorted(intervals, key=lambda i: i.start):
        if merged and interval.start <= merged[-1].end:
            merged[-1] = BusyInterval(start=merged[-1].start, end=max(merged[-1].end, interval.end))
        else:
            merged.append(interval)
    return merged


# --- protocols -------------------------------------------------------------------------

@runtime_checkable
class Connector(Protocol):
    config_model: ClassVar[type[ConnectorConfig]]
    role: ClassVar[str]  # "sms" | "crm" | "calendar"


@runtime_checkable
class SMSProvider(Protocol):
    def send(self, message: OutboundSMS) -> SentSMS:
        """Send one SMS; return the provider's id and initial status."""
        ...

    def find_sent(self, message: OutboundSMS, *, known_ids: frozenset[str]) -> SentSMS | None:
        """The provider's record of `message` if an earlier, unanswered send created it (ids in `known_ids`
        are other texts we recorded); None when the provider has no such message."""
        ...

    def line_type(self, number: str) -> str | None:
        """The number's line type ("mobile", "landline", ...) when the provider can look it up."""
        ...

    def auth_token_for_signatures(self) -> str:
        """The secret the provider signs its webhooks with."""
        ...


@runtime_checkable
class CRMConnector(Protocol):
    def upsert_contact(self, contact: ContactRecord, *, existing_id: str | None = None) -> str:
        """Find (by phone) or create the contact; return its CRM id."""
        ...

    # `key` names the record across retries (the sync layer passes "textback:<tenant>:<kind>:<local id>:..."):
    # without `existing_id`, a record an earlier call created under the same key is found and updated instead
    # of created again, so a create whose answer was lost is not duplicated. Without a key the connector
    # derives one from what identifies the record.
    def log_conversation(self, *, contact_id: str, log: ConversationLog, existing_id: str | None = None,
                         key: str | None = None) -> str:
        """Create or update the transcript record on the contact; return its id."""
        ...

    def upsert_opportunity(self, *, contact_id: str, opportunity: Opportunity, existing_id: str | None = None,
                           key: str | None = None) -> str:
        """Create or update the deal/matter for a qualified lead; return its id."""
        ...

    def record_booking(self, *, contact_id: str, booking: BookingRecord, existing_id: str | None = None,
                       key: str | None = None) -> str:
        """Create or update the meeting for a booked appointment; return its id."""
        ...


# What an activity written before the deal was: the transcript record, one text, a booking's meeting.
ActivityKind = Literal["transcript", "message", "booking"]


@runtime_checkable
class ActivityLog(Protocol):
    """An optional CRM capability (HubSpot): each text recorded as an activity of its own besides the transcript,
    and the activities tied to the deal. The sync layer uses it where a connector has it."""

    def log_messages(self, *, contact_id: str, lines: list[TranscriptLine],
                     opportunity_id: str | None = None) -> dict[str, str]:
        """One record per line (each with a `key`), associated with the contact and the opportunity when given;
        a line whose key an earlier call already created is found, not created again. Returns key -> CRM id."""
        ...

    def link_to_opportunity(self, *, opportunity_id: str, activities: list[tuple[ActivityKind, str]]) -> None:
        """Associate activities written before the opportunity existed with it; one since deleted is skipped."""
        ...


class KeyedNote(BaseModel):
    """One conversation's transcript for a batch write: the key it is created under, its contact and deal."""

    model_config = ConfigDict(frozen=True)
    key: str
    contact_id: str
    log: ConversationLog
    opportunity_id: str | None = None


class KeyedOpportunity(BaseModel):
    """One conversation's deal for a batch write, with the key it is created under and its contact."""

    model_config = ConfigDict(frozen=True)
    key: str
    contact_id: str
    opportunity: Opportunity


class ContactTexts(BaseModel):
    """The texts of one conversation for a batch write (each line with its `key`), its contact and deal."""

    model_config = ConfigDict(frozen=True)
    contact_id: str
    lines: list[TranscriptLine]
    opportunity_id: str | None = None


@runtime_checkable
class BatchLog(Protocol):
    """An optional CRM capability (HubSpot): the per-conversation writes of many callers at once (a backlog), each
    call carrying up to 100 records, idempotent by key as the single writes are. Each returns key -> CRM id."""

    def log_conversations(self, notes: list[KeyedNote]) -> dict[str, str]:
        """Create each transcript not yet created under its key; one found under its key is updated instead."""
        ...

    def upsert_opportunities(self, opportunities: list[KeyedOpportunity]) -> dict[str, str]:
        """Create each deal not yet created under its key; one found under its key is updated instead."""
        ...

    def log_texts(self, texts: list[ContactTexts]) -> dict[str, str]:
        """log_messages for many conversations at once."""
        ...

    def link_to_opportunities(self, links: list[tuple[ActivityKind, str, str]]) -> None:
        """link_to_opportunity for many deals at once: (kind, record id, deal id)."""
        ...


@runtime_checkable
class CalendarConnector(Protocol):
    def free_busy(self, *, calendars: list[str], start: datetime, end: datetime) -> dict[str, list[BusyInterval]]:
        """Busy intervals per calendar id between start and end (live, never cached)."""
        ...

    def create_event(self, event: EventRequest) -> CreatedEvent:
        """Create the event; creating the same `event.key` twice yields one event."""
        ...

    def update_event(self, *, calendar_id: str, external_id: str, start: datetime, end: datetime,
                     timezone: str) -> None:
        """Move the event to start..end (shown in `timezone`); moving it there again changes nothing."""
        ...

    def cancel_event(self, *, calendar_id: str, external_id: str) -> None:
        """Cancel the event; cancelling one already cancelled or gone succeeds."""
        ...
