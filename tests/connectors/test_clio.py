"""The Clio connector against the Clio sandbox, over real HTTP through httpx."""

from __future__ import annotations

import itertools
import socket
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from connectors.base import AuthExpired, CRMConnector, RateLimited, Rejected, Transient
from connectors.clio import ClioConfig, ClioCRM
from core.models import BookingRecord, ContactRecord, ConversationLog, Direction, Opportunity, TranscriptLine
from sandbox.clio import ClioSandbox, create_app
from sandbox.server import serve

_numbers = itertools.count(1)
EASTERN = timezone(timedelta(hours=-5))
START = datetime(2030, 3, 4, 10, 0, tzinfo=EASTERN)


def new_phone() -> str:
    return f"+1555011{next(_numbers):04d}"


def national(phone: str) -> str:
    return f"({phone[2:5]}) {phone[5:8]}-{phone[8:]}"


@pytest.fixture(scope="module")
def clio() -> ClioSandbox:
    return ClioSandbox(rate_limit=100_000)


@pytest.fixture(scope="module")
def url(clio):
    with serve(create_app(clio)) as served:
        yield served.url


@pytest.fixture(scope="module")
def token(clio) -> str:
    return clio.issue_token()


def connector(url: str, token: str | None, *, http: httpx.Client | None = None, **settings) -> ClioCRM:
    config = ClioConfig(type="clio", base_url=url, access_token=SecretStr(token) if token else None, **settings)
    return ClioCRM(config, http=http)


@pytest.fixture
def crm(url, token) -> ClioCRM:
    return connector(url, token)


def seed_person(clio: ClioSandbox, **data) -> dict:
    return clio.store.create("contacts", {"type": "Person", **data})


def transcript(*bodies: str) -> ConversationLog:
    return ConversationLog(title="textback conversation", summary="Outcome: booked", answers={"matter_type": "family"},
                           lines=[TranscriptLine(at=START + timedelta(minutes=i), body=body,
                                                 direction=Direction.inbound if i % 2 else Direction.outbound)
                                  for i, body in enumerate(bodies)])


class Recorder:
    """An httpx client whose requests the test can read (and act on before they are sent)."""

    def __init__(self, before=None) -> None:
        self.requests: list[httpx.Request] = []
        self.before = before
        self.http = httpx.Client(event_hooks={"request": [self._seen]})

    def _seen(self, request: httpx.Request) -> None:
        self.requests.append(request)
        if self.before:
            self.before(request)


# --- configuration ---------------------------------------------------------------------------------

def test_the_connector_declares_its_role_config_and_protocol(crm):
    assert (ClioCRM.role, ClioCRM.config_model) == ("crm", ClioConfig)
    assert isinstance(crm, CRMConnector)
    defaults = ClioConfig(type="clio")
    assert (defaults.base_url, defaults.matter_status, defaults.transcript_as) == (
        "https://app.clio.com", "Pending", "communication")


@pytest.mark.parametrize("base_url", ["https://eu.app.clio.com", "https://ca.app.clio.com/", "https://au.app.clio.com",
                                      "http://127.0.0.1:8000"])
def test_clio_regions_and_local_servers_are_accepted_as_base_urls(base_url):
    assert ClioConfig(type="clio", base_url=base_url).base_url == base_url.rstrip("/")


@pytest.mark.parametrize("settings", [{"base_url": "https://uk.app.clio.com"}, {"base_url": "http://app.clio.com"},
                                      {"base_url": "https://app.clio.com/api/v4"},
                                      {"grow_base_url": "https://grow.clio.com.evil.example/x"},
                                      {"access_token": "inline-secret"}, {"matter_status": "Closed"}])
def test_settings_clio_would_not_work_with_are_refused(settings):
    with pytest.raises(ValidationError):
        ClioConfig.model_validate({"type": "clio", **settings})


# --- contacts ------------------------------------------------------------------------------------

def test_a_new_caller_becomes_a_person_with_their_mobile_and_the_number_as_placeholder_name(crm, clio):
    phone = new_phone()

    contact_id = crm.upsert_contact(ContactRecord(phone=phone))

    stored = clio.record("contacts", contact_id)
    assert (stored["type"], stored["last_name"], stored.get("first_name")) == ("Person", national(phone), None)
    assert [(n["number"], n["name"], n["primary"]) for n in stored["phone_numbers"]] == [(phone, "Mobile", True)]


