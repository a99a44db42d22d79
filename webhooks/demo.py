"""`textback demo`: one missed call carried end to end against the sandbox, told as a story.

Everything goes through the real paths: signed Twilio webhooks over HTTP, the
outbox and Dramatiq actors (in-process worker), the official SDKs talking to
the sandbox emulators. Exit 0 only if the booking landed in both the calendar
and the CRM.
"""

from __future__ import annotations

import html
import os
import tempfile
import textwrap
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import yaml
from sqlalchemy import select

from connectors.registry import validate_connector
from core.booking import candidate_starts, label
from core.config import load_tenants
from core.store.db import Database
from core.store.migrate import upgrade
from core.store.tables import Booking
from sandbox.phone import SandboxPhone
from sandbox.stack import SandboxStack
from webhooks.embedded import Embedded

BUSINESS, STAFF, CALLER = "+15550001111", "+15550002222", "+15550103333"
CALENDAR = "intake@smithlee.example"
SCRIPT = ["Hi, it's about a custody issue with my ex", "No", "2"]


def demo_tenant(stack: SandboxStack) -> dict:
    return {
        "id": "smith-lee-law",
        "name": "Smith & Lee Law",
        "vertical": "law",
        "timezone": "America/New_York",
        "phone_numbers": [BUSINESS],
        "forward_to": [STAFF],
        "contact": "(555) 000-1111",
        "missed_call": {"mode": "dial", "ring_seconds": 18, "delay_seconds": 0, "cooldown_hours": 24},
        "hours": {"mon": "09:00-17:00", "tue": "09:00-17:00", "wed": "09:00-17:00", "thu": "09:00-17:00",
                  "fri": "09:00-17:00", "sat": "10:00-14:00", "sun": "closed"},
        "booking": {"duration_minutes": 30, "buffer_minutes": 10, "min_notice_minutes": 120, "horizon_days": 7,
                    "location": "Smith & Lee Law, 12 Main St, Springfield"},
        "connectors": stack.connectors_yaml(calendars=[CALENDAR]),
    }


def run_demo(*, echo: Callable[[str], None] = print) -> int:
    with tempfile.TemporaryDirectory(prefix="textback-demo-") as workdir, SandboxStack.start(calendars=(CALENDAR,)) as stack:
        os.environ.update(stack.env)
        tenants_path = Path(workdir) / "tenants.yaml"
        tenants_path.write_text(yaml.safe_dump({"tenants": [demo_tenant(stack)]}, sort_keys=False))
        db = Database(f"sqlite:///{Path(workdir) / 'textback.db'}")
        upgrade(db.engine)
        tenants = load_tenants(tenants_path, validate_connector=validate_connector)
        busy = _seed_busy_calendar(stack, tenants.tenants[0])
        with Embedded(db=db, tenants=tenants) as textback, httpx.Client(timeout=10) as http:
            phone = SandboxPhone(app_url=textback.url, auth_token=stack.auth_token, account_sid=stack.account_sid,
                                 twilio=stack.twilio, http=http)
            echo(f"  staff calendar {CALENDAR} already has: Court: Doe v. Doe, {busy}")
            _story(echo, stack, textback, phone, http)
            return _verdict(echo, stack, db)


def _story(echo, stack: SandboxStack, textback: Embedded, phone: SandboxPhone, http: httpx.Client) -> None:
    echo("textback demo: Smith & Lee Law (law firm, America/New_York), everything on loopback")
    for line in stack.describe()[:3]:
        echo(f"  sandbox {line}")
    echo(f"  textback web app {textback.url}  (SQLite, in-process Dramatiq worker)")
    echo("")
    echo(f"📞 {CALLER} calls {BUSINESS}; textback rings the staff phone {STAFF} for 18 s…")
    call_sid = "CA" + "d" * 32
    ring = phone.ring(call_sid=call_sid, caller=CALLER, to=BUSINESS)
    echo(f"   /twilio/voice → {ring.status_code}: {_twiml_summary(ring.text)}")
    done = phone.dial_complete(call_sid=call_sid, caller=CALLER, to=BUSINESS, dial_status="no-answer")
    echo(f"   nobody answers (DialCallStatus=no-answer) → caller hears: {_twiml_summary(done.text)}")
    textback.drain()
    seen = _print_new_texts(echo, stack, 0)
    for reply in SCRIPT:
        echo(f"💬 caller: {reply}")
        phone.text(caller=CALLER, to=BUSINESS, body=reply)
        textback.drain()
        seen = _print_new_texts(echo, stack, seen)
    stack.twilio.deliver_status_callbacks(http)
    textback.drain()


