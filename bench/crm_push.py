"""CRM pushes at the quota: N leads (contact + transcript + deal) to the sandbox HubSpot, its limits on.

Runs what production runs, each in its own process: the sandbox HubSpot (bench/chaos_sandbox.py, with its
plan's limit per 10 s), `--processes` `textback worker` processes of `--threads` threads each on a real
Redis broker, and the store (PostgreSQL by default, or SQLite). Once the workers are up, it writes N leads,
each with a conversation, and their three CRM jobs (crm_sync_lead, crm_log_conversation,
crm_upsert_opportunity) to the outbox, hands them to the queue, and waits until none is pending. Every
connector counts its requests on the shared Redis meter. Reports the elapsed time from the hand-off
against the quota floor (the requests HubSpot answered ÷ the budget per second), the 429s HubSpot
answered and the duplicate records it holds. Run:

    .venv/bin/python -m bench.crm_push --leads 5000 --budget 100 --redis redis://127.0.0.1:6379/14

The Redis database given is flushed. Its last line reads
`crm_push: ratio R to the quota floor, N 429s, D duplicates`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis
import yaml
from sqlalchemy import func, select, update

from bench.chaos import Sandbox
from bench.first_text import BIN, database, wait_until
from connectors.registry import validate_connector
from core.config import Settings, load_tenants
from core.outbox import Kind, Pending
from core.store.db import Database
from core.store.migrate import upgrade
from core.store.repo import lead_for
from core.store.tables import Conversation, Message, OutboxRow
from sync import actors
from sync.broker import make_broker
from sync.runtime import Runtime

BUSINESS = "+15550001111"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=5000)
    parser.add_argument("--budget", type=int, default=100, help="HubSpot requests per 10 s (100 or 190)")
    parser.add_argument("--processes", type=int, default=2, help="textback worker processes")
    parser.add_argument("--threads", type=int, default=2, help="worker threads in each process")
    parser.add_argument("--store", default="postgres", choices=("sqlite", "postgres"))
    parser.add_argument("--redis", default=os.environ.get("TEXTBACK_TEST_REDIS_URL", "redis://127.0.0.1:6379/14"))
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the outbox to drain")
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis)
    client.flushdb()

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        sandbox = Sandbox(workdir, hubspot_budget=args.budget)
        stack.callback(sandbox.stop)
        database_url = stack.enter_context(database(args.store, workdir))
        connectors = {**sandbox.connectors, "crm": {**sandbox.connectors["crm"], "requests_per_10s": args.budget}}
        path = workdir / "tenants.yaml"
        path.write_text(yaml.safe_dump({"tenants": [{
            "id": "smith-law", "name": "Smith & Lee Law", "vertical": "law", "timezone": "America/New_York",
            "phone_numbers": [BUSINESS], "forward_to": ["+15550002222"], "contact": "(555) 000-1111",
            "hours": {day: "09:00-17:00" for day in ("mon", "tue", "wed", "thu", "fri")},
            "connectors": connectors}]}))
        env = {**os.environ, **sandbox.env, "TEXTBACK_DATABASE_URL": database_url, "TEXTBACK_REDIS_URL": args.redis,
               "TEXTBACK_CONFIG": str(path)}
        os.environ.update(sandbox.env)  # the tenants file's env: secrets, read here too
        db = Database(database_url)
        upgrade(db.engine)
        stack.callback(db.dispose)
        for n in range(args.processes):
            stack.enter_context(_worker(workdir / f"worker-{n}.log", env, args.threads))
        wait_until(lambda: client.zcard("dramatiq:__heartbeats__") >= args.processes, timeout=60,
                   what=f"{args.processes} textback worker processes")
        broker = make_broker(args.redis)
        actors.bind(broker)
        runtime = Runtime(settings=Settings(database_url=database_url, redis_url=args.redis), db=db,
                          tenants=load_tenants(path, validate_connector=validate_connector))
        runtime.dispatcher = actors.DramatiqDispatcher(runtime)
        ids = _write_leads(runtime, args.leads)
        started = time.monotonic()
        runtime.dispatch(ids)
        samples = _wait(runtime, len(ids), timeout=args.timeout,
                        admitted=lambda: sandbox.hubspot(counts=True)["admitted"])
        elapsed = time.monotonic() - started
        with runtime.db.transaction() as session:
            ended = dict(session.execute(select(OutboxRow.status, func.count()).group_by(OutboxRow.status)).all())
            errors = session.execute(select(OutboxRow.kind, OutboxRow.last_error).where(OutboxRow.status != "done")
                                     .limit(5)).all()
        broker.close()
        held = sandbox.hubspot()
        warnings, batches = _warnings(workdir)
    requests, refused = held["admitted"], held["refused"]
    duplicates = sum(n - 1 for kind in ("contacts", "notes", "deals")
                     for n in collections.Counter(held[kind]).values())
    floor = requests / (args.budget / 10)
    print(f"{args.leads} leads, {len(ids)} jobs, {args.processes} worker processes x {args.threads} threads, "
          f"{args.store}, budget {args.budget}/10 s")
    print(f"HubSpot answered {requests} requests ({requests / args.leads:.2f} per lead) in {elapsed:.1f} s; "
          f"quota floor {floor:.1f} s; {len(held['contacts'])} contacts, {len(held['notes'])} notes, "
          f"{len(held['deals'])} deals")
    windows = [later - earlier for (_, earlier), (_, later) in zip(samples, samples[10:])][::10]
    if windows:
        full = sum(1 for n in windows if n >= 0.9 * args.budget)
        print(f"requests per 10 s window: {full} of {len(windows)} windows at 90%+ of the budget; "
              f"the others: {[n for n in windows if n < 0.9 * args.budget]}")
    routes = sorted(held["by_route"].items(), key=lambda item: -item[1])
    print("by route: " + ", ".join(f"{route} {n}" for route, n in routes))
    if os.environ.get("CRM_PUSH_SECONDS"):
        print("admitted each second: " + " ".join(str(later - earlier) for (_, earlier), (_, later)
                                                    in zip(samples, samples[1:])))
    if batches:
        print("batches: " + ", ".join(f"{name} {n}" for name, n in sorted(batches.items())))
    if warnings:
        print("worker warnings: " + "; ".join(f"{n} x {text}" for text, n in warnings.most_common(5)))
    print(f"jobs ended: {ended}" + "".join(f"\n  {kind}: {error}" for kind, error in errors))
    print(f"crm_push: ratio {elapsed / floor:.2f} to the quota floor, {refused} 429s, {duplicates} duplicates")


@contextlib.contextmanager
def _worker(log_path: Path, env: dict, threads: int):
    with log_path.open("ab") as log:
        proc = subprocess.Popen([BIN / "textback", "worker", "--threads", str(threads)], env=env, cwd=log_path.parent,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            _stop(proc)


def _where_in_redis(runtime: Runtime) -> None:
    """Where the pending rows' messages are in Redis, and how long each Dramatiq key is (a diagnostic)."""
    client = redis.Redis.from_url(runtime.settings.redis_url)
    with runtime.db.transaction() as session:
        pending = set(session.scalars(select(OutboxRow.id).where(OutboxRow.status == "pending")))
    sizes, holding = {}, collections.Counter()
    for key in client.scan_iter("dramatiq:*"):
        name, kind = key.decode(), client.type(key).decode()
        if kind == "hash":  # a queue's messages by id
            holding[name] = sum(1 for raw in client.hvals(key) if json.loads(raw).get("args", [None])[0] in pending)
        else:
            sizes[name] = {"list": client.llen, "zset": client.zcard, "set": client.scard}.get(kind, lambda _: 0)(key)
    print(f"  pending rows' messages in: {dict(holding)}; key sizes: {sizes}")


