"""`textback demo`: missed calls carried end to end against the sandbox, told as a story.

Two businesses, the same code, different connectors chosen only in the tenants file:
Smith & Lee Law books into Google Calendar and logs to HubSpot; Rivera Family Law books
into Outlook (Microsoft Graph, tokens through msal) and logs to Clio Manage.

Everything goes through the real paths: signed Twilio webhooks over HTTP, the outbox and
Dramatiq actors (in-process worker), the official SDKs or httpx talking to the sandbox
emulators. Exit 0 only if every booking landed in both the calendar and the CRM.

The outcomes are stored in `TEXTBACK_DATABASE_URL` when it is set (a temporary SQLite file
otherwise), so `textback report` and `textback serve`'s pages show them afterwards.
"""

from __future__ import annotations

import html
import os
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import yaml
from sqlalchemy import func, select

from connectors.registry import validate_connector
from core import redact
from core.booking import candidate_starts, label
from core.config import Tenant, load_tenants
from core.store.db import Database
from core.store.migrate import upgrade
from core.store.tables import Booking, Call, Conversation, Message
from sandbox.phone import SandboxPhone
from sandbox.stack import SandboxStack
from sync.embedded import Embedded
from webhooks import demo_files
from webhooks.simulate import spoken

SCRIPT = ["Hi, it's about a custody issue with my ex", "No", "No, first time", "this is Maria Lopez", "Jordan Smith", "2"]


@dataclass(frozen=True)
class DemoBusiness:
    tenant_id: str
    name: str
    number: str
    staff: str
    caller: str
    caller_name: str  # the story's name for the caller; textback itself knows only the number
    calendar: str
    crm: str
    calendar_kind: str


BUSINESSES = (
    DemoBusiness("smith-lee-law", "Smith & Lee Law", "+15550001111", "+15550002222", "+15550103333", "Maria Lopez",
                 "intake@smithlee.example", "hubspot", "google"),
    DemoBusiness("rivera-family-law", "Rivera Family Law", "+15550004444", "+15550005555", "+15550106666",
                 "Sam Carter", "consults@riveralaw.example", "clio", "outlook"),
)
CRM_NAMES = {"hubspot": "HubSpot", "clio": "Clio Manage"}
CALENDAR_NAMES = {"google": "Google Calendar", "outlook": "Outlook (Microsoft 365)"}


def demo_tenant(stack: SandboxStack, business: DemoBusiness) -> dict:
    return {
        "id": business.tenant_id,
        "name": business.name,
        "vertical": "law",
        "timezone": "America/New_York",
        "phone_numbers": [business.number],
        "forward_to": [business.staff],
        "contact": business.number,
        "missed_call": {"mode": "dial", "ring_seconds": 18, "delay_seconds": 0, "cooldown_hours": 24},
        "hours": {"mon": "09:00-17:00", "tue": "09:00-17:00", "wed": "09:00-17:00", "thu": "09:00-17:00",
                  "fri": "09:00-17:00", "sat": "10:00-14:00", "sun": "closed"},
        "booking": {"duration_minutes": 30, "buffer_minutes": 10, "min_notice_minutes": 120, "horizon_days": 7,
                    "location": f"{business.name}, 12 Main St, Springfield"},
        "connectors": stack.connectors_yaml(calendars=[business.calendar], crm=business.crm,
                                            calendar=business.calendar_kind),
    }


def sandbox_tenants(stack: SandboxStack) -> list[dict]:
    """The demo's two firms for `textback sandbox`: texting allowed around the clock, so a newcomer trying it
    at night is not held by quiet hours (a real tenant keeps the 8 am - 9 pm default)."""
    return [{**demo_tenant(stack, b), "quiet_hours": {"start": "00:00", "end": "23:59"}} for b in BUSINESSES]


