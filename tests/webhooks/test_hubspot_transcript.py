"""The transcript as HubSpot users expect it: every text a Communication on the contact and the deal, the
note and the meeting on the deal too, whichever CRM job runs first. Real webhooks, worker and sandboxes."""

from __future__ import annotations

from sqlalchemy import select

from core.outbox import Kind, Pending
from core.store.tables import Conversation, Message, OutboxRow
from tests.webhooks.test_booking_flow import offered_times, say


def run_log_job(textback, key: str) -> None:
    """A crm_log_conversation job for the caller's conversation, as a handoff or a close would queue it."""
    with textback.runtime.db.transaction() as s:
        conversation = s.scalars(select(Conversation)).one()
        pending = Pending()
        pending.add(s, tenant_id=conversation.tenant_id, kind=Kind.crm_log_conversation, key=key,
                    payload={"conversation_id": conversation.id})
    textback.runtime.dispatch(pending.ids)
    textback.drain()


def texts_in_store(textback) -> int:
    with textback.runtime.db.transaction() as s:
        return len([m for m in s.scalars(select(Message)) if m.status != "suppressed"])


def communications_created(stack) -> int:
    return sum(inputs for operation, kind, inputs in stack.hubspot.batch_calls
               if (operation, kind) == ("create", "communications"))


def the_deal_holds_everything(stack) -> None:
    [contact] = stack.hubspot.objects("contacts")
    [deal] = stack.hubspot.objects("deals")
    [meeting] = stack.hubspot.objects("meetings")
    [note] = stack.hubspot.objects("notes")
    communications = [each["id"] for each in stack.hubspot.objects("communications")]
    assert sorted(stack.hubspot.associations("contacts", contact["id"], "communications")) == sorted(communications)
    assert sorted(stack.hubspot.associations("deals", deal["id"], "communications")) == sorted(communications)
    assert stack.hubspot.associations("deals", deal["id"], "meetings") == [meeting["id"]]
    assert stack.hubspot.associations("deals", deal["id"], "notes") == [note["id"]]


def test_a_booked_conversation_ends_with_one_communication_per_text_on_the_contact_and_the_deal(
        phone, textback, stack):
    # Given / When: a caller is texted back, qualifies and books
    offered_times(phone, textback, stack)
    say(phone, textback, "1")
    # Then: one SMS communication per text, the caller's and textback's, each logged once
    communications = stack.hubspot.objects("communications")
    assert len(communications) == texts_in_store(textback) == communications_created(stack)
    assert {each["properties"]["hs_communication_channel_type"] for each in communications} == {"SMS"}
    bodies = [each["properties"]["hs_communication_body"] for each in communications]
    assert "Caller: Maria Lopez" in bodies
    assert any(body.startswith("textback (automated): You're booked with Smith & Lee Law") for body in bodies)
    # And the communications, the meeting and the transcript note all sit on the deal
    the_deal_holds_everything(stack)


def test_texts_logged_before_the_deal_exists_are_tied_to_it_when_it_is_made_and_not_logged_again(
        phone, textback, stack):
    # Given: the conversation is logged halfway (no deal yet): its texts are on the contact only
    offered_times(phone, textback, stack)
    run_log_job(textback, key="crm-log:halfway")
    early = texts_in_store(textback)
    assert len(stack.hubspot.objects("communications")) == early and stack.hubspot.objects("deals") == []
    # When: the caller books, which makes the deal, and the conversation goes on
    say(phone, textback, "1")
    # Then: only the texts since were created, and everything is on the deal
    assert communications_created(stack) == texts_in_store(textback) > early
    the_deal_holds_everything(stack)


def test_a_log_job_whose_answer_was_lost_creates_no_communication_twice(phone, textback, stack):
    # Given: a conversation under way, and HubSpot dropping the connection after creating the communications
    offered_times(phone, textback, stack)
    stack.hubspot.faults.drop_after_next("/crm/v3/objects/communications/batch/create")
    # When: the log job runs, fails without an answer and is retried
    run_log_job(textback, key="crm-log:lost")
    # Then: every text is in HubSpot once, and the job is done
    assert len(stack.hubspot.objects("communications")) == texts_in_store(textback)
    assert communications_created(stack) == texts_in_store(textback)
    with textback.runtime.db.transaction() as s:
        row = s.scalars(select(OutboxRow).where(OutboxRow.idempotency_key == "crm-log:lost")).one()
        assert (row.status, row.attempts) == ("done", 2)
