"""A backlog of transcripts and deals pushed to HubSpot in batch calls: real Redis, a real Dramatiq worker, the
sandbox with its limits on; and the same backlog ending the same in the sandbox whether batched or one by one."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import yaml
from sqlalchemy import select

from connectors.quota import OverQuota
from connectors.registry import validate_connector
from core.config import Settings, load_tenants
from core.outbox import Kind, Pending
from core.store.db import Database
from core.store.migrate import upgrade
from core.store.repo import lead_for
from core.store.tables import Conversation, ExternalId, Message, OutboxRow
from sandbox.hubspot import HubSpotSandbox, create_app
from sandbox.server import serve
from sync.runner import run_job
from sync.runtime import Runtime
from tests.sync.test_crm_quotas import _wait_until_done, busy_portal  # noqa: F401  (the shared fixture)
from tests.webhooks.conftest import BUSINESS, tenant_yaml

TENANT = "smith-law"
CONVERSATION_PUSHES = (Kind.crm_log_conversation, Kind.crm_upsert_opportunity)


def _finished_conversations(runtime: Runtime, count: int, *, first: int = 0) -> list[tuple[int, int]]:
    """Callers with a finished conversation of two texts each: (lead id, conversation id)."""
    made = []
    with runtime.db.transaction() as session:
        for n in range(first, first + count):
            lead = lead_for(session, tenant_id=TENANT, phone=f"+1555060{n:04d}")
            conversation = Conversation(tenant_id=TENANT, lead_id=lead.id, business_number=BUSINESS, playbook="law",
                                        state="closed", outcome="qualified", answers={"matter_type": "family"})
            session.add(conversation)
            session.flush()
            for direction, body, status in (("outbound", "Smith & Lee Law (automated): sorry we missed you", "sent"),
                                            ("inbound", f"It's about my divorce, case {n}", "received")):
                session.add(Message(tenant_id=TENANT, conversation_id=conversation.id, lead_id=lead.id,
                                    business_number=BUSINESS, direction=direction, body=body, status=status))
            made.append((lead.id, conversation.id))
    return made


def _queue(runtime: Runtime, kind: Kind, ids: list[int]) -> list[int]:
    pending = Pending()
    field = "lead_id" if kind is Kind.crm_sync_lead else "conversation_id"
    with runtime.db.transaction() as session:
        for local_id in ids:
            pending.add(session, tenant_id=TENANT, kind=kind, key=f"{kind}:{local_id}", payload={field: local_id})
    return pending.ids


def _push_contacts_first(runtime: Runtime, leads: list[int]) -> None:
    runtime.dispatch(_queue(runtime, Kind.crm_sync_lead, leads))
    _wait_until_done(runtime, len(leads), timeout=90)


def _keys(stack, object_type: str) -> list[str]:
    return [r["properties"].get("textback_key") for r in stack.hubspot.objects(object_type)]


def test_a_backlog_of_230_conversations_goes_out_in_batches_with_one_note_and_one_deal_each(busy_portal, stack):
    # Given: 230 finished conversations whose callers are in the CRM, their transcripts and deals waiting
    made = _finished_conversations(busy_portal, 230)
    _push_contacts_first(busy_portal, [lead for lead, _ in made])
    conversations = [conversation for _, conversation in made]
    ids = [row for kind in CONVERSATION_PUSHES for row in _queue(busy_portal, kind, conversations)]
    before, calls_before = stack.hubspot.access.admitted, len(stack.hubspot.batch_calls)

    # When: four worker threads get them, on a budget of 24 requests per 10 s
    busy_portal.dispatch(ids)
    rows = _wait_until_done(busy_portal, len(ids), timeout=180, kinds=CONVERSATION_PUSHES)

    # Then: one note, one deal and two texts per conversation, created by batch calls of at most 100 inputs
    notes, deals = _keys(stack, "notes"), _keys(stack, "deals")
    assert len(notes) == len(set(notes)) == 230 and len(deals) == len(set(deals)) == 230
    assert len(set(_keys(stack, "communications"))) == len(_keys(stack, "communications")) == 460
    calls = stack.hubspot.batch_calls[calls_before:]
    for object_type, least in (("notes", 200), ("deals", 200), ("communications", 400)):
        creates = [inputs for operation, kind, inputs in calls if operation == "create" and kind == object_type]
        assert max(creates) <= 100 and sum(creates) >= least  # a job that found none waiting ran alone
    # ... with no 429, in far fewer requests than one by one (about eleven per conversation: 2,500). How
    # large the batches grow depends on how many rows wait when each job starts: about 110 requests on a
    # quiet box, 253 seen on a busy one; five times fewer is the bound that holds on both
    assert stack.hubspot.access.refused == []
    assert stack.hubspot.access.admitted - before < 500
    assert all(row.last_error is None for row in rows)


def test_a_batch_whose_answer_is_lost_is_retried_without_a_duplicate(busy_portal, stack):
    # Given: 30 conversations' transcripts waiting, and the first note batch's answer lost after HubSpot made them
    made = _finished_conversations(busy_portal, 30)
    _push_contacts_first(busy_portal, [lead for lead, _ in made])
    stack.hubspot.faults.drop_after_next("/crm/v3/objects/notes/batch/create")

    # When
    ids = _queue(busy_portal, Kind.crm_log_conversation, [conversation for _, conversation in made])
    busy_portal.dispatch(ids)
    rows = _wait_until_done(busy_portal, len(ids), timeout=90, kinds=(Kind.crm_log_conversation,))

    # Then: the retry found the notes by their keys: one per conversation, each the one the map names
    notes = {r["id"]: r["properties"].get("textback_key") for r in stack.hubspot.objects("notes")}
    assert len(notes) == len(set(notes.values())) == 30
    with busy_portal.db.transaction() as session:
        mapped = set(session.scalars(select(ExternalId.external_id).where(ExternalId.local_kind == "conversation_log")))
    assert mapped == set(notes)
    assert len(set(_keys(stack, "communications"))) == len(_keys(stack, "communications")) == 60
    assert sum(1 for operation, kind, _ in stack.hubspot.batch_calls if (operation, kind) == ("create", "notes")) >= 1
    assert all(row.status == "done" for row in rows)


def test_a_fresh_transcript_with_no_backlog_runs_alone_at_once(busy_portal, stack):
    # Given: one caller in the CRM, nothing else waiting
    [(lead, conversation)] = _finished_conversations(busy_portal, 1)
    _push_contacts_first(busy_portal, [lead])

    # When
    started = time.monotonic()
    busy_portal.dispatch(_queue(busy_portal, Kind.crm_log_conversation, [conversation]))
    [row] = _wait_until_done(busy_portal, 1, timeout=30, kinds=(Kind.crm_log_conversation,))

    # Then: it went out on the single path straight away (no batch create of notes waited to form)
    assert time.monotonic() - started < 15  # the push itself; nothing holds it back to gather companions
    assert len(stack.hubspot.objects("notes")) == 1 and row.attempts == 1
    assert not [c for c in stack.hubspot.batch_calls if c[:2] == ("create", "notes")]


# --- the same end state batched or one by one ------------------------------------------------------------------

MOMENT = datetime(2026, 3, 10, 15, 0, tzinfo=timezone.utc)
VOLATILE = ("createdate", "lastmodifieddate", "hs_createdate", "hs_lastmodifieddate", "hs_object_id")


def _runtime(tmp_path, name: str, stack, base_url: str) -> Runtime:
    tenant = tenant_yaml(stack)
    tenant["connectors"]["crm"]["base_url"] = base_url
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"tenants": [tenant]}, sort_keys=False))
    db = Database(f"sqlite:///{tmp_path / name}.db")
    upgrade(db.engine)
    return Runtime(settings=Settings(database_url=db.url), db=db, clock=lambda: MOMENT,
                   tenants=load_tenants(path, validate_connector=validate_connector))


def _run(runtime: Runtime, kind: Kind, ids: list[int], *, together: bool) -> None:
    """The pushes of `kind` for `ids`: all queued and the first run (it takes the rest as companions), or each
    queued and run before the next is queued (so each runs alone)."""
    if together:
        rows = _queue(runtime, kind, ids)
        run_job(runtime, rows[0])
    else:
        for local_id in ids:
            _run_waiting_for_slots(runtime, _queue(runtime, kind, [local_id])[0])
    with runtime.db.transaction() as session:
        statuses = set(session.scalars(select(OutboxRow.status).where(OutboxRow.kind == kind.value)))
    assert statuses == {"done"}


def _run_waiting_for_slots(runtime: Runtime, row_id: int) -> None:
    """run_job as the worker runs it: a job over the search budget (5 a second) runs again once there is a slot."""
    for _ in range(20):
        try:
            return run_job(runtime, row_id)
        except OverQuota as over:
            time.sleep(over.retry_after)
    raise AssertionError(f"row {row_id} never found a slot")


def _push_backlog(runtime: Runtime, *, together: bool) -> None:
    """Contacts, then the deals of half the conversations, then every transcript (tied to the deals known), then
    the other deals (tying what was written before them)."""
    made = _finished_conversations(runtime, 12)
    conversations = [conversation for _, conversation in made]
    _run(runtime, Kind.crm_sync_lead, [lead for lead, _ in made], together=together)
    _run(runtime, Kind.crm_upsert_opportunity, conversations[::2], together=together)
    _run(runtime, Kind.crm_log_conversation, conversations, together=together)
    _run(runtime, Kind.crm_upsert_opportunity, conversations[1::2], together=together)


def _held(runtime: Runtime, hubspot: HubSpotSandbox) -> dict:
    """What the sandbox holds, each record named by the local record our map ties it to, with its associations."""
    with runtime.db.transaction() as session:
        local = {(row.external_id): (row.local_kind, row.local_id) for row in session.scalars(select(ExternalId))}
    held = {}
    for object_type in ("contacts", "notes", "deals", "communications"):
        for record in hubspot.objects(object_type):
            links = sorted((to, local[peer]) for to in ("contacts", "notes", "deals", "communications")
                           if to != object_type for peer in hubspot.associations(object_type, record["id"], to))
            properties = {k: v for k, v in record["properties"].items() if k not in VOLATILE}
            held[local[record["id"]]] = (object_type, properties, links)
    return held


def test_a_backlog_ends_the_same_in_the_crm_batched_or_one_by_one(stack, tmp_path, monkeypatch):
    # Given: two portals, two textback stores with the same clock and the same backlog
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    other = HubSpotSandbox({stack.env["HUBSPOT_TOKEN"]})
    with serve(create_app(other)) as served:
        batched = _runtime(tmp_path, "batched", stack, stack.servers["hubspot"].url)
        alone = _runtime(tmp_path, "alone", stack, served.url)

        # When: one pushes it in batches, the other one row at a time
        _push_backlog(batched, together=True)
        _push_backlog(alone, together=False)

        # Then: the same records, properties, associations and map
        assert [c for c in stack.hubspot.batch_calls if c[:2] == ("create", "notes")] == [("create", "notes", 12)]
        assert not [c for c in other.batch_calls if c[:2] == ("create", "notes")]
        held = _held(batched, stack.hubspot)
        assert held == _held(alone, other)
        assert sorted(kind for kind, _, _ in held.values()).count("communications") == 24
        activities = [links for kind, _, links in held.values() if kind in ("notes", "communications")]
        assert len(activities) == 36 and all([to for to, _ in links] == ["contacts", "deals"] for links in activities)
        batched.close()
        alone.close()


def test_every_companion_let_go_is_queued_again_whether_or_not_its_own_message_came_meanwhile(any_db):
    """Its own message may still be queued, or may have come while the batch held the row and done nothing; only a
    message sent after the release is sure to run it (the one left over is a no-op at its claim)."""
    from datetime import datetime, timedelta, timezone
    from types import SimpleNamespace

    from sqlalchemy import select

    from core.store.tables import OutboxRow
    from sync.crm_batch import let_go
    from sync.runner import _claim

    now = datetime(2031, 5, 6, 12, 0, tzinfo=timezone.utc)
    with any_db.transaction() as s:
        rows = [OutboxRow(tenant_id="t", kind="crm_sync_lead", idempotency_key=f"k{n}", payload={"lead_id": n},
                          created_at=now, enqueued_at=now, attempts=1, claimed_until=now + timedelta(minutes=5))
                for n in range(2)]  # both enqueued, then claimed by a batch as its companions
        s.add_all(rows)
        s.flush()
        still_queued, came = rows[0].id, rows[1].id
    dispatched = []
    runtime = SimpleNamespace(db=any_db, now=lambda: now, settings=SimpleNamespace(), dispatch=dispatched.extend)

    assert _claim(runtime, came) is None  # its message came while the batch held it: a no-op
    let_go(runtime, [still_queued, came])

    assert dispatched == sorted([still_queued, came])
    with any_db.transaction() as s:
        after = {r.id: r for r in s.scalars(select(OutboxRow))}
    assert all(r.claimed_until is None and r.attempts == 0 and r.status == "pending" for r in after.values())
    assert _claim(runtime, came) is not None  # the new message finds it free


# --- which rows a batch takes ------------------------------------------------------------------------------------

def _statuses(runtime: Runtime, rows: list[int]) -> list[tuple[str, int, object]]:
    with runtime.db.transaction() as session:
        found = {r.id: r for r in session.scalars(select(OutboxRow).where(OutboxRow.id.in_(rows)))}
    return [(found[r].status, found[r].attempts, found[r].claimed_until) for r in rows]


def test_a_waiting_row_whose_caller_another_job_is_writing_about_is_not_taken_into_a_batch(stack, tmp_path,
                                                                                         monkeypatch, caplog):
    # Given: five callers in the CRM, their deals waiting, and another job writing about the third caller
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    runtime = _runtime(tmp_path, "locked", stack, stack.servers["hubspot"].url)
    made = _finished_conversations(runtime, 5)
    _run(runtime, Kind.crm_sync_lead, [lead for lead, _ in made], together=True)
    rows = _queue(runtime, Kind.crm_upsert_opportunity, [conversation for _, conversation in made])

    # When: the first deal's job runs while the third caller's lock is held
    with runtime.locks.hold(f"crm:{TENANT}:lead:{made[2][0]}"), caplog.at_level("INFO", logger="sync.crm_batch"):
        run_job(runtime, rows[0])

        # Then: the batch took the other four; the third was never claimed (so never let go either)
        assert _statuses(runtime, rows) == [("done", 1, None)] * 2 + [("pending", 0, None)] + [("done", 1, None)] * 2
        assert "4 upsert_opportunities pushes for smith-law in one batch (0 let go)" in caplog.text
    assert [c for c in stack.hubspot.batch_calls if c[:2] == ("create", "deals")] == [("create", "deals", 4)]

    run_job(runtime, rows[2])  # its own message, once the lock is free
    assert [status for status, _, _ in _statuses(runtime, rows)] == ["done"] * 5
    assert len(stack.hubspot.objects("deals")) == 5
    runtime.close()


def test_a_job_that_pushed_a_full_batch_goes_on_with_the_backlog_for_a_few_rounds(stack, tmp_path, monkeypatch):
    # Given: batches of 4 (a job's own row and 3 companions), 3 rounds a job, and 12 new callers waiting
    from sync import crm_batch

    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(crm_batch, "BATCH_LIMIT", 4)
    monkeypatch.setattr(crm_batch, "ROUNDS", 3)
    runtime = _runtime(tmp_path, "rounds", stack, stack.servers["hubspot"].url)
    rows = _queue(runtime, Kind.crm_sync_lead, [lead for lead, _ in _finished_conversations(runtime, 12)])

    # When: the first row's job runs
    _run_waiting_for_slots(runtime, rows[0])

    # Then: its batch, then two more of the rows still waiting, oldest first; the last two wait for their messages
    assert [c for c in stack.hubspot.batch_calls if c[:2] == ("create", "contacts")] == [("create", "contacts", 4),
                                                                                          ("create", "contacts", 3),
                                                                                          ("create", "contacts", 3)]
    assert [status for status, _, _ in _statuses(runtime, rows)] == ["done"] * 10 + ["pending"] * 2
    assert len(stack.hubspot.objects("contacts")) == 10
    runtime.close()


def test_a_waiting_row_with_a_payload_that_is_no_number_does_not_stop_the_batch_or_its_job(stack, tmp_path,
                                                                                         monkeypatch, postgres_db):
    # Given: on PostgreSQL (which refuses the cast SQLite lets pass), three callers in the CRM, their deals
    # waiting, and one more deal row whose conversation id is not a number
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    runtime = _runtime(tmp_path, "bad-payload", stack, stack.servers["hubspot"].url)
    runtime.db.dispose()
    runtime.db = postgres_db
    made = _finished_conversations(runtime, 3)
    _run(runtime, Kind.crm_sync_lead, [lead for lead, _ in made], together=True)
    rows = _queue(runtime, Kind.crm_upsert_opportunity, [conversation for _, conversation in made])
    with runtime.db.transaction() as session:
        bad = OutboxRow(tenant_id=TENANT, kind=Kind.crm_upsert_opportunity.value, idempotency_key="bad",
                        payload={"conversation_id": "forty-two"})
        session.add(bad)
        session.flush()
        bad_id = bad.id

    # When
    for row in rows:
        run_job(runtime, row)
    run_job(runtime, bad_id)

    # Then: every good deal is in the CRM once, and the bad row failed on its own, saying why
    assert [status for status, _, _ in _statuses(runtime, rows)] == ["done"] * 3
    assert len(stack.hubspot.objects("deals")) == 3
    with runtime.db.transaction() as session:
        failed = session.get(OutboxRow, bad_id)
        assert failed.status == "failed" and "payload does not fit" in failed.last_error