def run_demo(*, echo: Callable[[str], None] = print, on_start: Callable[[SandboxStack], None] | None = None,
             database_url: str | None = None) -> int:
    """Tell the story; 0 only if every booking landed in both the calendar and the CRM. `on_start` sees the
    stack once it runs (the secrets test reads the credentials it must never find in the output)."""
    calendars = tuple(b.calendar for b in BUSINESSES)
    database_url = database_url or os.environ.get("TEXTBACK_DATABASE_URL")
    with tempfile.TemporaryDirectory(prefix="textback-demo-") as workdir, \
            SandboxStack.start(calendars=calendars) as stack:
        if on_start is not None:
            on_start(stack)
        os.environ.update(stack.env)
        tenants_path = Path(workdir) / "tenants.yaml"
        tenants_path.write_text(yaml.safe_dump({"tenants": [demo_tenant(stack, b) for b in BUSINESSES]},
                                               sort_keys=False))
        db = Database(database_url or f"sqlite:///{Path(workdir) / 'textback.db'}")
        upgrade(db.engine)
        if _holds_a_demo_run(db):
            echo(f"{redact.mask_url(database_url)} already holds a demo run (calls of {BUSINESSES[0].tenant_id}); the demo's callers "
                 "would be skipped for the cooldown. Point TEXTBACK_DATABASE_URL at a new database.")
            return 2
        tenants = load_tenants(tenants_path, validate_connector=validate_connector)
        echo("textback demo: two law firms each miss a call. textback texts the callers back within seconds,")
        echo("asks a few questions, books them into the firm's calendar and records everything in its CRM.")
        echo("Everything runs on this machine, against emulators of Twilio, HubSpot, Google Calendar, Clio and")
        echo("Microsoft 365 (no accounts, nothing leaves the computer).")
        with Embedded(db=db, tenants=tenants) as textback, httpx.Client(timeout=10) as http:
            results, first_text_seconds = [], []
            for business in BUSINESSES:
                tenant = tenants.get(business.tenant_id)
                busy = _seed_busy_calendar(stack, business, tenant)
                phone = SandboxPhone(app_url=textback.url, auth_token=stack.auth_token,
                                     account_sid=stack.account_sid, twilio=stack.twilio, http=http)
                echo("")
                echo(f"━━ {business.name} — uses {CRM_NAMES[business.crm]} and {CALENDAR_NAMES[business.calendar_kind]}")
                echo(f"   Its calendar {business.calendar} already has “Court: Doe v. Doe” {busy}.")
                first_text_seconds.append(_story(echo, stack, textback, phone, business))
                stack.twilio.deliver_status_callbacks(http)
                textback.drain()
                results.append(_verdict(echo, stack, db, business, tenant))
        echo("")
        echo(funnel(db, first_text_seconds))
        if database_url:
            kept = demo_files.write_tenants([demo_tenant(stack, b) for b in BUSINESSES], stack.env,
                                            demo_files.place_for(database_url))
            echo(f"The outcomes are in {redact.mask_url(database_url)}: `textback report` shows the funnel.")
            echo(f"To see them in the admin pages, with the tenants file the demo ran with ({kept.name}):")
            echo(f"  export TEXTBACK_CONFIG={kept}")
            echo("  textback admin add-user you@example.com --agency && textback serve   # then open /admin")
        if all(results):
            echo("✅ Both callers are booked: each appointment is in the firm's calendar and on the caller's CRM record.")
            return 0
        echo("❌ A booking did not land in both the calendar and the CRM.")
        return 1


def funnel(db: Database, first_text_seconds: list[float]) -> str:
    """"2 missed calls → 2 texted → 2 replied → 2 qualified → 2 booked, first text within 0.21 s ..."."""
    with db.transaction() as session:
        missed = session.scalar(select(func.count()).select_from(Call).where(Call.status == "missed")) or 0
        texted = session.scalar(select(func.count(func.distinct(Message.lead_id))).where(
            Message.direction == "outbound", Message.purpose == "first",
            Message.status.in_(("sent", "delivered")))) or 0
        replied = session.scalar(select(func.count(func.distinct(Message.lead_id))).where(
            Message.direction == "inbound")) or 0
        booked_ids = set(session.scalars(select(Booking.conversation_id).where(Booking.status == "confirmed")))
        qualified = len(booked_ids | set(session.scalars(
            select(Conversation.id).where(Conversation.outcome == "qualified"))))
    plural = "s" if missed != 1 else ""
    timing = f", first text within {max(first_text_seconds):.2f} s of the missed call" if first_text_seconds else ""
    return (f"{missed} missed call{plural} → {texted} texted → {replied} replied → {qualified} qualified → "
            f"{len(booked_ids)} booked{timing}")


