"""Durable intents, written in the same transaction as the change that causes them.

The outbox table is the truth; the job queue is only the transport. After the
transaction commits, the caller hands the new ids to a Dispatcher; if the
process dies first, the relay (sync/relay.py) finds the rows and enqueues them.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import bindparam, event, select, update
from sqlalchemy.orm import Session

from core.store.tables import Conversation, Message, OutboxRow


class Kind(str, enum.Enum):
    send_sms = "send_sms"
    crm_sync_lead = "crm_sync_lead"
    crm_log_conversation = "crm_log_conversation"
    crm_upsert_opportunity = "crm_upsert_opportunity"
    crm_record_booking = "crm_record_booking"
    offer_slots = "offer_slots"
    book_slot = "book_slot"
    reschedule_booking = "reschedule_booking"
    cancel_booking = "cancel_booking"
    followup = "followup"
    notify_staff = "notify_staff"
    # two-way sync (core/calendar_sync.py, core/crm_sync.py, sync/pulls.py)
    calendar_pull = "calendar_pull"
    calendar_event_changed = "calendar_event_changed"
    crm_contact_changed = "crm_contact_changed"
    crm_write_opt_out = "crm_write_opt_out"
    crm_pull = "crm_pull"
    watch_calendars = "watch_calendars"
    watch_crm = "watch_crm"


class Deferred(Exception):
    """Raised by a handler that must not run yet (quiet hours): the row waits until `until`."""

    def __init__(self, until: datetime, reason: str) -> None:
        super().__init__(f"deferred until {until.isoformat()}: {reason}")
        self.until = until
        self.reason = reason


class Dispatcher(Protocol):
    def dispatch(self, outbox_ids: list[int], *, due: dict[int, datetime | None] | None = None) -> None:
        """Hand committed outbox rows to the job queue (`due`: their not_before, when the caller knows it)."""
        ...


class Pending:
    """Collects the outbox rows one transaction writes, to dispatch after commit.

    It knows when each row is due, so the dispatcher need not read them back. A job step's Pending also
    names the job's own row (`job_row`): the step can mark it done in its last transaction
    (`complete_job`), so the runner spends no transaction of its own on it.
    """

    def __init__(self, job_row: int | None = None) -> None:
        self.ids: list[int] = []
        self.due: dict[int, datetime | None] = {}
        self.job_row = job_row
        self.completed = False  # the job's row was marked done, and that transaction committed

    def complete_job(self, session: Session, now: datetime) -> None:
        """Mark the job this step runs as done, in the caller's transaction (known only once it commits)."""
        if self.job_row is None:
            return
        session.execute(_COMPLETE, {"row_id": self.job_row, "at": now})
        event.listen(session, "after_commit", lambda _session: setattr(self, "completed", True), once=True)

    def add(self, session: Session, *, tenant_id: str, kind: Kind, key: str, payload: dict[str, Any],
            not_before: datetime | None = None) -> int:
        """Write the intent once per `key` and return its row's id; a second call with the same key returns
        the first row's id and writes nothing."""
        existing = session.scalar(_ID_BY_KEY, {"key": key})
        if existing is not None:
            return existing
        return self.add_new(session, tenant_id=tenant_id, kind=kind, key=key, payload=payload, not_before=not_before)

    def add_new(self, session: Session, *, tenant_id: str, kind: Kind, key: str, payload: dict[str, Any],
                not_before: datetime | None = None) -> int:
        """Write an intent whose key names a row inserted in this transaction (a new message's or call's id):
        no earlier intent can hold it, so it is not looked up (the unique index would still refuse a second)."""
        from core.store.repo import insert_row

        row_id = insert_row(session, OutboxRow, tenant_id=tenant_id, kind=kind.value, payload=payload,
                            idempotency_key=key, not_before=not_before)
        self.ids.append(row_id)
        self.due[row_id] = not_before
        return row_id


# Built once: every first text and every job step runs them.
_COMPLETE = update(OutboxRow.__table__).where(OutboxRow.__table__.c.id == bindparam("row_id")).values(
    status="done", done_at=bindparam("at"), claimed_until=None, last_error=None)  # Core: cheaper than an ORM UPDATE
_ID_BY_KEY = select(OutboxRow.id).where(OutboxRow.idempotency_key == bindparam("key"))


def log_conversation_later(session: Session, conversation: Conversation, pending: Pending, *,
                           reason: str = "") -> None:
    """Ask for the transcript to be pushed to the CRM as it stands now (keyed by length, so it is pushed once)."""
    count = session.query(Message).filter(Message.conversation_id == conversation.id).count()
    pending.add(session, tenant_id=conversation.tenant_id, kind=Kind.crm_log_conversation,
                key=f"crm-log:{conversation.id}:{count}:{reason}", payload={"conversation_id": conversation.id})


def queue_text(session: Session, *, conversation, body: str, pending: Pending,
               purpose: str = "reply", not_before: datetime | None = None, call_id: int | None = None,
               template: str | None = None) -> int:
    """An outbound text in the conversation's transcript (a Conversation or a repo.ConversationRef), and the
    outbox row that sends it; returns the message's id."""
    from core.store.repo import add_outbound  # repo reads conversation phases; import late to stay acyclic

    message_id = add_outbound(session, conversation=conversation, body=body, purpose=purpose, template=template)
    payload = {"message_id": message_id} | ({"call_id": call_id} if call_id is not None else {})
    pending.add_new(session, tenant_id=conversation.tenant_id, kind=Kind.send_sms, key=f"sms:{message_id}",
                    payload=payload, not_before=not_before)
    return message_id