def _print_new_texts(echo, stack: SandboxStack, seen: int) -> int:
    messages = stack.twilio.messages_to(CALLER)
    for message in messages[seen:]:
        echo("🤖 textback: " + textwrap.fill(message["body"], width=100, subsequent_indent="             "))
    return len(messages)


def _verdict(echo, stack: SandboxStack, db: Database) -> int:
    with db.transaction() as session:
        booking = session.scalar(select(Booking).where(Booking.status == "confirmed"))
    events = [e for e in stack.google.events(CALENDAR) if e.get("status") != "cancelled"
              and e.get("extendedProperties", {}).get("private", {}).get("textback_key")]
    contacts = stack.hubspot.objects("contacts")
    meetings = stack.hubspot.objects("meetings")
    echo("")
    echo("What landed where:")
    for event in events:
        echo(f"  Google Calendar {CALENDAR}: \"{event['summary']}\" {event['start']['dateTime']} → "
             f"{event['end']['dateTime']} ({event['start'].get('timeZone', '')})")
    for contact in contacts:
        props = contact["properties"]
        echo(f"  HubSpot contact {contact['id']}: phone {props.get('phone')}, lifecycle {props.get('lifecyclestage')}")
    for kind in ("notes", "deals", "meetings"):
        for obj in stack.hubspot.objects(kind):
            linked = stack.hubspot.associations(kind, obj["id"], "contacts")
            title = (obj["properties"].get("dealname") or obj["properties"].get("hs_meeting_title")
                     or html.unescape(obj["properties"].get("hs_note_body", "").split("<br>")[0]))
            echo(f"  HubSpot {kind[:-1]} {obj['id']} (on contact {', '.join(linked)}): {title}")
    booked = (booking is not None and len(events) == 1 and events[0]["id"] == booking.external_event_id
              and len(contacts) == 1 and len(meetings) == 1
              and stack.hubspot.associations("meetings", meetings[0]["id"], "contacts") == [contacts[0]["id"]])
    echo("")
    echo("✅ Booked: the event is in the staff calendar and the meeting is on the CRM contact." if booked
         else "❌ The booking did not land in both the calendar and the CRM.")
    return 0 if booked else 1


def _seed_busy_calendar(stack: SandboxStack, tenant) -> str:
    """Staff already have a court appointment on the first open morning, so the offer must work around it."""
    earliest = datetime.now(timezone.utc) + timedelta(minutes=tenant.booking.min_notice_minutes)
    first = next(candidate_starts(hours=tenant.hours, zone=tenant.zone, settings=tenant.booking, earliest=earliest))
    stack.google.add_busy(CALENDAR, first, first + timedelta(hours=2), summary="Court: Doe v. Doe")
    return f"{label(first, tenant.zone)} to {first.astimezone(tenant.zone) + timedelta(hours=2):%-I:%M %p}"


def _twiml_summary(twiml: str) -> str:
    from xml.etree import ElementTree

    root = ElementTree.fromstring(twiml)
    parts = []
    for verb in root:
        if verb.tag == "Dial":
            parts.append(f"<Dial timeout={verb.get('timeout')}> " + ", ".join(n.text or "" for n in verb))
        elif verb.tag == "Say":
            parts.append(f"“{verb.text}”")
        else:
            parts.append(f"<{verb.tag}>")
    return " ".join(parts)
