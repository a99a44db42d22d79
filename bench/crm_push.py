"""CRM pushes at the quota: N leads (contact + transcript + deal) to the sandbox HubSpot, its limits on.

Writes N leads, each with a conversation, and their three CRM jobs (crm_sync_lead,
crm_log_conversation, crm_upsert_opportunity) to the outbox, then lets a Dramatiq worker with
`--workers` threads on a real Redis broker push them, every connector counting its requests on the
shared Redis meter. Reports the elapsed time against the quota floor (the requests HubSpot answered
÷ the budget per second), the 429s HubSpot answered and the duplicate records it holds. Run:

    .venv/bin/python -m bench.crm_push --leads 5000 --budget 100 --redis redis://127.0.0.1:6379/14

The Redis database given is flushed. Its last line reads
`crm_push: ratio R to the quota floor, N 429s, D duplicates`.
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time
from pathlib import Path

import dramatiq
import redis
import yaml
from sqlalchemy import func, select

from connectors.registry import validate_connector
from core.config import Settings, load_tenants
from core.outbox import Kind, Pending
from core.store.db import Database
from core.store.migrate import upgrade
from core.store.repo import lead_for
from core.store.tables import Conversation, Message, OutboxRow
from sandbox.stack import SandboxStack
from sync import actors
from sync.broker import make_broker
from sync.quotas import RedisMeter
from sync.runtime import Runtime

BUSINESS, CALENDAR = "+15550001111", "staff@smithlaw.example"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=5000)
    parser.add_argument("--budget", type=int, default=100, help="HubSpot requests per 10 s (100 or 190)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--redis", default=os.environ.get("TEXTBACK_TEST_REDIS_URL", "redis://127.0.0.1:6379/14"))
    args = parser.parse_args()
    redis.Redis.from_url(args.redis).flushdb()

    with tempfile.TemporaryDirectory() as tmp, SandboxStack.start(calendars=(CALENDAR,)) as stack:
        os.environ.update(stack.env)
        stack.hubspot.access.burst_limit = args.budget
        path = Path(tmp) / "tenants.yaml"
        connectors = stack.connectors_yaml(calendars=[CALENDAR])
        connectors["crm"]["requests_per_10s"] = args.budget
        path.write_text(yaml.safe_dump({"tenants": [{
            "id": "smith-law", "name": "Smith & Lee Law", "vertical": "law", "timezone": "America/New_York",
            "phone_numbers": [BUSINESS], "forward_to": ["+15550002222"], "contact": "(555) 000-1111",
            "hours": {day: "09:00-17:00" for day in ("mon", "tue", "wed", "thu", "fri")},
            "connectors": connectors}]}))
        db = Database(f"sqlite:///{tmp}/bench.db")
        upgrade(db.engine)
        broker = make_broker(args.redis)
        actors.bind(broker)
        runtime = Runtime(settings=Settings(database_url=db.url, redis_url=args.redis), db=db,
                          tenants=load_tenants(path, validate_connector=validate_connector),
                          meter=RedisMeter.for_url(args.redis))
        runtime.dispatcher = actors.DramatiqDispatcher(runtime)
        actors.configure(runtime)
        ids = _write_leads(runtime, args.leads)
        worker = dramatiq.Worker(broker, worker_threads=args.workers, worker_timeout=100)
        started = time.monotonic()
        worker.start()
        runtime.dispatch(ids)
        try:
            _wait(runtime, len(ids))
        finally:
            elapsed = time.monotonic() - started
            worker.stop()
            broker.close()
            runtime.close()
        requests = stack.hubspot.access.admitted
        refused = len(stack.hubspot.access.refused)
        duplicates = _duplicates(stack, args.leads)
    floor = requests / (args.budget / 10)
    print(f"{args.leads} leads, {len(ids)} jobs, {args.workers} workers, budget {args.budget}/10 s")
    print(f"HubSpot answered {requests} requests ({requests / args.leads:.2f} per lead) in {elapsed:.1f} s; "
          f"quota floor {floor:.1f} s")
    print(f"crm_push: ratio {elapsed / floor:.2f} to the quota floor, {refused} 429s, {duplicates} duplicates")


def _write_leads(runtime: Runtime, count: int) -> list[int]:
    pending = Pending()
    with runtime.db.transaction() as session:
        for n in range(count):
            lead = lead_for(session, tenant_id="smith-law", phone=f"+1555{2000000 + n:07d}")
            conversation = Conversation(tenant_id="smith-law", lead_id=lead.id, business_number=BUSINESS,
                                        playbook="law", state="closed", outcome="qualified",
                                        answers={"matter_type": "family", "urgent": False})
            session.add(conversation)
            session.flush()
            session.add(Message(tenant_id="smith-law", conversation_id=conversation.id, lead_id=lead.id,
                                business_number=BUSINESS, direction="inbound", body="It's about my divorce",
                                status="received"))
            for kind, payload, key in ((Kind.crm_sync_lead, {"lead_id": lead.id}, f"lead:{lead.id}"),
                                       (Kind.crm_log_conversation, {"conversation_id": conversation.id},
                                        f"log:{conversation.id}"),
                                       (Kind.crm_upsert_opportunity, {"conversation_id": conversation.id},
                                        f"deal:{conversation.id}")):
                pending.add(session, tenant_id="smith-law", kind=kind, key=f"bench:{key}", payload=payload)
    return pending.ids


def _wait(runtime: Runtime, jobs: int) -> None:
    while True:
        with runtime.db.transaction() as session:
            done = session.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.status != "pending"))
        if done >= jobs:
            return
        time.sleep(0.2)


def _duplicates(stack: SandboxStack, leads: int) -> int:
    """Records beyond one contact, one note and one deal per lead."""
    contacts = collections.Counter(c["properties"].get("phone") for c in stack.hubspot.objects("contacts"))
    extra = sum(n - 1 for n in contacts.values())
    for object_type in ("notes", "deals"):
        keys = collections.Counter(r["properties"].get("textback_key") for r in stack.hubspot.objects(object_type))
        extra += sum(n - 1 for n in keys.values())
    return extra


if __name__ == "__main__":
    main()