def _warnings(workdir: Path) -> tuple[collections.Counter, collections.Counter]:
    """The workers' warnings, by message with its numbers blanked (what made a job wait or retry); and their
    batches by kind: how many, the rows they pushed, the companions they let go."""
    seen, batches = collections.Counter(), collections.Counter()
    for path in workdir.glob("worker-*.log"):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                message = entry.get("msg", "")
                if entry.get("level") in ("warning", "error"):
                    seen[re.sub(r"\d+", "N", message)[:160]] += 1
                elif batch := _BATCH.match(message):
                    pushed, kind, let_go = batch.groups()
                    batches[f"{kind} batches"] += 1
                    batches[f"{kind} rows"] += int(pushed)
                    batches[f"{kind} let go"] += int(let_go)
    return seen, batches


_BATCH = re.compile(r"outbox: (\d+) (\w+) pushes for \S+ in one batch \((\d+) let go\)")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
        # Written over a minute or more, the first rows would be older than the relay's grace at the commit, and the
        # workers' relay would send them before the hand-off (and before the clock starts): all are new as of now.
        session.execute(update(OutboxRow).where(OutboxRow.id.between(min(pending.ids), max(pending.ids)))
                        .values(created_at=runtime.now()))
    return pending.ids


def _wait(runtime: Runtime, jobs: int, *, timeout: float, admitted) -> list[tuple[float, int]]:
    """Until no row is pending (the bench's rows and any the jobs wrote themselves); HubSpot's admitted count
    once a second meanwhile, to show how full each 10 s window was."""
    deadline, done, samples, stalled, tail = time.monotonic() + timeout, 0, [], False, False
    while time.monotonic() < deadline:
        if not samples or time.monotonic() - samples[-1][0] >= 1.0:
            samples.append((time.monotonic(), admitted()))
        with runtime.db.transaction() as session:
            counts = dict(session.execute(select(OutboxRow.status, func.count()).group_by(OutboxRow.status)).all())
        done = sum(n for status, n in counts.items() if status != "pending")
        if done >= jobs and not counts.get("pending"):
            return samples
        if os.environ.get("CRM_PUSH_TAIL") and not tail and counts.get("pending", 0) <= jobs // 100:
            tail = True  # the last 1%: what they wait for
            with runtime.db.transaction() as session:
                waiting = session.execute(select(OutboxRow.kind, OutboxRow.attempts, OutboxRow.last_error,
                                                 OutboxRow.claimed_until, OutboxRow.enqueued_at, OutboxRow.not_before)
                                          .where(OutboxRow.status == "pending").limit(8)).all()
            print(f"last 1% at {time.monotonic() - samples[0][0]:.0f} s: {counts.get('pending')} pending, e.g.:")
            for row in waiting:
                print(f"  {row.kind} attempts={row.attempts} claimed_until={row.claimed_until} "
                      f"enqueued_at={row.enqueued_at} not_before={row.not_before} error={row.last_error}")
        if len(samples) > 5 and samples[-1][1] == samples[-6][1] and not stalled:
            stalled = True  # HubSpot heard nothing for 5 s while rows wait: say what they wait for
            with runtime.db.transaction() as session:
                waiting = session.execute(select(OutboxRow.kind, OutboxRow.attempts, OutboxRow.last_error,
                                                 OutboxRow.claimed_until, OutboxRow.enqueued_at)
                                          .where(OutboxRow.status == "pending").limit(5)).all()
            print(f"stalled at {time.monotonic() - samples[0][0]:.0f} s with {counts.get('pending')} pending, e.g.:")
            if os.environ.get("CRM_PUSH_WHERE"):
                _where_in_redis(runtime)
            for row in waiting:
                print(f"  {row.kind} attempts={row.attempts} claimed_until={row.claimed_until} "
                      f"enqueued_at={row.enqueued_at} error={row.last_error}")
        time.sleep(0.2)
    raise SystemExit(f"crm_push: the outbox did not drain in {timeout:.0f} s ({done} of {jobs} jobs ended)")


if __name__ == "__main__":
    main()