def test_a_contact_staff_typed_in_national_format_is_found_and_keeps_their_names(crm, clio):
    phone = new_phone()
    typed = seed_person(clio, first_name="Rosa", last_name="Parks", phone_numbers=[{"number": national(phone)}])

    contact_id = crm.upsert_contact(ContactRecord(phone=phone, first_name="Rose", last_name="P",
                                                  email="rosa@example.com"))

    stored = clio.record("contacts", contact_id)
    assert contact_id == str(typed["id"])
    assert (stored["first_name"], stored["last_name"]) == ("Rosa", "Parks")
    assert stored["primary_email_address"] == "rosa@example.com"
    assert len(stored["phone_numbers"]) == 1


def test_a_contact_typed_with_dashes_only_is_found_by_the_local_format(crm, clio):
    phone = new_phone()
    typed = seed_person(clio, last_name="Dashed", phone_numbers=[{"number": f"{phone[2:5]}-{phone[5:8]}-{phone[8:]}"}])

    assert crm.upsert_contact(ContactRecord(phone=phone)) == str(typed["id"])


def test_a_number_that_only_contains_the_callers_digits_is_not_taken_for_theirs(crm, clio):
    phone = new_phone()
    seed_person(clio, last_name="Extension", phone_numbers=[{"number": f"{national(phone)}9"}])

    contact_id = crm.upsert_contact(ContactRecord(phone=phone))

    assert clio.record("contacts", contact_id)["last_name"] == national(phone)


def test_a_replay_with_the_existing_id_updates_the_placeholder_instead_of_creating_another(crm, clio):
    phone = new_phone()
    first = crm.upsert_contact(ContactRecord(phone=phone))
    before = len(clio.records("contacts"))

    again = crm.upsert_contact(ContactRecord(phone=phone, first_name="Lena"), existing_id=first)
    replay = crm.upsert_contact(ContactRecord(phone=phone, first_name="Lena"), existing_id=first)

    stored = clio.record("contacts", first)
    assert again == replay == first and len(clio.records("contacts")) == before
    assert (stored["first_name"], stored.get("last_name"), stored["name"]) == ("Lena", None, "Lena")


def test_a_contact_staff_deleted_is_created_again_instead_of_failing_every_retry(crm, clio):
    phone = new_phone()
    deleted = crm.upsert_contact(ContactRecord(phone=phone))
    clio.store.delete("contacts", deleted)

    again = crm.upsert_contact(ContactRecord(phone=phone, first_name="Xia"), existing_id=deleted)

    assert again != deleted and clio.record("contacts", again)["first_name"] == "Xia"


def test_a_contact_edited_between_read_and_write_is_read_again_through_its_etag(url, token, clio):
    phone = new_phone()
    typed = seed_person(clio, last_name="Racer", phone_numbers=[{"number": phone}])
    edits = iter([lambda: clio.store.update("contacts", typed["id"], {"title": "Dr."})])

    def staff_edit_first(request: httpx.Request) -> None:
        if request.method == "PATCH":
            next(edits, lambda: None)()

    recorder = Recorder(before=staff_edit_first)
    contact_id = connector(url, token, http=recorder.http).upsert_contact(
        ContactRecord(phone=phone, first_name="Ruth"))

    patches = [r for r in recorder.requests if r.method == "PATCH"]
    stored = clio.record("contacts", contact_id)
    assert len(patches) == 2 and all(r.headers["If-Match"].startswith('"') for r in patches)
    assert (stored["first_name"], stored["title"]) == ("Ruth", "Dr.")


def test_a_new_caller_is_also_sent_to_the_grow_lead_inbox_but_a_known_one_is_not(url, token, clio):
    inbox = clio.new_grow_inbox()
    crm = connector(url, token, grow_inbox_token=SecretStr(inbox), grow_base_url=url)
    phone, known = new_phone(), new_phone()
    seed_person(clio, last_name="Known", phone_numbers=[{"number": known}])

    crm.upsert_contact(ContactRecord(phone=phone))
    crm.upsert_contact(ContactRecord(phone=known))

    leads = clio.inbox_leads(inbox)
    assert [(x["from_first"], x["from_last"], x["from_phone"], x["from_source"]) for x in leads] == [
        ("Caller", national(phone), phone, "textback")]


