"""How long `textback report` takes at 1k, 10k and 100k missed calls (outcomes query + report build).

Seeds a database with N missed calls across 10 tenants, shaped like real traffic: 80% texted,
half of those reply, a third of the replies qualify, two thirds of those book, 10% skipped for a
reason, and a delivery failure now and then; each call carries its lead, conversation, 1-4
messages and its outbox rows (about 7 rows per call). Then times `missed_call_outcomes` +
`build_report` over the whole window, best of three. Run:

    .venv/bin/python -m bench.report --calls 1000 10000 100000 [--postgres URL]

Each line reads `report: N calls, seed S s, report R s (R/N µs per call)`.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import create_engine, insert, text

from core.outcomes import missed_call_outcomes
from core.report import build_report
from core.store.db import Database
from core.store.migrate import upgrade
from core.store.tables import Booking, Call, Conversation, Lead, Message, OutboxRow

T0 = datetime(2031, 1, 5, 9, tzinfo=timezone.utc)
SKIPS = ("cooldown", "opted_out", "invalid_number", "active_conversation")


def seed(db: Database, calls: int) -> None:
    """Bulk inserts in id order (ids given, so the rows can reference each other without a round trip)."""
    leads, rows_calls, conversations, messages, outbox, bookings = [], [], [], [], [], []
    message_id = outbox_id = booking_id = 0
    for n in range(1, calls + 1):
        tenant, at = f"tenant-{n % 10}", T0 + timedelta(seconds=37 * n)
        skip = SKIPS[n % 4] if n % 10 == 0 else None
        leads.append(dict(id=n, tenant_id=tenant, phone=f"+1555{n:07d}", do_not_text=False, created_at=at,
                          updated_at=at))
        rows_calls.append(dict(id=n, tenant_id=tenant, call_sid=f"CA{n:032d}", lead_id=n, from_number=f"+1555{n:07d}",
                               to_number="+15550001111", status="missed", dial_status="no-answer", skip_reason=skip,
                               texted=skip is None, source="twilio", created_at=at, updated_at=at))
        if skip is not None:
            continue
        texted, replied = n % 5 != 1, n % 2 == 0
        qualified, booked = replied and n % 3 == 0, replied and n % 3 == 0 and n % 9 != 3
        conversations.append(dict(id=n, tenant_id=tenant, lead_id=n, call_id=n, business_number="+15550001111",
                                  playbook="law", state="booked" if booked else "asking", step="matter",
                                  answers={"matter_type": "family"}, offered_slots=[], followups_sent=0,
                                  paused=False, outcome="booked" if booked else None, created_at=at, updated_at=at))

        def message(direction: str, purpose: str | None, seconds: float, status: str, error: int | None = None):
            nonlocal message_id
            message_id += 1
            messages.append(dict(id=message_id, tenant_id=tenant, conversation_id=n, lead_id=n,
                                 business_number="+15550001111", direction=direction, body="...", status=status,
                                 purpose=purpose, template="first_in_hours" if purpose == "first" else None,
                                 error_code=error, created_at=at + timedelta(seconds=seconds),
                                 sent_at=at + timedelta(seconds=seconds + 2) if direction == "outbound" and texted
                                 else None))
            return message_id

        def job(kind: str, key: str, payload: dict, seconds: float, status: str = "done"):
            nonlocal outbox_id
            outbox_id += 1
            outbox.append(dict(id=outbox_id, tenant_id=tenant, kind=kind, payload=payload, idempotency_key=key,
                               status=status, attempts=1, created_at=at + timedelta(seconds=seconds)))

        first = message("outbound", "first", 1 + n % 20, "delivered" if n % 50 else "undelivered",
                        None if n % 50 else 30003)
        job("send_sms", f"sms:{first}", {"message_id": first}, 1)
        job("crm_sync_lead", f"crm-lead:{n}:call:{n}", {"lead_id": n}, 1, "done" if n % 97 else "dead")
        if replied and texted:
            message("inbound", None, 60 + n % 300, "received")
            reply = message("outbound", "reply", 62 + n % 300, "delivered")
            job("send_sms", f"sms:{reply}", {"message_id": reply}, 62)
        if qualified and texted:
            job("offer_slots", f"offer:{n}:SM{n}", {"conversation_id": n}, 400)
        if booked and texted:
            booking_id += 1
            start = at + timedelta(days=2)
            bookings.append(dict(id=booking_id, tenant_id=tenant, conversation_id=n, lead_id=n,
                                 calendar_id=f"cal-{n % 3}@{tenant}.example", start_at=start,
                                 end_at=start + timedelta(minutes=30), status="confirmed",
                                 external_event_id=f"evt{booking_id}", created_at=at, updated_at=at))
            job("crm_record_booking", f"crm-booking:{booking_id}", {"booking_id": booking_id}, 500)
            job("crm_log_conversation", f"crm-log:{n}:6:", {"conversation_id": n}, 500)
    with db.transaction() as session:
        for table, rows in ((Lead, leads), (Call, rows_calls), (Conversation, conversations), (Message, messages),
                            (Booking, bookings), (OutboxRow, outbox)):
            for start in range(0, len(rows), 5000):
                session.execute(insert(table), rows[start:start + 5000])


def time_report(db: Database) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        with db.transaction() as session:
            outcomes = missed_call_outcomes(session, since=T0 - timedelta(days=1))
        build_report(outcomes)
        best = min(best, time.perf_counter() - started)
    return best


def run(url: str, calls: int) -> tuple[float, float]:
    db = Database(url)
    upgrade(db.engine)
    started = time.perf_counter()
    seed(db, calls)
    seeded = time.perf_counter() - started
    if url.startswith("postgresql"):
        with db.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    took = time_report(db)
    db.dispose()
    return seeded, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--postgres", help="a server URL (postgresql://user@host:port/db) to create a scratch "
                                           "database on; SQLite otherwise")
    args = parser.parse_args()
    for calls in args.calls:
        if args.postgres:
            name = "textback_bench_" + secrets.token_hex(4)
            admin = create_engine(args.postgres.replace("postgresql://", "postgresql+psycopg://"),
                                  isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                seeded, took = run(args.postgres.rsplit("/", 1)[0] + "/" + name, calls)
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
        else:
            with tempfile.TemporaryDirectory() as workdir:
                seeded, took = run(f"sqlite:///{Path(workdir) / 'bench.db'}", calls)
        print(f"report: {calls} calls, seed {seeded:.1f} s, report {took:.3f} s "
              f"({took / calls * 1e6:.0f} µs per call)", flush=True)


if __name__ == "__main__":
    main()