def _holds_a_demo_run(db: Database) -> bool:
    with db.transaction() as session:
        return session.scalar(select(Call.id).where(Call.tenant_id.in_([b.tenant_id for b in BUSINESSES]))
                              .limit(1)) is not None


def _story(echo, stack: SandboxStack, textback: Embedded, phone: SandboxPhone, business: DemoBusiness) -> float:
    """The call and the conversation, in words; returns the seconds from the missed call to the first text."""
    who = business.caller_name.split()[0]
    echo(f"📞 {business.caller_name} ({business.caller}) calls {business.name} at {business.number}.")
    call_sid = "CA" + business.number[-4:] * 8
    ring = phone.ring(call_sid=call_sid, caller=business.caller, to=business.number)
    echo(f"   textback {spoken(ring.text)}: nobody picks up.")
    started = time.monotonic()
    done = phone.dial_complete(call_sid=call_sid, caller=business.caller, to=business.number, dial_status="no-answer")
    echo(f"   {who} hears: {spoken(done.text)}.")
    deadline = started + 30
    while not stack.twilio.messages_to(business.caller) and time.monotonic() < deadline:
        time.sleep(0.005)
    after = time.monotonic() - started
    textback.drain()
    seen = _print_new_texts(echo, stack, business.caller, 0, lead=f"{after:.2f} s later, textback texts {who}: ")
    for reply in SCRIPT:
        echo(f"💬 {who}: {reply}")
        phone.text(caller=business.caller, to=business.number, body=reply)
        textback.drain()
        seen = _print_new_texts(echo, stack, business.caller, seen)
    return after


def _print_new_texts(echo, stack: SandboxStack, caller: str, seen: int, *, lead: str = "textback: ") -> int:
    messages = stack.twilio.messages_to(caller)
    for message in messages[seen:]:
        echo("🤖 " + textwrap.fill(lead + message["body"], width=100, subsequent_indent="   "))
        lead = "textback: "
    return len(messages)


def _verdict(echo, stack: SandboxStack, db: Database, business: DemoBusiness, tenant: Tenant) -> bool:
    with db.transaction() as session:
        booking = session.scalar(select(Booking).where(Booking.tenant_id == business.tenant_id,
                                                       Booking.status == "confirmed"))
    echo("   What the firm now has:")
    if business.calendar_kind == "google":
        events = [e for e in stack.google.events(business.calendar) if e.get("status") != "cancelled"
                  and e.get("extendedProperties", {}).get("private", {}).get("textback_key")]
        for event in events:
            echo(f"   📅 Google Calendar {business.calendar}: “{event['summary']}” "
                 f"{_local(event['start'], tenant)}")
    else:
        events = [e for e in stack.microsoft.graph.events(business.calendar) if e.get("transactionId")]
        for event in events:
            echo(f"   📅 Outlook {business.calendar}: “{event['subject']}” {_local(event['start'], tenant)}")
    event_ids = [e["id"] for e in events]
    crm_ok = _show_hubspot(echo, stack) if business.crm == "hubspot" else _show_clio(echo, stack, tenant)
    return booking is not None and event_ids == [booking.external_event_id] and crm_ok


