"""A textback whose tenant and clock each test chooses, for the policy and compliance tables."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import httpx
import yaml
from sqlalchemy import select

from connectors.registry import validate_connector
from core.config import load_tenants
from core.store.tables import Call, Lead, Message, OutboxRow
from sandbox.phone import SandboxPhone
from sandbox.stack import SandboxStack
from sync.relay import relay_pending
from tests.webhooks.conftest import BUSINESS, CALLER, tenant_yaml
from sync.embedded import Embedded


class Clock:
    """Real time until a test sets it; then it only moves when told."""

    def __init__(self) -> None:
        self.fixed: datetime | None = None

    def __call__(self) -> datetime:
        return self.fixed or datetime.now(timezone.utc)

    def set(self, when: datetime) -> None:
        self.fixed = when.astimezone(timezone.utc)

    def advance(self, **delta: float) -> None:
        self.fixed = self() + timedelta(**delta)


@dataclass
class World:
    textback: Embedded
    phone: SandboxPhone
    stack: SandboxStack
    clock: Clock

    def miss(self, *, caller: str = CALLER, sid: str = "CA" + "1" * 32, status: str = "no-answer",
             duration: int = 0, answered_by: str | None = None) -> httpx.Response:
        self.phone.ring(call_sid=sid, caller=caller, to=BUSINESS)
        response = self.phone.dial_complete(call_sid=sid, caller=caller, to=BUSINESS, dial_status=status,
                                            duration=duration, answered_by=answered_by)
        self.textback.drain()
        return response

    def text(self, body: str, *, caller: str = CALLER) -> httpx.Response:
        response = self.phone.text(caller=caller, to=BUSINESS, body=body)
        self.textback.drain()
        return response

    def later(self, **delta: float) -> None:
        """Time passes; the relay runs rows that became due."""
        self.clock.advance(**delta)
        relay_pending(self.textback.runtime, self.textback.runtime.dispatcher, grace=timedelta(0))
        self.textback.drain()

    def texts(self, number: str = CALLER) -> list[str]:
        return [m["body"] for m in self.stack.twilio.messages_to(number)]

    def skip_reasons(self) -> list[str | None]:
        with self.textback.runtime.db.transaction() as s:
            return list(s.scalars(select(Call.skip_reason).order_by(Call.id)))

    def lead(self, phone: str = CALLER) -> Lead:
        with self.textback.runtime.db.transaction() as s:
            return s.scalar(select(Lead).where(Lead.phone == phone))

    def update_lead(self, phone: str = CALLER, **values) -> None:
        from core.store.repo import lead_for

        with self.textback.runtime.db.transaction() as s:
            lead = lead_for(s, tenant_id="smith-law", phone=phone)
            for name, value in values.items():
                setattr(lead, name, value)

    def outbound(self) -> list[Message]:
        with self.textback.runtime.db.transaction() as s:
            return list(s.scalars(select(Message).where(Message.direction == "outbound").order_by(Message.id)))

    def rows(self, kind: str) -> list[OutboxRow]:
        with self.textback.runtime.db.transaction() as s:
            return list(s.scalars(select(OutboxRow).where(OutboxRow.kind == kind).order_by(OutboxRow.id)))


@contextlib.contextmanager
def world(*, stack: SandboxStack, db, tmp_path, monkeypatch, connector_factory=None, **tenant_overrides):
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    tenant = tenant_yaml(stack)
    for key, value in tenant_overrides.items():
        if isinstance(value, dict) and isinstance(tenant.get(key), dict):
            tenant[key] = {**tenant[key], **value}
        else:
            tenant[key] = value
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tenants": [tenant]}, sort_keys=False))
    clock = Clock()
    tenants = load_tenants(path, validate_connector=validate_connector)
    factory = {"connector_factory": connector_factory} if connector_factory else {}
    with Embedded(db=db, tenants=tenants, clock=clock, relay_interval=3600, **factory) as textback, \
            httpx.Client(timeout=10) as http:
        phone = SandboxPhone(app_url=textback.url, auth_token=stack.auth_token, account_sid=stack.account_sid,
                             twilio=stack.twilio, http=http)
        yield World(textback=textback, phone=phone, stack=stack, clock=clock)
