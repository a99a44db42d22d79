"""`textback demo`: missed calls carried end to end against the sandbox, told as a story.

Two businesses, the same code, different connectors chosen only in the tenants file:
Smith & Lee Law books into Google Calendar and logs to HubSpot; Rivera Family Law books
into Outlook (Microsoft Graph, tokens through msal) and logs to Clio Manage.

Everything goes through the real paths: signed Twilio webhooks over HTTP, the outbox and
Dramatiq actors (in-process worker), the official SDKs or httpx talking to the sandbox
emulators. Exit 0 only if every booking landed in both the calendar and the CRM.
"""

from __future__ import annotations

import html
import os
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import yaml
from sqlalchemy import select

from connectors.registry import validate_connector
from core.booking import candidate_starts, label
from core.config import Tenant, load_tenants
from core.store.db import Database
from core.store.migrate import upgrade
from core.store.tables import Booking
from sandbox.phone import SandboxPhone
from sandbox.stack import SandboxStack
from sync.embedded import Embedded

SCRIPT = ["Hi, it's about a custody issue with my ex", "No", "No, first time", "this is Maria Lopez", "Jordan Smith", "2"]


@dataclass(frozen=True)
class DemoBusiness:
    tenant_id: str
    name: str
    number: str
    staff: str
    caller: str
    calendar: str
    crm: str
    calendar_kind: str


BUSINESSES = (
    DemoBusiness("smith-lee-law", "Smith & Lee Law", "+15550001111", "+15550002222", "+15550103333",
                 "intake@smithlee.example", "hubspot", "google"),
    DemoBusiness("rivera-family-law", "Rivera Family Law", "+15550004444", "+15550005555", "+15550106666",
                 "consults@riveralaw.example", "clio", "outlook"),
)


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


def run_demo(*, echo: Callable[[str], None] = print) -> int:
    calendars = tuple(b.calendar for b in BUSINESSES)
    with tempfile.TemporaryDirectory(prefix="textback-demo-") as workdir, \
            SandboxStack.start(calendars=calendars) as stack:
        os.environ.update(stack.env)
        tenants_path = Path(workdir) / "tenants.yaml"
        tenants_path.write_text(yaml.safe_dump({"tenants": [demo_tenant(stack, b) for b in BUSINESSES]},
                                               sort_keys=False))
        db = Database(f"sqlite:///{Path(workdir) / 'textback.db'}")
        upgrade(db.engine)
        tenants = load_tenants(tenants_path, validate_connector=validate_connector)
        echo("textback demo: two law firms, one missed call each, everything on loopback")
        for line in stack.describe()[:5]:
            echo(f"  sandbox {line}")
        with Embedded(db=db, tenants=tenants) as textback, httpx.Client(timeout=10) as http:
            echo(f"  textback web app {textback.url}  (SQLite, in-process Dramatiq worker)")
            results = []
            for business in BUSINESSES:
                tenant = tenants.get(business.tenant_id)
                busy = _seed_busy_calendar(stack, business, tenant)
                phone = SandboxPhone(app_url=textback.url, auth_token=stack.auth_token,
                                     account_sid=stack.account_sid, twilio=stack.twilio, http=http)
                echo("")
                echo(f"━━ {business.name}: CRM {business.crm}, calendar {business.calendar_kind} "
                     f"({business.calendar} already has: Court: Doe v. Doe, {busy})")
                _story(echo, stack, textback, phone, business)
                stack.twilio.deliver_status_callbacks(http)
                textback.drain()
                results.append(_verdict(echo, stack, db, business))
        echo("")
        if all(results):
            echo("✅ Booked twice: each event is in the staff calendar and each meeting is on the CRM contact.")
            return 0
        echo("❌ A booking did not land in both the calendar and the CRM.")
        return 1


def _story(echo, stack: SandboxStack, textback: Embedded, phone: SandboxPhone, business: DemoBusiness) -> None:
    echo(f"📞 {business.caller} calls {business.number}; textback rings the staff phone {business.staff} for 18 s…")
    call_sid = "CA" + business.number[-4:] * 8
    ring = phone.ring(call_sid=call_sid, caller=business.caller, to=business.number)
    echo(f"   /twilio/voice → {ring.status_code}: {_twiml_summary(ring.text)}")
    done = phone.dial_complete(call_sid=call_sid, caller=business.caller, to=business.number, dial_status="no-answer")
    echo(f"   nobody answers (DialCallStatus=no-answer) → caller hears: {_twiml_summary(done.text)}")
    textback.drain()
    seen = _print_new_texts(echo, stack, business.caller, 0)
    for reply in SCRIPT:
        echo(f"💬 caller: {reply}")
        phone.text(caller=business.caller, to=business.number, body=reply)
        textback.drain()
        seen = _print_new_texts(echo, stack, business.caller, seen)