def test_a_phone_that_is_not_e164_is_rejected_before_calling_clio(url, token):
    recorder = Recorder()

    with pytest.raises(Rejected, match="E.164"):
        connector(url, token, http=recorder.http).upsert_contact(ContactRecord(phone="555-0100"))
    assert recorder.requests == []


# --- transcripts, matters, bookings -------------------------------------------------------------------

def test_a_conversation_is_a_phone_communication_from_the_contact_updated_in_place(crm, clio):
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
    logged = crm.log_conversation(contact_id=contact_id, log=transcript("Sorry we missed you!"))

    same = crm.log_conversation(contact_id=contact_id, existing_id=logged,
                                log=transcript("Sorry we missed you!", "I need help with custody"))

    stored = clio.record("communications", logged)
    assert same == logged
    assert (stored["type"], stored["subject"], str(stored["date"])) == (
        "PhoneCommunication", "textback conversation", "2030-03-04")
    assert "I need help with custody" in stored["body"] and "matter_type: family" in stored["body"]
    assert [(p["type"], str(p["id"])) for p in stored["senders"]] == [("Contact", contact_id)]
    assert [(p["type"], p["id"]) for p in stored["receivers"]] == [("User", clio.user["id"])]
    assert stored.get("matter") is None


def test_a_conversation_goes_on_the_contacts_open_matter_when_it_has_one(crm, clio):
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
    clio.store.create("matters", {"client": {"id": contact_id}, "description": "Old", "status": "Closed"})
    current = crm.upsert_opportunity(contact_id=contact_id, opportunity=Opportunity(name="Custody"))

    logged = crm.log_conversation(contact_id=contact_id, log=transcript("hello"))

    assert str(clio.record("communications", logged)["matter"]) == current


def test_transcripts_can_be_notes_on_the_contact_or_on_its_matter(url, token, clio):
    crm = connector(url, token, transcript_as="note")
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
    on_contact = crm.log_conversation(contact_id=contact_id, log=transcript("hello"), key="conversation-1")
    matter_id = crm.upsert_opportunity(contact_id=contact_id, opportunity=Opportunity(name="Estate"))

    on_matter = crm.log_conversation(contact_id=contact_id, log=transcript("hello", "a will"), key="conversation-2")
    updated = crm.log_conversation(contact_id=contact_id, existing_id=on_contact, log=transcript("hello", "again"))

    note, matter_note = clio.record("notes", on_contact), clio.record("notes", on_matter)
    assert updated == on_contact and "again" in note["detail"]
    assert (note["type"], str(note["contact"])) == ("Contact", contact_id)
    assert (matter_note["type"], str(matter_note["matter"])) == ("Matter", matter_id)


def test_a_qualified_lead_is_a_pending_matter_with_the_mapped_practice_area(url, token, clio):
    area = clio.add_practice_area("Family Law")
    crm = connector(url, token, practice_areas={"injury": "Personal Injury", "family": "Family Law"})
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
    matter_id = crm.upsert_opportunity(contact_id=contact_id, opportunity=Opportunity(
        name="+15550110000: matter_type: family, deadline: no", description="Qualified by textback."))
    clio.store.update("matters", matter_id, {"status": "Open"})

    same = crm.upsert_opportunity(contact_id=contact_id, existing_id=matter_id,
                                  opportunity=Opportunity(name="Custody and support"))

    stored = clio.record("matters", matter_id)
    assert same == matter_id
    assert (str(stored["client"]), stored["practice_area"], stored["status"]) == (contact_id, area["id"], "Open")
    assert stored["description"].startswith("Custody and support\n\ntextback ref: tb")


def test_the_practice_area_is_found_past_the_first_page_of_practice_areas(url, token, clio):
    for i in range(205):
        clio.add_practice_area(f"Area {i}")
    crm = connector(url, token, practice_areas={"estate": "Area 204"})
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))

    matter_id = crm.upsert_opportunity(contact_id=contact_id, opportunity=Opportunity(name="matter_type: estate"))

    area = clio.record("matters", matter_id)["practice_area"]
    assert clio.record("practice_areas", area)["name"] == "Area 204"


def test_a_practice_area_clio_does_not_have_is_rejected(url, token):
    crm = connector(url, token, practice_areas={"criminal": "Criminal Defence"})
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))

    with pytest.raises(Rejected, match="Criminal Defence"):
        crm.upsert_opportunity(contact_id=contact_id, opportunity=Opportunity(name="criminal"))


