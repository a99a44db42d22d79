"""What one booked lead costs the store: outbox rows (by kind), database transactions, CRM contact writes.

Plays one missed call to a booking through the real webhooks, the in-process worker and the sandbox
vendors (HubSpot + Google Calendar), counting every COMMIT on the engine and every contact upsert that
reaches the HubSpot connector. Run:

    .venv/bin/python -m bench.booked_lead_cost

Its last line reads `booked_lead_cost: R outbox rows, T transactions, C contact upserts`.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

import httpx
import yaml
from sqlalchemy import event, select

from connectors import registry
from connectors.registry import validate_connector
from core.config import load_tenants
from core.store.db import Database
from core.store.migrate import upgrade
from core.store.tables import OutboxRow
from sandbox.phone import SandboxPhone
from sandbox.stack import SandboxStack
from sync.embedded import Embedded

BUSINESS, STAFF, CALLER, CALENDAR = "+15550001111", "+15550002222", "+15550103333", "staff@smithlaw.example"
REPLIES = ("It's about my divorce", "no", "no", "this is Maria Lopez", "none", "1")


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    contact_upserts = 0

    def factory(config, **injected):
        built = registry.build(config, **injected)
        if config.type != "hubspot":
            return built
        upsert = built.upsert_contact

        def counted(contact, *, existing_id=None):
            nonlocal contact_upserts
            contact_upserts += 1
            return upsert(contact, existing_id=existing_id)

        built.upsert_contact = counted
        return built

    with tempfile.TemporaryDirectory() as tmp, SandboxStack.start(calendars=(CALENDAR,)) as stack:
        import os

        os.environ.update(stack.env)
        path = Path(tmp) / "tenants.yaml"
        path.write_text(yaml.safe_dump({"tenants": [{
            "id": "smith-law", "name": "Smith & Lee Law", "vertical": "law", "timezone": "America/New_York",
            "phone_numbers": [BUSINESS], "forward_to": [STAFF],
            "hours": {d: "00:00-23:59" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
            "booking": {"duration_minutes": 30, "min_notice_minutes": 60},
            "connectors": stack.connectors_yaml(calendars=[CALENDAR])}]}))
        db = Database(f"sqlite:///{tmp}/bench.db")
        upgrade(db.engine)
        commits = 0

        @event.listens_for(db.engine, "commit")
        def _count(_conn) -> None:
            nonlocal commits
            commits += 1

        tenants = load_tenants(path, validate_connector=validate_connector)
        with Embedded(db=db, tenants=tenants, connector_factory=factory) as textback, httpx.Client(timeout=10) as http:
            phone = SandboxPhone(app_url=textback.url, auth_token=stack.auth_token, account_sid=stack.account_sid,
                                 twilio=stack.twilio, http=http)
            sid = "CA" + "1" * 32
            phone.ring(call_sid=sid, caller=CALLER, to=BUSINESS)
            before = commits
            phone.dial_complete(call_sid=sid, caller=CALLER, to=BUSINESS, dial_status="no-answer")
            textback.drain()
            first_text = commits - before
            for reply in REPLIES:
                phone.text(caller=CALLER, to=BUSINESS, body=reply)
                textback.drain()
            with db.transaction() as session:
                kinds = collections.Counter(session.scalars(select(OutboxRow.kind)))
        booked = "booked" in stack.twilio.messages_to(CALLER)[-1]["body"].lower()
        db.dispose()
    for kind, count in sorted(kinds.items()):
        print(f"  {kind:<24} {count}")
    print(f"booked: {booked}")
    print(f"first text (dial-complete webhook + its jobs): {first_text} transactions")
    print(f"booked_lead_cost: {sum(kinds.values())} outbox rows, {commits} transactions, "
          f"{contact_upserts} contact upserts")


if __name__ == "__main__":
    main()
