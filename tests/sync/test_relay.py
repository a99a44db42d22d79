"""Nothing is lost if the process dies between the commit and the enqueue."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from core.store.tables import OutboxRow
from sync.actors import DramatiqDispatcher
from sync.relay import relay_pending
from tests.webhooks.conftest import CALLER, miss_a_call, texts_to


class _DiedBeforeEnqueue:
    """A dispatcher standing in for a process that crashed right after committing."""

    def dispatch(self, outbox_ids, *, due=None):
        self.lost = list(outbox_ids)


def test_rows_committed_but_never_enqueued_are_sent_by_the_relay_exactly_once(phone, textback, stack):
    crashed = _DiedBeforeEnqueue()
    textback.runtime.dispatcher = crashed
    miss_a_call(phone)
    assert crashed.lost and texts_to(stack) == []

    real = DramatiqDispatcher(textback.runtime, delay_later_rows=False)
    textback.runtime.dispatcher = real
    relayed = relay_pending(textback.runtime, real, grace=timedelta(0))
    textback.drain()

    assert sorted(relayed) == sorted(crashed.lost)
    assert len(texts_to(stack, CALLER)) == 1
    with textback.runtime.db.transaction() as s:
        rows = s.scalars(select(OutboxRow)).all()
    assert {r.status for r in rows if r.kind != "followup"} == {"done"}
    assert [r.status for r in rows if r.kind == "followup"] == ["pending"]  # due tomorrow, not lost

    assert relay_pending(textback.runtime, real, grace=timedelta(0)) == []


def test_the_relay_leaves_freshly_enqueued_rows_alone(phone, textback, stack):
    textback.runtime.dispatcher = _DiedBeforeEnqueue()
    miss_a_call(phone)

    assert relay_pending(textback.runtime, DramatiqDispatcher(textback.runtime, delay_later_rows=False),
                         grace=timedelta(minutes=5)) == []


def test_batched_enqueued_notes_keep_the_relay_off_rows_already_sent(phone, textback, stack):
    from sqlalchemy import event

    updates = []
    event.listen(textback.runtime.db.engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_: updates.append(statement) if "enqueued_at" in statement
                 and statement.lstrip().upper().startswith("UPDATE") and " IN (" in statement else None)  # notes
    batched = DramatiqDispatcher(textback.runtime, delay_later_rows=False, mark_every=60)
    textback.runtime.dispatcher = batched
    for n in range(3):
        miss_a_call(phone, call_sid=f"CA{n:032d}", caller=f"+1555010{n:04d}")
    assert updates == []  # the webhooks answered without writing a note each
    batched.close()  # writes what is waiting
    textback.drain()

    with textback.runtime.db.transaction() as s:
        rows = s.scalars(select(OutboxRow).where(OutboxRow.kind == "send_sms")).all()
    assert len(rows) == 3 and all(row.enqueued_at is not None for row in rows)
    assert len(updates) == 1  # the three webhooks' notes, written together
    assert relay_pending(textback.runtime, batched, grace=timedelta(0)) == []  # nothing sent twice
    assert all(len(texts_to(stack, f"+1555010{n:04d}")) == 1 for n in range(3))


def test_the_enqueued_note_passes_over_rows_another_transaction_holds_instead_of_waiting(any_db):
    """A claim holding one of the noted rows must not make the note wait: waiting while that claim waits on
    another noted row was the chaos run's deadlock. The held row keeps no mark; the others are marked."""
    import threading
    from datetime import datetime, timezone
    from types import SimpleNamespace

    from sync.relay import mark_enqueued

    now = datetime(2031, 5, 6, 12, 0, tzinfo=timezone.utc)
    with any_db.transaction() as s:
        rows = [OutboxRow(tenant_id="t", kind="send_sms", idempotency_key=f"k{n}", created_at=now) for n in range(3)]
        s.add_all(rows)
        s.flush()
        ids = [r.id for r in rows]
    runtime = SimpleNamespace(db=any_db, now=lambda: now)

    if any_db.engine.dialect.name == "postgresql":
        holder = any_db.session()
        holder.begin()
        holder.execute(select(OutboxRow.id).where(OutboxRow.id == ids[1]).with_for_update())
        noted = threading.Thread(target=mark_enqueued, args=(runtime, list(reversed(ids))))
        noted.start()
        noted.join(timeout=10)
        try:
            assert not noted.is_alive(), "the note waited for a row another transaction holds"
        finally:
            holder.rollback()
            holder.close()
        expected = {ids[0]: now, ids[1]: None, ids[2]: now}
    else:  # SQLite has one writer at a time: nothing to pass over
        mark_enqueued(runtime, list(reversed(ids)))
        expected = {i: now for i in ids}

    with any_db.transaction() as s:
        marks = dict(s.execute(select(OutboxRow.id, OutboxRow.enqueued_at).where(OutboxRow.id.in_(ids))).all())
    assert marks == expected
