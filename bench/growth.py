"""Growth: hot-path query plans and times, and web/worker memory, with 1k, 10k and 100k stored leads.

Seeds the store with N leads, each with a missed call, a conversation, three messages and two finished
outbox rows (bulk inserts, the shape a year of missed calls leaves), then for each N:
  - EXPLAINs every query the first text and a reply run (lead by number, call by SID, the cooldown and
    answered-since checks, the open conversation, messages by SID and by conversation, the relay's scan)
    and times each (median of 50), flagging any plan that scans a whole table;
  - starts `textback serve` + `textback worker` on that store, plays 200 missed calls from new callers at
    20/s, and reads both processes' resident memory (VmRSS).
Run (about 3 minutes):

    .venv/bin/python -m bench.growth                    # SQLite and PostgreSQL
    .venv/bin/python -m bench.growth --stores sqlite --sizes 1000,10000

Its last line reads `growth: at 100000 leads, N full scans, web RSS X MB, worker RSS Y MB (store)`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import and_, func, insert, or_, select, text

from bench.first_text import (Services, database, offer, shared_services, signed_dial_complete, textback,
                              Caller)
from core.store.db import Database
from core.store.migrate import upgrade
from core.store.tables import Call, Conversation, Lead, Message, OutboxRow

TENANT, BUSINESS = "bench-law", "+15550001111"
T0 = datetime(2031, 1, 6, 15, 0, tzinfo=timezone.utc)


def seed(db: Database, start: int, stop: int) -> None:
    """Leads start..stop-1, each with one call, one conversation, three messages and two done outbox rows."""
    chunk = 5000
    with db.engine.begin() as connection:
        # New ids follow whatever is there (the played calls add rows between sizes).
        lead_base, call_base, conversation_base = (
            (connection.scalar(select(func.max(table.id))) or 0) + 1 - start for table in (Lead, Call, Conversation))
        for first in range(start, stop, chunk):
            ids = range(first, min(stop, first + chunk))
            when = [T0 + timedelta(minutes=i) for i in ids]
            connection.execute(insert(Lead), [
                {"id": lead_base + i, "tenant_id": TENANT, "phone": f"+1777{i:07d}", "created_at": w, "updated_at": w}
                for i, w in zip(ids, when)])
            connection.execute(insert(Call), [
                {"id": call_base + i, "tenant_id": TENANT, "call_sid": f"CAseed{i:026d}", "lead_id": lead_base + i,
                 "from_number": f"+1777{i:07d}", "to_number": BUSINESS, "status": "missed", "texted": True,
                 "created_at": w, "updated_at": w} for i, w in zip(ids, when)])
            connection.execute(insert(Conversation), [
                {"id": conversation_base + i, "tenant_id": TENANT, "lead_id": lead_base + i, "call_id": call_base + i, "business_number": BUSINESS,
                 "playbook": "law", "state": "closed", "answers": {}, "offered_slots": [], "created_at": w,
                 "updated_at": w, "closed_at": w} for i, w in zip(ids, when)])
            connection.execute(insert(Message), [
                {"tenant_id": TENANT, "conversation_id": conversation_base + i, "lead_id": lead_base + i, "business_number": BUSINESS,
                 "direction": direction, "body": "seeded", "provider_sid": f"SM{n}{i:031d}", "status": "delivered",
                 "purpose": "reply", "created_at": w}
                for i, w in zip(ids, when) for n, direction in enumerate(("outbound", "inbound", "outbound"))])
            connection.execute(insert(OutboxRow), [
                {"tenant_id": TENANT, "kind": kind, "payload": {}, "idempotency_key": f"seed:{kind}:{i}",
                 "status": "done", "attempts": 1, "created_at": w, "done_at": w}
                for i, w in zip(ids, when) for kind in ("send_sms", "crm_sync_lead")])
        if db.engine.dialect.name == "postgresql":
            for table in ("leads", "calls", "conversations", "messages", "outbox"):
                connection.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                        f"(SELECT max(id) FROM {table}))"))
                connection.execute(text(f"ANALYZE {table}"))
        else:
            connection.execute(text("ANALYZE"))


def hot_queries(db: Database, n: int) -> dict[str, object]:
    """The statements the first text and a reply run, with values from the middle of the data."""
    middle, now = n // 2, T0 + timedelta(minutes=n)
    with db.engine.connect() as connection:
        lead = connection.scalar(select(Lead.id).where(Lead.phone == f"+1777{middle:07d}"))
        conversation = connection.scalar(select(Conversation.id).where(Conversation.lead_id == lead))
    return {
        "lead by number": select(Lead).where(Lead.tenant_id == TENANT, Lead.phone == f"+1777{middle:07d}"),
        "call by SID": select(Call).where(Call.call_sid == f"CAseed{middle:026d}"),
        "cooldown (texted calls of the lead)": select(Call.id).where(
            Call.lead_id == lead, Call.texted.is_(True), Call.created_at >= now - timedelta(hours=24)).limit(1),
        "answered since (calls of the lead)": select(Call.id).where(
            Call.lead_id == lead, Call.status == "answered", Call.created_at >= T0).limit(1),
        "open conversation of the lead": select(Conversation).where(
            Conversation.lead_id == lead, Conversation.state.not_in(["closed", "opted_out"])),
        "message by provider SID": select(Message).where(Message.provider_sid == f"SM0{middle:031d}"),
        "transcript of a conversation": select(Message).where(Message.conversation_id == conversation).order_by(Message.id),
        "sent ids of the lead": select(Message.provider_sid).where(
            Message.tenant_id == TENANT, Message.lead_id == lead, Message.direction == "outbound"),
        "outbox row by key": select(OutboxRow).where(OutboxRow.idempotency_key == f"seed:send_sms:{middle}"),
        "relay scan (pending, due, unclaimed)": select(OutboxRow.id).where(
            OutboxRow.status == "pending", or_(OutboxRow.not_before.is_(None), OutboxRow.not_before <= now),
            or_(OutboxRow.claimed_until.is_(None), OutboxRow.claimed_until < now),
            or_(and_(OutboxRow.enqueued_at.is_(None), OutboxRow.created_at <= now))).limit(500),
    }


def plan(db: Database, statement) -> tuple[str, bool]:
    compiled = statement.compile(db.engine, compile_kwargs={"literal_binds": True})
    with db.engine.connect() as connection:
        if db.engine.dialect.name == "sqlite":
            rows = connection.execute(text(f"EXPLAIN QUERY PLAN {compiled}")).all()
            lines = [row[-1] for row in rows]
            full = any(line.startswith("SCAN") and "USING" not in line for line in lines)
        else:
            lines = [row[0] for row in connection.execute(text(f"EXPLAIN {compiled}")).all()]
            full = any("Seq Scan" in line for line in lines)
    return " / ".join(line.strip() for line in lines), full


def time_query(db: Database, statement, repeat: int = 50) -> float:
    times = []
    with db.engine.connect() as connection:
        for _ in range(repeat):
            started = time.perf_counter()
            connection.execute(statement).all()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def play_calls(services: Services, url: str, pids: tuple[int, int], count: int = 200, rate: float = 20) -> tuple[float, float]:
    requests = [signed_dial_complete(url, services.auth_token, services.account_sid, Caller.next())
                for _ in range(count)]
    asyncio.run(offer(url + "/twilio/voice/dial-complete", requests, rate))
    time.sleep(2)
    return rss_mb(pids[0]), rss_mb(pids[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--stores", default="sqlite,postgres")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    report, last = [], ""
    workdir = Path(tempfile.mkdtemp(prefix="textback-growth-"))
    with shared_services(workdir) as services:
        for store in args.stores.split(","):
            with database(store, workdir) as url:
                db = Database(url)
                upgrade(db.engine)
                seeded = 0
                for size in sizes:
                    seed(db, seeded, size)
                    seeded = size
                    full_scans = 0
                    for name, statement in hot_queries(db, size).items():
                        shape, full = plan(db, statement)
                        full_scans += full
                        took = time_query(db, statement)
                        report.append(f"| {store} | {size:,} | {name} | {took:.2f} ms | {'FULL SCAN ' if full else ''}"
                                      f"`{shape[:140]}` |")
                    with textback(services, url, workdir, threads=8) as (app_url, web_pid, worker_pid):
                        web, worker = play_calls(services, app_url, (web_pid, worker_pid))
                    print(f"{store} {size:>7,} leads: {full_scans} full scans, web RSS {web:.0f} MB, "
                          f"worker RSS {worker:.0f} MB", flush=True)
                    report.append(f"| {store} | {size:,} | **RSS after 200 calls** | web {web:.0f} MB, "
                                  f"worker {worker:.0f} MB | |")
                    last = (f"growth: at {size} leads, {full_scans} full scans, web RSS {web:.0f} MB, "
                            f"worker RSS {worker:.0f} MB ({store})")
                db.dispose()
    print("| store | leads | query | median | plan |\n|---|---|---|---|---|")
    print("\n".join(report))
    print(last)


if __name__ == "__main__":
    main()