def _local(when: dict | str, tenant: Tenant) -> str:
    """A vendor's event time (Google's RFC 3339, Graph's dateTimeTimeZone, Clio's ISO) in the firm's zone."""
    if isinstance(when, dict):
        moment = datetime.fromisoformat(str(when["dateTime"]).replace("Z", "+00:00"))
        if moment.tzinfo is None:
            zone = when.get("timeZone") or "UTC"
            moment = moment.replace(tzinfo=timezone.utc if zone == "UTC" else ZoneInfo(zone))
    else:
        moment = datetime.fromisoformat(str(when).replace("Z", "+00:00"))
    return f"{label(moment, tenant.zone)} ({tenant.timezone})"


def _show_hubspot(echo, stack: SandboxStack) -> bool:
    contacts, meetings = stack.hubspot.objects("contacts"), stack.hubspot.objects("meetings")
    for contact in contacts:
        echo(f"   👤 HubSpot contact {contact['id']}: phone {contact['properties'].get('phone')}, "
             f"lifecycle stage {contact['properties'].get('lifecyclestage')}")
    for kind in ("notes", "deals", "meetings"):
        for obj in stack.hubspot.objects(kind):
            linked = stack.hubspot.associations(kind, obj["id"], "contacts")
            props = obj["properties"]
            title = (props.get("dealname") or props.get("hs_meeting_title")
                     or html.unescape(props.get("hs_note_body", "").split("<br>")[0]))
            on_deal = kind != "deals" and stack.hubspot.associations(kind, obj["id"], "deals")
            echo(f"      {kind[:-1]} {obj['id']} on that contact{' (and its deal)' if on_deal else ''}: {title}")
    texts = stack.hubspot.objects("communications")
    on_deal = [each for each in texts if stack.hubspot.associations("communications", each["id"], "deals")]
    if texts:
        echo(f"      {len(texts)} SMS logged as HubSpot communications on that contact, {len(on_deal)} on its deal")
    return (len(contacts) == 1 and len(meetings) == 1
            and stack.hubspot.associations("meetings", meetings[0]["id"], "contacts") == [contacts[0]["id"]])


def _show_clio(echo, stack: SandboxStack, tenant: Tenant) -> bool:
    contacts = [c for c in stack.clio.records("contacts") if c.get("type") == "Person"]
    for contact in contacts:
        numbers = ", ".join(p.get("number", "") for p in contact.get("phone_numbers") or [])
        echo(f"   👤 Clio contact {contact['id']}: {contact.get('name') or contact.get('last_name')}, {numbers}")
    for matter in stack.clio.records("matters"):
        area = (matter.get("practice_area") or {}).get("name") if isinstance(matter.get("practice_area"), dict) else None
        echo(f"      matter {matter['id']} ({matter.get('status')}{', ' + area if area else ''}): "
             f"{matter.get('display_number') or matter.get('description', '')[:60]}")
    for kind in ("communications", "notes"):
        for item in stack.clio.records(kind):
            echo(f"      {kind[:-1]} {item['id']}: {item.get('subject', '')}")
    entries = stack.clio.records("calendar_entries")
    for entry in entries:
        echo(f"      calendar entry {entry['id']}: “{entry.get('summary')}” {_local(entry.get('start_at'), tenant)}")
    return len(contacts) == 1 and len(entries) == 1


def _seed_busy_calendar(stack: SandboxStack, business: DemoBusiness, tenant: Tenant) -> str:
    """Staff already have a court appointment on the first open morning, so the offer must work around it."""
    earliest = datetime.now(timezone.utc) + timedelta(minutes=tenant.booking.min_notice_minutes)
    first = next(candidate_starts(hours=tenant.hours, zone=tenant.zone, settings=tenant.booking, earliest=earliest))
    end = first + timedelta(hours=2)
    if business.calendar_kind == "google":
        stack.google.add_busy(business.calendar, first, end, summary="Court: Doe v. Doe")
    else:
        stack.microsoft.graph.add_event(business.calendar, first, end, subject="Court: Doe v. Doe")
    return f"{label(first, tenant.zone)} to {end.astimezone(tenant.zone):%-I:%M %p}"
