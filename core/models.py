"""Domain models shared by core, the connectors and the sync layer.

These are the shapes that cross the connector protocols (connectors/base.py):
a connector receives and returns them, never a vendor SDK object.
"""

from __future__ import annotations

import enum
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Direction(str, enum.Enum):
    inbound = "inbound"
    outbound = "outbound"


class BusyInterval(_Frozen):
    """A span during which a calendar is not free (timezone-aware datetimes)."""

    start: datetime
    end: datetime

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return self.start < end and start < self.end


class Slot(_Frozen):
    """A bookable span on one staff calendar."""

    calendar_id: str
    start: datetime
    end: datetime


class OutboundSMS(_Frozen):
    to: str = Field(description="E.164 recipient")
    from_: str = Field(description="E.164 sender: the tenant's number")
    body: str
    status_callback: str | None = None


class SentSMS(_Frozen):
    provider_id: str
    status: str


class ContactRecord(_Frozen):
    """What textback knows about a caller, pushed to the CRM."""

    phone: str = Field(description="E.164")
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    source: str = "Missed call text-back"


class TranscriptLine(_Frozen):
    """One text of the conversation. `key` names its message across retries (a CRM that records each text as
    an activity of its own creates it once per key); `by_staff` marks a staff reply relayed by textback."""

    at: datetime
    direction: Direction
    body: str
    key: str | None = None
    by_staff: bool = False


class ConversationLog(_Frozen):
    """The full transcript plus the answers, logged on the CRM contact."""

    title: str
    lines: list[TranscriptLine]
    answers: dict[str, str] = {}
    summary: str = ""

    def as_text(self) -> str:
        out = [self.title]
        if self.summary:
            out.append(self.summary)
        for key, value in self.answers.items():
            out.append(f"{key}: {value}")
        out.append("")
        for line in self.lines:
            who = "Caller" if line.direction is Direction.inbound else "textback"
            out.append(f"[{line.at.isoformat(timespec='minutes')}] {who}: {line.body}")
        return "\n".join(out)


class Opportunity(_Frozen):
    """A qualified lead: a HubSpot deal, a Clio matter."""

    name: str
    stage: str = "qualified"
    description: str = ""


class EventRequest(_Frozen):
    """A calendar event textback wants to exist.

    `key` is our idempotency key: creating the same key twice yields one event.
    """

    key: str
    calendar_id: str
    start: datetime
    end: datetime
    timezone: str
    summary: str
    description: str = ""
    location: str | None = None


class CreatedEvent(_Frozen):
    external_id: str
    calendar_id: str
    link: str | None = None


class BookingRecord(_Frozen):
    """A booked appointment, recorded in the CRM as a meeting/calendar entry."""

    title: str
    start: datetime
    end: datetime
    description: str = ""
    cancelled: bool = False