def test_a_matter_staff_deleted_is_created_again_for_the_contact(crm, clio):
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
    deleted = crm.upsert_opportunity(contact_id=contact_id, opportunity=Opportunity(name="Bridge"))
    clio.store.delete("matters", deleted)

    again = crm.upsert_opportunity(contact_id=contact_id, existing_id=deleted, opportunity=Opportunity(name="Bridge"))

    assert again != deleted and str(clio.record("matters", again)["client"]) == contact_id


def test_a_booking_is_a_calendar_entry_with_the_contact_attending_moved_in_place(url, token, clio):
    calendar = clio.add_calendar("Intake")
    crm = connector(url, token, calendar_id=calendar["id"])
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
    booking = BookingRecord(title="Consultation", start=START, end=START + timedelta(minutes=30), description="Family")
    entry_id = crm.record_booking(contact_id=contact_id, booking=booking)

    moved = crm.record_booking(contact_id=contact_id, existing_id=entry_id, booking=booking.model_copy(
        update={"start": START + timedelta(days=1), "end": START + timedelta(days=1, minutes=30)}))

    stored = clio.record("calendar_entries", entry_id)
    assert moved == entry_id and stored["calendar_owner"] == calendar["id"]
    assert (stored["start_at"], stored["end_at"]) == (START + timedelta(days=1), START + timedelta(days=1, minutes=30))
    assert stored["start_at"].utcoffset() == timedelta(hours=-5)
    assert [(a["type"], str(a["id"])) for a in stored["attendees"]] == [("Contact", contact_id)]


def test_without_a_calendar_id_bookings_go_on_the_token_users_own_calendar(crm, clio):
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))

    entry_id = crm.record_booking(contact_id=contact_id, booking=BookingRecord(
        title="Call back", start=START, end=START + timedelta(minutes=15)))

    assert clio.record("calendar_entries", entry_id)["calendar_owner"] == clio.user["calendar_id"]


def test_booking_times_without_an_offset_are_rejected(crm):
    naive = datetime(2030, 3, 4, 10)

    with pytest.raises(Rejected, match="offset"):
        crm.record_booking(contact_id="1", booking=BookingRecord(title="x", start=naive, end=naive))


def test_reads_ask_for_the_fields_they_use_and_page_with_the_cursor(url, token):
    recorder = Recorder()
    crm = connector(url, token, http=recorder.http)

    crm.log_conversation(contact_id=crm.upsert_contact(ContactRecord(phone=new_phone())), log=transcript("hi"))

    for request in recorder.requests:
        query = parse_qs(urlsplit(str(request.url)).query)
        assert "fields" in query, request.url
        if request.method == "GET" and "who_am_i" not in request.url.path:
            assert (query["order"], query["limit"]) == (["id(asc)"], ["200"])


def with_lost_answer(clio: ClioSandbox, url: str, token: str, path: str, **settings) -> ClioCRM:
    """A connector whose next call to `path` reaches Clio, is carried out, and is answered too late."""
    clio.faults.delay_next(path, seconds=1.0)
    return connector(url, token, http=httpx.Client(timeout=0.3), **settings)


@pytest.mark.parametrize("kind, write", [
    ("communications", lambda crm, contact_id, key: crm.log_conversation(
        contact_id=contact_id, log=transcript("hello"), key=key)),
    ("matters", lambda crm, contact_id, key: crm.upsert_opportunity(
        contact_id=contact_id, opportunity=Opportunity(name="Estate"), key=key)),
    ("calendar_entries", lambda crm, contact_id, key: crm.record_booking(
        contact_id=contact_id, booking=BookingRecord(title="Consult", start=START, end=START + timedelta(hours=1)),
        key=key)),
])
def test_a_create_whose_answer_was_lost_is_found_by_its_ref_on_retry(url, token, clio, kind, write):
    crm = connector(url, token)
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
    before = len(clio.records(kind))

    with pytest.raises(Transient):
        write(with_lost_answer(clio, url, token, f"/api/v4/{kind}"), contact_id, f"key-{kind}")
    again = write(crm, contact_id, f"key-{kind}")

    assert len(clio.records(kind)) == before + 1 and clio.record(kind, again)
    assert write(crm, contact_id, f"another-key-{kind}") != again


