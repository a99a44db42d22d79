"""Playbooks as data: the shipped four, tenant overrides, and the guardrails that check every sentence."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.engine import guardrails
from core.engine.conversation import Action, Phase, State, advance, opening
from core.engine.playbook import Playbook, load_playbook, playbook_for
from core.engine.summary import handoff_summary
from tests.core.engine.conftest import BUSINESS, NOW

VERTICALS = ("law", "medical", "home_services", "real_estate")


@pytest.mark.parametrize("vertical", VERTICALS)
def test_each_shipped_playbook_loads_with_rules_and_one_question_per_step(vertical):
    playbook = load_playbook(vertical)
    assert playbook.rules, "every vertical decides not-a-fit / needs-a-person"
    for step in playbook.steps:
        assert step.ask.count("?") == 1, f"{step.id} asks one question"
        assert guardrails.screen(step.ask) == [] and guardrails.screen(step.reask) == []


def test_the_medical_playbook_never_asks_for_health_details():
    playbook = load_playbook("medical")
    assert playbook.sensitive and playbook.emergency is not None
    assert not any(guardrails.asks_health_details(text) for s in playbook.steps for text in (s.ask, s.reask))


def test_a_tenant_override_patches_a_step_and_replaces_texts():
    playbook = playbook_for("home_services", {"steps": [{"id": "zip", "area": {"zip_prefixes": ["627"]}}],
                                               "not_fit": "Sorry, {business} only works around Springfield."})
    assert playbook.step("zip").area.covers("62704") and not playbook.step("zip").area.covers("60601")
    assert playbook.not_fit.startswith("Sorry") and playbook.step("service") == load_playbook("home_services").step("service")
    assert playbook_for("home_services", {"not_fit": "x"}) is playbook_for("home_services", {"not_fit": "x"})


@pytest.mark.parametrize(("override", "problem"), [
    ({"no_advice": "We guarantee you will win."}, "guarantees"),
    ({"holding": "You should sue them."}, "gives advice"),
    ({"needs_human": "A visit costs $99."}, "price"),
    ({"bot_disclosure": "I'm a real person at {business}."}, "claims to be a person"),
    ({"steps": [{"id": "matter_type", "ask": "Hi {business}, what is it about?"}]}, "uses"),
    ({"steps": [{"id": "nope", "ask": "?"}]}, "unknown step"),
    ({"rules": [{"when": {"colour": ["red"]}, "outcome": "not_fit", "reason": "x"}]}, "not a step"),
    ({"greeting": "hi"}, "Extra inputs"),
])
def test_an_override_that_breaks_the_rules_is_refused_at_load(override, problem):
    with pytest.raises((ValidationError, ValueError), match=problem):
        playbook_for("law", override)


def test_a_medical_override_cannot_ask_for_symptoms():
    with pytest.raises(ValidationError, match="health details"):
        playbook_for("medical", {"steps": [{"id": "availability", "ask": "What symptoms do you have?"}]})


def test_facts_the_business_configured_may_state_prices():
    playbook = playbook_for("law", {"facts": [{"topic": "fees", "words": ["cost"], "answer": "Consultations are $150."}]})
    assert guardrails.screen("Consultations are $150.", facts=playbook.fact_texts()) == []
    assert guardrails.screen("Consultations are $150.") != []


def test_a_reply_that_fails_the_last_guardrail_is_replaced_by_the_holding_reply_and_a_handoff():
    # Given: a playbook that skipped validation (the load-time check is bypassed on purpose)
    shipped = load_playbook("law")
    unsafe = Playbook.model_construct(**{**dict(shipped), "steps": [
        shipped.steps[0].model_copy(update={"id": "matter_type"}),
        shipped.steps[1].model_copy(update={"ask": "You have a strong case. Is there a court date?"})]})
    state, _ = opening(unsafe)
    # When
    turn = advance(unsafe, state, "1", business=BUSINESS, now=NOW)
    # Then
    assert turn.action is Action.handoff and turn.handoff.reason == "unsafe_reply"
    assert turn.replies == [shipped.holding.format(business=BUSINESS)] and turn.state.phase is Phase.handoff


def test_the_state_round_trips_through_the_conversation_row():
    state = State(phase=Phase.asking, step="deadline", answers={"matter_type": "family"}, misses=2)
    assert state.step_column() == "deadline#2"
    assert State.from_row(phase="asking", step="deadline#2", answers=state.answers, offered=[]) == state
    assert State.from_row(phase="asking", step="deadline", answers={}, offered=[]).misses == 0


def test_the_handoff_summary_names_reason_urgency_answers_and_the_last_message():
    summary = handoff_summary(load_playbook("law"), {"matter_type": "criminal", "deadline": "yes", "urgency": "urgent",
                                                     "preferred_window": {"start": "2025-03-07T08:00:00-05:00",
                                                                          "end": "2025-03-07T12:00:00-05:00"}},
                              reason="asked_for_person", urgency="urgent", last_message="Can I talk to a lawyer now?")
    assert summary.startswith("Needs a person: the caller asked for a person. Urgency: urgent.")
    assert "Matter type: Criminal defense" in summary and "Court date or deadline within 7 days: yes" in summary
    assert "Preferred time: from Fri Mar 7, 8:00 AM to Fri Mar 7, 12:00 PM" in summary
    assert summary.endswith('Last message: "Can I talk to a lawyer now?".')


def test_a_medical_summary_keeps_health_details_out():
    summary = handoff_summary(load_playbook("medical"), {}, reason="emergency", urgency="emergency",
                              last_message="I have chest pain and a fever")
    assert "fever" not in summary and "withheld" in summary


def test_a_free_text_step_keeps_the_callers_words_but_not_a_question():
    shipped = load_playbook("home_services").model_dump()
    shipped["steps"].insert(1, {"id": "details", "label": "Job details", "kind": "text", "ask": "What is the job, briefly?",
                                "reask": "Please tell me briefly what the job is."})
    playbook = Playbook.model_validate(shipped)
    state = State(phase=Phase.asking, step="details", answers={"service": "install"})
    assert advance(playbook, state, "Replace the kitchen faucet", business=BUSINESS, now=NOW).state.answers["details"] \
        == "replace the kitchen faucet"
    asked = advance(playbook, state, "why do you need to know?", business=BUSINESS, now=NOW)
    assert "details" not in asked.state.answers and asked.action is Action.handoff


def test_a_caller_mid_conversation_whose_question_was_removed_from_the_playbook_is_asked_the_next_one():
    # Given: a caller answering a law question that the business then took out of its playbook
    playbook = playbook_for("law")
    first, second = playbook.steps[0], playbook.steps[1]
    state = State(phase=Phase.asking, step="a-question-no-longer-there", answers={first.id: "family"})

    # When: their reply comes in
    turn = advance(playbook, state, "yes", business=BUSINESS, now=NOW)

    # Then: no crash; the conversation carries on at the next question the playbook still has
    assert turn.state.phase is not Phase.handoff and turn.state.step != "a-question-no-longer-there"
    assert second.id in turn.state.answers or turn.state.step == second.id


def test_when_no_question_is_left_for_them_a_person_takes_over():
    playbook = playbook_for("law")
    answers = {step.id: "x" for step in playbook.steps}
    turn = advance(playbook, State(phase=Phase.asking, step="gone", answers=answers), "hello", business=BUSINESS,
                   now=NOW)

    assert turn.action is Action.handoff and turn.handoff.reason == "playbook_changed"
