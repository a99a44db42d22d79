"""End-to-end fixtures: the sandbox vendors, a tenants file pointed at them, textback embedded, a phone."""

from __future__ import annotations

import httpx
import pytest
import yaml

from connectors.registry import validate_connector
from core.config import load_tenants
from sandbox.phone import SandboxPhone
from sandbox.stack import SandboxStack
from sync.embedded import Embedded

BUSINESS = "+15550001111"
STAFF = "+15550002222"
CALLER = "+15550103333"
CALENDAR = "staff@smithlaw.example"


@pytest.fixture
def stack():
    with SandboxStack.start(calendars=(CALENDAR,)) as stack:
        yield stack


def tenant_yaml(stack: SandboxStack, **overrides) -> dict:
    tenant = {
        "id": "smith-law",
        "name": "Smith & Lee Law",
        "vertical": "law",
        "timezone": "America/New_York",
        "phone_numbers": [BUSINESS],
        "forward_to": [STAFF],
        "missed_call": {"mode": "dial", "ring_seconds": 18, "cooldown_hours": 24},
        "hours": {day: "08:00-20:00" for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
        "booking": {"duration_minutes": 30, "min_notice_minutes": 60, "location": "12 Main St, Springfield"},
        "connectors": stack.connectors_yaml(calendars=[CALENDAR]),
    }
    tenant.update(overrides)
    return tenant


@pytest.fixture
def tenants_path(tmp_path, stack, monkeypatch):
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tenants": [tenant_yaml(stack)]}, sort_keys=False))
    return path


@pytest.fixture
def textback(sqlite_db, tenants_path):
    tenants = load_tenants(tenants_path, validate_connector=validate_connector)
    with Embedded(db=sqlite_db, tenants=tenants) as embedded:
        yield embedded


@pytest.fixture
def phone(textback, stack):
    with httpx.Client(timeout=10) as http:
        yield SandboxPhone(app_url=textback.url, auth_token=stack.auth_token, account_sid=stack.account_sid,
                           twilio=stack.twilio, http=http)


def texts_to(stack: SandboxStack, number: str = CALLER) -> list[str]:
    return [m["body"] for m in stack.twilio.messages_to(number)]


def miss_a_call(phone: SandboxPhone, *, call_sid: str = "CA" + "1" * 32, caller: str = CALLER,
                status: str = "no-answer", duration: int = 0, answered_by: str | None = None) -> httpx.Response:
    ring = phone.ring(call_sid=call_sid, caller=caller, to=BUSINESS)
    assert ring.status_code == 200, ring.text
    return phone.dial_complete(call_sid=call_sid, caller=caller, to=BUSINESS, dial_status=status,
                               duration=duration, answered_by=answered_by)