def _print_new_texts(echo, stack: SandboxStack, caller: str, seen: int) -> int:
    messages = stack.twilio.messages_to(caller)
    for message in messages[seen:]:
        echo("🤖 textback: " + textwrap.fill(message["body"], width=100, subsequent_indent="             "))
    return len(messages)


def _verdict(echo, stack: SandboxStack, db: Database, business: DemoBusiness) -> bool:
    with db.transaction() as session:
        booking = session.scalar(select(Booking).where(Booking.tenant_id == business.tenant_id,
                                                       Booking.status == "confirmed"))
    echo("What landed where:")
    if business.calendar_kind == "google":
        events = [e for e in stack.google.events(business.calendar) if e.get("status") != "cancelled"
                  and e.get("extendedProperties", {}).get("private", {}).get("textback_key")]
        for event in events:
            echo(f"  Google Calendar {business.calendar}: \"{event['summary']}\" {event['start']['dateTime']} "
                 f"({event['start'].get('timeZone', '')})")
        event_ids = [e["id"] for e in events]
    else:
        events = [e for e in stack.microsoft.graph.events(business.calendar) if e.get("transactionId")]
        for event in events:
            echo(f"  Outlook {business.calendar}: \"{event['subject']}\" {event['start']['dateTime']} "
                 f"({event['start'].get('timeZone', '')})")
        event_ids = [e["id"] for e in events]
    crm_ok = _show_hubspot(echo, stack) if business.crm == "hubspot" else _show_clio(echo, stack)
    return booking is not None and event_ids == [booking.external_event_id] and crm_ok


def _show_hubspot(echo, stack: SandboxStack) -> bool:
    contacts, meetings = stack.hubspot.objects("contacts"), stack.hubspot.objects("meetings")
    for contact in contacts:
        echo(f"  HubSpot contact {contact['id']}: phone {contact['properties'].get('phone')}, "
             f"lifecycle {contact['properties'].get('lifecyclestage')}")
    for kind in ("notes", "deals", "meetings"):
        for obj in stack.hubspot.objects(kind):
            linked = stack.hubspot.associations(kind, obj["id"], "contacts")
            props = obj["properties"]
            title = (props.get("dealname") or props.get("hs_meeting_title")
                     or html.unescape(props.get("hs_note_body", "").split("<br>")[0]))
            echo(f"  HubSpot {kind[:-1]} {obj['id']} (on contact {', '.join(linked)}): {title}")
    return (len(contacts) == 1 and len(meetings) == 1
            and stack.hubspot.associations("meetings", meetings[0]["id"], "contacts") == [contacts[0]["id"]])


def _show_clio(echo, stack: SandboxStack) -> bool:
    contacts = [c for c in stack.clio.records("contacts") if c.get("type") == "Person"]
    for contact in contacts:
        numbers = ", ".join(p.get("number", "") for p in contact.get("phone_numbers") or [])
        echo(f"  Clio contact {contact['id']}: {contact.get('name') or contact.get('last_name')}, {numbers}")
    for matter in stack.clio.records("matters"):
        echo(f"  Clio matter {matter['id']} ({matter.get('status')}): {matter.get('description', '')[:80]}")
    for kind in ("communications", "notes"):
        for item in stack.clio.records(kind):
            echo(f"  Clio {kind[:-1]} {item['id']}: {item.get('subject', '')}")
    entries = stack.clio.records("calendar_entries")
    for entry in entries:
        echo(f"  Clio calendar entry {entry['id']}: \"{entry.get('summary')}\" {entry.get('start_at')}")
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


def _twiml_summary(twiml: str) -> str:
    from xml.etree import ElementTree

    parts = []
    for verb in ElementTree.fromstring(twiml):
        if verb.tag == "Dial":
            parts.append(f"<Dial timeout={verb.get('timeout')}> " + ", ".join(n.text or "" for n in verb))
        elif verb.tag == "Say":
            parts.append(f"“{verb.text}”")
        else:
            parts.append(f"<{verb.tag}>")
    return " ".join(parts)
