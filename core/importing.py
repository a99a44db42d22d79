"""Past missed calls from a CSV file: read and validated whole, then recorded once each.

The file is a business's phone log: a header line, then one call per line. Columns are found by
name, case and punctuation ignored, so Twilio's call-log export is read as it is:

    caller   caller, from, phone, phone number, number           required
    time     time, start time, date created, date, called at     required; without a zone: the tenant's
    name     name, caller name (or first name + last name)       optional
    notes    notes, note, comments                               optional
    sid      call sid, sid                                       optional; a line without one is named by
                                                                 its caller and time
    status   status, call status                                 optional; answered calls are skipped
    direction                                                    optional; outbound calls are skipped
    to       to, called                                          optional; must be one of the tenant's numbers

Every line is checked before anything is written (`read_past_calls`): a bad line is reported with
its number and what is wrong, and one bad line stops the import. Lines that are valid but not
missed calls (answered, outbound, a withheld caller id) and the same call twice are skipped and
counted. Recording (`record_past_calls`) is idempotent: a call already imported is found by its
sid, so an interrupted import run again adds only what is missing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

import dateparser
import phonenumbers
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import Tenant, to_e164
from core.outbox import Kind, Pending
from core.store.repo import lead_for
from core.store.tables import Call, Conversation, Lead
from core.textback import WITHHELD_CALLER_IDS, reported_missed_call

COLUMNS: dict[str, tuple[str, ...]] = {
    "caller": ("caller", "from", "phone", "phonenumber", "number", "callernumber", "fromnumber"),
    "time": ("time", "starttime", "datecreated", "date", "calledat", "datetime", "startdate"),
    "name": ("name", "callername", "fullname"),
    "first_name": ("firstname",),
    "last_name": ("lastname",),
    "notes": ("notes", "note", "comment", "comments"),
    "sid": ("callsid", "sid"),
    "status": ("status", "callstatus"),
    "direction": ("direction",),
    "to": ("to", "called", "tonumber"),
}
MISSED = frozenset({"noanswer", "busy", "failed", "canceled", "cancelled", "missed", "voicemail"})
ANSWERED = frozenset({"completed", "inprogress", "answered", "ringing", "queued", "initiated"})
NOTES_LIMIT = 5000
SOURCE = "import"


@dataclass(frozen=True)
class PastCall:
    line: int
    sid: str
    caller: str  # E.164
    called: str
    at: datetime  # UTC
    first_name: str | None = None
    last_name: str | None = None
    notes: str | None = None


@dataclass(frozen=True)
class BadLine:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class ReadResult:
    calls: list[PastCall] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> lines


def read_past_calls(text: str, *, tenant: Tenant, now: datetime) -> ReadResult:
    """Every line of the file, checked; `bad` is empty when the file may be imported."""
    result = ReadResult()
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = next(reader, None)
    if header is None:
        result.bad.append(BadLine(1, "the file is empty; the first line names the columns (caller, time, ...)"))
        return result
    columns = _columns(header)
    for needed in ("caller", "time"):
        if needed not in columns:
            result.bad.append(BadLine(1, f"no {needed} column; name one of: {', '.join(COLUMNS[needed])}"))
    if result.bad:
        return result
    seen: set[str] = set()
    region = _region(tenant)
    for number, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        values = {name: row[index].strip() if index < len(row) else "" for name, index in columns.items()}
        outcome = _past_call(number, values, tenant=tenant, region=region, now=now)
        if isinstance(outcome, BadLine):
            result.bad.append(outcome)
        elif isinstance(outcome, str):
            result.skipped[outcome] += 1
        elif outcome.sid in seen:
            result.skipped["the same call twice in the file"] += 1
        else:
            seen.add(outcome.sid)
            result.calls.append(outcome)
    return result


def record_past_calls(session: Session, *, tenant: Tenant, calls: list[PastCall], now: datetime,
                      pending: Pending, text_back: bool = False) -> int:
    """Record the calls not recorded before; returns how many are new. Without `text_back` nobody is texted:
    each new caller is pushed to the CRM (with their notes, when the file has some). With it every call goes
    through the missed-call policy (opt-outs, cooldown, quiet hours) like a call that just happened."""
    sids = [_call_sid(tenant, call) for call in calls]
    known = set(session.scalars(select(Call.call_sid).where(Call.call_sid.in_(
        [f"api:{tenant.id}:{sid}" for sid in sids] + sids))))
    added = 0
    for call, sid in zip(calls, sids):
        if sid in known or f"api:{tenant.id}:{sid}" in known:
            continue
        added += 1
        if text_back:
            outcome = reported_missed_call(session, tenant=tenant, idempotency_key=sid, caller=call.caller,
                                           called=call.called, occurred_at=call.at, now=now, pending=pending)
            row = session.get(Call, outcome.call_id)
            row.source = SOURCE
            lead_id = row.lead_id
        else:
            lead_id = lead_for(session, tenant_id=tenant.id, phone=call.caller).id
            session.add(Call(tenant_id=tenant.id, call_sid=sid, lead_id=lead_id, from_number=call.caller,
                             to_number=call.called, status="missed", dial_status="imported", skip_reason="imported",
                             source=SOURCE, created_at=call.at))
        _name(session, tenant, lead_id, call)
        _push(session, tenant, lead_id, call, pending, text_back=text_back)
    return added


def _push(session: Session, tenant: Tenant, lead_id: int | None, call: PastCall, pending: Pending, *,
          text_back: bool) -> None:
    if lead_id is None:
        return
    if call.notes:
        # The notes reach the CRM as a closed conversation's record on the contact.
        conversation = Conversation(tenant_id=tenant.id, lead_id=lead_id, business_number=call.called,
                                    playbook=tenant.conversation_playbook().id, state="closed", outcome="imported",
                                    answers={"notes": call.notes}, offered_slots=[], created_at=call.at)
        session.add(conversation)
        session.flush()
        pending.add(session, tenant_id=tenant.id, kind=Kind.crm_log_conversation,
                    key=f"import:{tenant.id}:notes:{conversation.id}", payload={"conversation_id": conversation.id})
    if not text_back:  # the missed-call path writes its own contact push
        pending.add(session, tenant_id=tenant.id, kind=Kind.crm_sync_lead, key=f"import:{tenant.id}:lead:{lead_id}",
                    payload={"lead_id": lead_id})


def _name(session: Session, tenant: Tenant, lead_id: int | None, call: PastCall) -> None:
    lead = session.get(Lead, lead_id) if lead_id is not None else None
    if lead is not None and call.first_name and not lead.first_name:
        lead.first_name, lead.last_name = call.first_name, call.last_name or lead.last_name


def _past_call(line: int, values: dict[str, str], *, tenant: Tenant, region: str,
               now: datetime) -> PastCall | BadLine | str:
    direction = _key(values.get("direction", ""))
    if direction and not direction.startswith("inbound"):
        return "outbound calls"
    status = _key(values.get("status", ""))
    if status in ANSWERED:
        return "answered calls"
    if status and status not in MISSED:
        return BadLine(line, f"status {values['status']!r} is not a call status (no-answer, busy, failed, "
                             "canceled, completed)")
    raw_caller = values["caller"]
    if not raw_caller or raw_caller.strip().lower() in WITHHELD_CALLER_IDS or _key(raw_caller) in (
            "private", "withheld", "blocked"):
        return "withheld caller ids"
    caller = _e164(raw_caller, region)
    if caller is None:
        return BadLine(line, f"caller {raw_caller!r} is not a phone number")
    if not values["time"]:
        return BadLine(line, "no time; give when the call came in (2031-03-04 15:02, or with its zone)")
    at = dateparser.parse(values["time"], settings={
        "TIMEZONE": tenant.timezone, "RETURN_AS_TIMEZONE_AWARE": True, "TO_TIMEZONE": "UTC",
        "RELATIVE_BASE": now.replace(tzinfo=None), "DATE_ORDER": "YMD" if re.match(r"\d{4}", values["time"]) else "MDY"})
    if at is None:
        return BadLine(line, f"time {values['time']!r} is not a date and time")
    if at > now:
        return BadLine(line, f"time {values['time']!r} is in the future")
    called = _called(values.get("to", ""), tenant, region)
    if called is None:
        return BadLine(line, f"to {values['to']!r} is not one of {tenant.id}'s numbers "
                             f"({', '.join(tenant.phone_numbers)})")
    notes = values.get("notes") or None
    if notes and len(notes) > NOTES_LIMIT:
        return BadLine(line, f"notes are {len(notes)} characters long; at most {NOTES_LIMIT}")
    first, last = _names(values)
    sid = values.get("sid") or "import:" + hashlib.sha256(f"{caller}|{at.isoformat()}".encode()).hexdigest()[:24]
    return PastCall(line=line, sid=sid, caller=caller, called=called, at=at.astimezone(timezone.utc),
                    first_name=first, last_name=last, notes=notes)


def _columns(header: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for index, title in enumerate(header):
        for name, aliases in COLUMNS.items():
            if _key(title) in aliases and name not in found:
                found[name] = index
    return found


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _region(tenant: Tenant) -> str:
    for number in tenant.phone_numbers:
        try:
            region = phonenumbers.region_code_for_number(phonenumbers.parse(number))
        except phonenumbers.NumberParseException:
            continue
        if region:
            return region
    return "US"


def _e164(raw: str, region: str) -> str | None:
    try:
        return to_e164(raw, region=region)
    except ValueError:
        return None


def _called(raw: str, tenant: Tenant, region: str) -> str | None:
    if not raw:
        return tenant.phone_numbers[0]
    number = _e164(raw, region)
    return number if number in tenant.phone_numbers else None


def _names(values: dict[str, str]) -> tuple[str | None, str | None]:
    if values.get("first_name"):
        return values["first_name"], values.get("last_name") or None
    parts = (values.get("name") or "").split(None, 1)
    return (parts[0] if parts else None), (parts[1] if len(parts) > 1 else None)


def _call_sid(tenant: Tenant, call: PastCall) -> str:
    return call.sid if call.sid.startswith("CA") else f"import:{tenant.id}:{call.sid.removeprefix('import:')}"
