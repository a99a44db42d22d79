"""Who gets the first text, and when: one table-driven test per rule, through the real webhooks.

Given a tenant and a caller, When the call is missed (or reported), Then exactly the expected texts go out
and the reason for any skip is on the call.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select

from core.store.tables import Call, Conversation
from tests.webhooks.conftest import BUSINESS, CALLER, STAFF
from tests.webhooks.policy_support import world

LA_CALLER = "+13105550123"  # phonenumbers places 310 in America/Los_Angeles
LA, NY = ZoneInfo("America/Los_Angeles"), ZoneInfo("America/New_York")
# The clock is injected everywhere, rows included: the time-driven rules hold on any date, not only today's.
ANY_YEAR = pytest.mark.parametrize("year", [2026, 2041])


@pytest.fixture
def make_world(stack, sqlite_db, tmp_path, monkeypatch):
    def make(**overrides):
        return world(stack=stack, db=sqlite_db, tmp_path=tmp_path, monkeypatch=monkeypatch, **overrides)
    return make


@pytest.mark.parametrize("dial_status,answered_by,duration,texted", [
    ("no-answer", None, 0, True),
    ("busy", None, 0, True),
    ("failed", None, 0, True),
    ("canceled", None, 0, True),
    ("completed", "machine_end_beep", 40, True),
    ("completed", "machine_start", 25, True),
    ("completed", "fax", 30, True),
    ("completed", None, 4, True),       # shorter than min_answered_seconds: carrier voicemail or a hang-up
    ("completed", "human", 95, False),
    ("completed", None, 60, False),
])
def test_dial_outcomes_decide_whether_the_call_was_missed(make_world, dial_status, answered_by, duration, texted):
    with make_world() as w:
        w.miss(status=dial_status, answered_by=answered_by, duration=duration)

        assert len(w.texts()) == (1 if texted else 0)


@pytest.mark.parametrize("caller,given,reason", [
    ("anonymous", {}, "invalid_number"),
    ("+266696687", {}, "invalid_number"),
    ("12", {}, "invalid_number"),
    (CALLER, {"blocklist": [CALLER]}, "blocklisted"),
    (STAFF, {}, "internal_number"),
    ("+15550009999", {"handoff_to": ["+15550009999"]}, "internal_number"),
])
def test_callers_who_must_never_be_texted_are_skipped_with_a_reason(make_world, caller, given, reason):
    with make_world(**given) as w:
        w.miss(caller=caller)

        assert w.skip_reasons() == [reason]
        assert w.stack.twilio.all_messages() == []


@pytest.mark.parametrize("lead_state,reason", [
    ({"do_not_text": True}, "do_not_text"),
    ({"undeliverable_code": 30007}, "undeliverable"),
])
def test_leads_marked_by_staff_or_the_carrier_are_skipped(make_world, lead_state, reason):
    with make_world() as w:
        w.update_lead(**lead_state)

        w.miss()

        assert w.skip_reasons() == [reason] and w.texts() == []


def test_two_rings_from_one_caller_within_the_cooldown_send_one_text(make_world):
    with make_world() as w:
        w.miss(sid="CA" + "1" * 32)
        w.miss(sid="CA" + "2" * 32)

        assert len(w.texts()) == 1
        assert w.skip_reasons() == [None, "active_conversation"]


def test_after_a_conversation_ends_the_caller_is_not_texted_again_until_the_cooldown_passes(make_world):
    with make_world() as w:
        w.clock.set(datetime(2026, 12, 1, 10, 0, tzinfo=NY))
        w.miss(sid="CA" + "1" * 32)
        with w.textback.runtime.db.transaction() as s:
            s.scalar(select(Conversation)).state = "handoff"  # staff took it from here

        w.later(hours=2)
        w.miss(sid="CA" + "2" * 32)
        w.later(hours=23)
        w.miss(sid="CA" + "3" * 32)

        assert w.skip_reasons() == [None, "cooldown", None]
        assert len(w.texts()) == 2


def test_the_first_text_uses_the_after_hours_wording_when_the_business_is_closed(make_world):
    with make_world(hours={"mon": "09:00-17:00", "tue": "09:00-17:00"}) as w:
        w.clock.set(datetime(2026, 11, 30, 19, 0, tzinfo=NY))  # Monday 7 pm: closed, opens Tuesday 9 am

        w.miss()

        [text] = w.texts()
        assert "we're closed now and open tomorrow at 9:00 AM" in text
        assert "automated" in text and "Smith & Lee Law" in text


def test_a_landline_found_by_lookup_is_not_texted_and_the_reason_is_recorded(make_world):
    with make_world(missed_call={"lookup_line_type": True}) as w:
        w.stack.twilio.set_line_type(CALLER, "landline")

        w.miss()

        assert w.texts() == [] and w.skip_reasons() == ["landline"]
        assert w.lead().line_type == "landline"


@ANY_YEAR
def test_with_a_delay_the_text_waits_and_is_cancelled_if_the_caller_gets_through_meanwhile(make_world, year):
    with make_world(missed_call={"delay_seconds": 90}) as w:
        w.clock.set(datetime(year, 12, 1, 10, 0, tzinfo=NY))
        w.miss(sid="CA" + "1" * 32)
        assert w.texts() == []

        w.clock.advance(seconds=30)
        w.miss(sid="CA" + "2" * 32, status="completed", duration=120, answered_by="human")
        w.later(seconds=61)

        assert w.texts() == []
        assert w.skip_reasons() == ["answered_meanwhile", None]


@ANY_YEAR
def test_with_a_delay_and_no_callback_the_text_goes_out_after_the_delay(make_world, year):
    with make_world(missed_call={"delay_seconds": 90}) as w:
        w.clock.set(datetime(year, 12, 1, 10, 0, tzinfo=NY))
        w.miss()
        w.later(seconds=89)
        assert w.texts() == []

        w.later(seconds=2)

        assert len(w.texts()) == 1


@ANY_YEAR
def test_at_half_past_ten_caller_local_the_first_reply_goes_out_and_the_follow_up_waits_for_eight(make_world, year):
    with make_world(followups={"max": 1, "after_hours": 1}) as w:
        w.clock.set(datetime(year, 12, 1, 22, 30, tzinfo=LA))

        w.miss(caller=LA_CALLER)
        assert len(w.texts(LA_CALLER)) == 1

        w.later(hours=1, minutes=1)  # the follow-up is due at 23:30 local: too late
        assert len(w.texts(LA_CALLER)) == 1
        [deferred] = [r for r in w.rows("send_sms") if r.status == "pending"]
        assert deferred.not_before.astimezone(LA) == datetime(year, 12, 2, 8, 0, tzinfo=LA)

        w.later(hours=8, minutes=30)  # 08:01 local
        texts = w.texts(LA_CALLER)
        assert len(texts) == 2 and texts[1].startswith("Hi again from Smith & Lee Law")


@ANY_YEAR
def test_when_the_tenant_does_not_allow_it_even_the_first_reply_waits_for_the_window(make_world, year):
    with make_world(quiet_hours={"first_reply_anytime": False}) as w:
        w.clock.set(datetime(year, 12, 1, 22, 30, tzinfo=LA))

        w.miss(caller=LA_CALLER)
        assert w.texts(LA_CALLER) == []

        w.later(hours=9, minutes=31)  # 08:01 local
        assert len(w.texts(LA_CALLER)) == 1


def test_forwarded_mode_treats_every_call_as_missed_and_speaks_the_greeting(make_world):
    with make_world(missed_call={"mode": "forwarded", "greeting": "Thanks for calling Smith and Lee."},
                    forward_to=[]) as w:
        response = w.phone.ring(call_sid="CA" + "f" * 32, caller=CALLER, to=BUSINESS)
        w.textback.drain()

        assert "<Say>Thanks for calling Smith and Lee.</Say>" in response.text and "<Dial" not in response.text
        assert len(w.texts()) == 1


def test_voicemail_is_recorded_and_its_transcription_reaches_the_crm(make_world):
    with make_world(missed_call={"voicemail": True}) as w:
        response = w.miss()
        assert '<Record action="/twilio/voice/recording"' in response.text and 'transcribe="true"' in response.text

        sid = "CA" + "1" * 32
        w.phone.signed_post("/twilio/voice/recording", {"CallSid": sid, "From": CALLER, "To": BUSINESS,
                                                        "RecordingUrl": "https://api.twilio.com/rec/RE1"})
        w.phone.signed_post("/twilio/voice/transcription", {
            "CallSid": sid, "From": CALLER, "To": BUSINESS, "TranscriptionStatus": "completed",
            "TranscriptionText": "Hi, I was in a car accident last week.", "RecordingUrl": "https://api.twilio.com/rec/RE1"})
        w.textback.drain()

        with w.textback.runtime.db.transaction() as s:
            call = s.scalar(select(Call))
        assert call.recording_url.endswith("RE1") and "car accident" in call.transcription
        [note] = w.stack.hubspot.objects("notes")
        assert "car accident" in note["properties"]["hs_note_body"]


class TestTheMissedCallsApi:
    KEY = "tbk_test-key-123"

    @pytest.fixture
    def w(self, make_world):
        import hashlib

        with make_world(api_key_sha256=hashlib.sha256(self.KEY.encode()).hexdigest()) as w:
            yield w

    def _post(self, w, key: str | None, **body):
        payload = {"caller": CALLER, "called": BUSINESS, "occurred_at": "2026-12-01T10:00:00-05:00",
                   "idempotency_key": "pbx-1", **body}
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = httpx.post(w.textback.url + "/api/v1/missed-calls", json=payload, headers=headers)
        w.textback.drain()
        return response

    def test_a_report_without_a_key_gets_401_and_leaves_no_trace(self, w):
        response = self._post(w, None)

        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert w.skip_reasons() == []

    def test_a_report_with_a_wrong_key_gets_403_and_leaves_no_trace(self, w):
        assert self._post(w, "tbk_guess").status_code == 403
        assert w.skip_reasons() == [] and w.texts() == []

    def test_a_report_is_texted_once_even_when_retried(self, w):
        first = self._post(w, self.KEY)
        again = self._post(w, self.KEY)

        assert first.status_code == 202 and first.json()["texted"] is True
        assert again.json()["duplicate"] is True
        assert len(w.texts()) == 1

    def test_reports_follow_the_same_policy(self, w):
        response = self._post(w, self.KEY, caller=STAFF)

        assert response.json() == {"call_id": 1, "texted": False, "skip_reason": "internal_number",
                                   "duplicate": False}

    def test_a_malformed_report_is_422_not_500(self, w):
        assert self._post(w, self.KEY, occurred_at="yesterday").status_code == 422
        assert self._post(w, self.KEY, occurred_at="2026-12-01T10:00:00").status_code == 422

    def test_the_endpoint_is_in_the_openapi_schema(self, w):
        schema = httpx.get(w.textback.url + "/openapi.json").json()

        assert "/api/v1/missed-calls" in schema["paths"]
        assert "idempotency_key" in schema["components"]["schemas"]["MissedCallReport"]["properties"]


def test_every_row_a_conversation_writes_is_stamped_from_the_one_clock(make_world):
    """With the clock far from today, no timestamp anywhere in the store comes from the wall clock."""
    from core.store.tables import Base, UTCDateTime

    at = datetime(2041, 6, 4, 10, 0, tzinfo=NY)
    with make_world() as w:
        w.clock.set(at)
        w.miss()
        w.clock.advance(minutes=2)
        w.text("its about my divorce")
        w.clock.advance(minutes=1)
        w.text("STOP")
        stamps = []
        with w.textback.runtime.db.transaction() as s:
            for table in Base.metadata.sorted_tables:
                for column in [c for c in table.columns if isinstance(c.type, UTCDateTime)]:
                    stamps += [(table.name, column.name, value) for value in
                               s.scalars(select(column).where(column.is_not(None)))]
        assert {name for name, _, _ in stamps} >= {"calls", "leads", "conversations", "messages", "outbox"}
        wall = [(t, c, v) for t, c, v in stamps if not at - timedelta(days=1) <= v <= at + timedelta(days=14)]
        assert wall == []  # follow-ups and deferrals fall days after the clock, never on today's date
