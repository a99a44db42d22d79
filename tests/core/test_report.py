"""The outcome per missed call and the report, checked against a seeded data set with known answers."""

from __future__ import annotations

from datetime import datetime, timezone

from core.outcomes import missed_call_outcomes
from core.report import build_report, nearest_rank, percentiles
from tests.core.report_seed import T0, at, seed_known_report

MARCH = datetime(2031, 3, 1, tzinfo=timezone.utc)
APRIL = datetime(2031, 4, 1, tzinfo=timezone.utc)


def _report(db, **kwargs):
    with db.transaction() as session:
        outcomes = missed_call_outcomes(session, since=MARCH, until=APRIL, **kwargs)
    return build_report(outcomes, since=MARCH, until=APRIL)


def test_the_funnel_per_tenant_and_in_total_matches_the_seeded_answers(any_db):
    # Given the seeded March of two tenants
    seed_known_report(any_db)
    # When the report is built for March
    report = _report(any_db)
    # Then each step counts what the seed says, "booked" only where the calendar event exists
    assert report.tenants["alpha"].funnel.model_dump() == {"missed": 6, "texted": 4, "replied": 3, "qualified": 2,
                                                           "booked": 1}
    assert report.tenants["beta"].funnel.model_dump() == {"missed": 3, "texted": 2, "replied": 2, "qualified": 1,
                                                          "booked": 1}
    assert report.funnel.model_dump() == {"missed": 9, "texted": 6, "replied": 5, "qualified": 3, "booked": 2}
    assert report.total.funnel == report.funnel
    rates = report.tenants["alpha"].rates
    assert (rates.texted, rates.replied, rates.qualified, rates.booked, rates.booked_of_missed) == (
        0.6667, 0.75, 0.6667, 0.5, 0.1667)


def test_speed_to_lead_and_reply_times_are_nearest_rank_percentiles(any_db):
    seed_known_report(any_db)
    report = _report(any_db)
    alpha = report.tenants["alpha"]
    assert alpha.seconds_to_first_text.model_dump() == {"count": 4, "p50": 20.0, "p90": 40.0, "p99": 40.0}
    assert alpha.seconds_to_first_reply.model_dump() == {"count": 3, "p50": 60.0, "p90": 100.0, "p99": 100.0}
    assert report.total.seconds_to_first_text.model_dump() == {"count": 6, "p50": 15.0, "p90": 40.0, "p99": 40.0}


def test_skips_opt_outs_failures_templates_and_calendars_are_counted(any_db):
    seed_known_report(any_db)
    report = _report(any_db)
    alpha, total = report.tenants["alpha"], report.total
    assert alpha.skip_reasons == {"cooldown": 1, "opted_out": 1}
    assert total.skip_reasons == {"cooldown": 1, "invalid_number": 1, "opted_out": 1}
    assert alpha.opt_outs.model_dump() == {"count": 1, "rate": 0.25}
    assert alpha.delivery_failures == {"30003": 1}
    assert {k: (v.texted, v.replied, v.rate) for k, v in alpha.reply_rate_by_template.items()} == {
        "first_after_hours": (1, 0, 0.0), "first_in_hours": (3, 3, 1.0)}
    assert total.bookings_by_calendar == {"cal-a": 1, "cal-b": 1}
    assert report.tenants["beta"].handed_off == 1


def test_one_tenant_and_a_narrower_window_leave_the_others_out(any_db):
    seed_known_report(any_db)
    with any_db.transaction() as session:
        beta = missed_call_outcomes(session, tenant_ids=["beta"])
        first_hour = missed_call_outcomes(session, since=T0, until=at(3600))
        everything = missed_call_outcomes(session)
    assert {o.tenant_id for o in beta} == {"beta"} and len(beta) == 3
    # a1 at T0, b1 at +600 s, b2 at +1200 s, b3 at +1800 s; a2 at +3600 s is outside (until is exclusive)
    assert [(o.tenant_id, o.called_at) for o in first_hour] == [
        ("alpha", T0), ("beta", at(600)), ("beta", at(1200)), ("beta", at(1800))]
    assert len(everything) == 10  # the February call too; never the answered one
    assert everything[0].called_at == datetime(2031, 2, 1, 15, tzinfo=timezone.utc)


def test_each_outcome_carries_times_booking_sync_and_handoff(any_db):
    ids = seed_known_report(any_db)
    with any_db.transaction() as session:
        outcomes = {o.call_id: o for o in missed_call_outcomes(session, since=MARCH)}
    booked = outcomes[ids["a1_call"]]
    assert booked.source == "dial" and booked.called_at == T0
    assert (booked.first_text_at, booked.first_reply_at) == (at(10), at(70))
    assert (booked.qualified_at, booked.booked_at) == (at(200), at(300))
    assert booked.booked and booked.booking_status == "confirmed"
    assert (booked.event_id, booked.event_link, booked.calendar_id) == (
        "evt-a1", "https://calendar.example/evt-a1", "cal-a")
    assert booked.external_ids == {"hubspot:lead": "hs-501", "calendar:event": "evt-a1"}
    assert booked.answers == {"matter_type": "family"} and booked.sync_status == "ok"

    handed = outcomes[ids["b2_call"]]
    assert handed.handed_off_at == at(1300) and handed.outcome == "needs_human"
    assert handed.handoff_notes.startswith("Caller asks for a person.")
    assert handed.sync_status == "dead"
    assert [(j.kind, j.status, j.error) for j in handed.open_jobs] == [
        ("crm_log_conversation", "dead", "Rejected: 400 bad property")]

    failed = next(o for o in outcomes.values() if o.conversation_id == ids["a3_conversation"])
    assert failed.source == "forwarded" and failed.followups_sent == 1
    assert [(f.status, f.error_code) for f in failed.delivery_failures] == [("undelivered", 30003)]
    assert failed.sync_status == "failed"  # a send job tied to the call through its message
    assert [(j.kind, j.error) for j in failed.open_jobs] == [("send_sms", "Rejected: twilio 400 21610")]
    api = [o for o in outcomes.values() if o.source == "api"]
    assert len(api) == 1 and api[0].opted_out_at == at(9100) and api[0].opt_out_source == "sms_keyword"


def test_a_held_slot_is_qualified_but_not_booked(sqlite_db):
    seed_known_report(sqlite_db)
    with sqlite_db.transaction() as session:
        held = [o for o in missed_call_outcomes(session, since=MARCH) if o.booking_status == "held"]
    assert len(held) == 1 and held[0].qualified and not held[0].booked and held[0].booked_at is None


def test_nearest_rank_is_exact_on_small_sets():
    assert nearest_rank([10.0, 20.0, 30.0, 40.0], 50) == 20.0
    assert nearest_rank([7.0], 99) == 7.0
    assert percentiles([None, None]).model_dump() == {"count": 0, "p50": None, "p90": None, "p99": None}


def test_the_json_has_funnel_at_the_top_per_tenant_and_in_total(sqlite_db):
    import json

    seed_known_report(sqlite_db)
    data = json.loads(_report(sqlite_db).as_json())
    assert data["schema"] == "textback.report/1"
    assert data["funnel"] == data["total"]["funnel"] == {"missed": 9, "texted": 6, "replied": 5, "qualified": 3,
                                                         "booked": 2}
    assert set(data["tenants"]) == {"alpha", "beta"}
    assert all(set(section["funnel"]) == {"missed", "texted", "replied", "qualified", "booked"}
               for section in data["tenants"].values())