def test_a_note_whose_answer_was_lost_is_found_by_its_ref_on_retry(url, token, clio):
    crm = connector(url, token, transcript_as="note")
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))

    with pytest.raises(Transient):
        with_lost_answer(clio, url, token, "/api/v4/notes", transcript_as="note").log_conversation(
            contact_id=contact_id, log=transcript("hello"), key="key-note")
    again = crm.log_conversation(contact_id=contact_id, log=transcript("hello", "more"), key="key-note")

    notes = [n for n in clio.records("notes") if str(n.get("contact")) == contact_id]
    assert [str(n["id"]) for n in notes] == [again] and "more" in notes[0]["detail"]


# --- failures ----------------------------------------------------------------------------------------

def test_a_token_clio_does_not_know_raises_auth_expired(url):
    with pytest.raises(AuthExpired) as raised:
        connector(url, "revoked").upsert_contact(ContactRecord(phone=new_phone()))

    assert raised.value.status == 401 and "invalid_token" in str(raised.value)


def test_without_any_token_the_connector_asks_for_re_auth_without_calling_clio(url):
    recorder = Recorder()

    with pytest.raises(AuthExpired, match="not connected"):
        connector(url, None, http=recorder.http).upsert_contact(ContactRecord(phone=new_phone()))
    assert recorder.requests == []


def test_a_429_raises_rate_limited_with_clios_retry_after(crm, clio):
    clio.faults.fail_next("/api/v4/contacts", status=429, retry_after=9)

    with pytest.raises(RateLimited) as raised:
        crm.upsert_contact(ContactRecord(phone=new_phone()))

    assert raised.value.retry_after == 9.0


def test_running_out_of_the_minutes_budget_raises_rate_limited_until_the_window_resets():
    clio = ClioSandbox(rate_limit=2)
    with serve(create_app(clio)) as served:
        crm = connector(served.url, clio.issue_token())
        with pytest.raises(RateLimited) as raised:
            crm.upsert_contact(ContactRecord(phone=new_phone()))

    assert 1 <= raised.value.retry_after <= 60


def test_a_5xx_raises_transient_and_the_next_attempt_succeeds(crm, clio):
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))
    clio.faults.fail_next("/api/v4/communications", status=502)

    with pytest.raises(Transient) as raised:
        crm.log_conversation(contact_id=contact_id, log=transcript("hello"))

    assert raised.value.status == 502
    assert crm.log_conversation(contact_id=contact_id, log=transcript("hello"))


def test_a_422_raises_rejected_with_clios_message(crm):
    contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))

    with pytest.raises(Rejected) as raised:
        crm.record_booking(contact_id=contact_id, booking=BookingRecord(
            title="Backwards", start=START, end=START - timedelta(hours=1)))

    assert raised.value.status == 422 and "End at must be after start at" in str(raised.value)


def test_an_unreachable_clio_raises_transient():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]

    with pytest.raises(Transient):
        connector(f"http://127.0.0.1:{port}", "token").upsert_contact(ContactRecord(phone=new_phone()))


# --- OAuth ---------------------------------------------------------------------------------------------

def test_tokens_from_the_oauth_code_flow_drive_the_connector_and_refresh_after_expiry():
    clio = ClioSandbox()
    client_id, secret = clio.new_client(redirect_uris=("https://textback.example/clio/callback",))
    with serve(create_app(clio)) as served, httpx.Client(base_url=served.url) as http:
        redirect = http.get("/oauth/authorize", params={"response_type": "code", "client_id": client_id,
                                                        "redirect_uri": "https://textback.example/clio/callback"})
        code = parse_qs(urlsplit(redirect.headers["location"]).query)["code"][0]
        form = {"client_id": client_id, "client_secret": secret}
        tokens = http.post("/oauth/token", data={**form, "grant_type": "authorization_code", "code": code,
                                                 "redirect_uri": "https://textback.example/clio/callback"}).json()
        crm = ClioCRM(ClioConfig(type="clio", base_url=served.url), token=lambda: tokens["access_token"])
        contact_id = crm.upsert_contact(ContactRecord(phone=new_phone()))

        clio.oauth.expire_access_tokens()
        with pytest.raises(AuthExpired):
            crm.upsert_contact(ContactRecord(phone=new_phone()))
        tokens |= http.post("/oauth/token", data={**form, "grant_type": "refresh_token",
                                                  "refresh_token": tokens["refresh_token"]}).json()
        refreshed_id = crm.upsert_contact(ContactRecord(phone=new_phone()))

    assert {r["id"] for r in clio.records("contacts")} == {int(contact_id), int(refreshed_id)}
