"""The /admin web app in a real headless Chromium: sign in, the funnel, a transcript, a takeover reply that
reaches the sandbox Twilio, a dead row replayed, another tenant's conversation 404, a form without CSRF refused."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import yaml
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import select

from connectors.registry import validate_connector
from core.admin_accounts import add_user
from core.config import load_tenants
from core.store.tables import Conversation, OutboxRow
from sandbox.phone import SandboxPhone
from sync.embedded import Embedded
from tests.webhooks.browser import chromium_driver
from tests.webhooks.conftest import BUSINESS, CALLER, miss_a_call, tenant_yaml, texts_to

# The README's picture of the dashboard, refreshed by every run of this test (TEXTBACK_SCREENSHOT=0 writes it to a
# temporary folder instead, to keep a working tree clean).
DOCS_SCREENSHOT = Path(__file__).parents[2] / "docs" / "admin-dashboard.png"
OWNER, OTHER, PASSWORD = "dana@smithlaw.example", "ray@otherfirm.example", "correct horse battery"


@pytest.fixture
def two_firms(tmp_path, stack, sqlite_db, monkeypatch):
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    other = tenant_yaml(stack, id="other-firm", name="Other Firm", phone_numbers=["+15550007777"],
                        forward_to=["+15550008888"],  # and a calendar id that does not exist
                        connectors=stack.connectors_yaml(calendars=["intake@otherfirm.example"]))
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tenants": [tenant_yaml(stack), other]}, sort_keys=False))
    tenants = load_tenants(path, validate_connector=validate_connector)
    with sqlite_db.transaction() as session:
        add_user(session, email=OWNER, password=PASSWORD, tenant_id="smith-law", agency=False)
        add_user(session, email=OTHER, password=PASSWORD, tenant_id="other-firm", agency=False)
    with Embedded(db=sqlite_db, tenants=tenants) as embedded:
        yield embedded


@pytest.fixture
def browser():
    driver = chromium_driver()
    yield driver
    driver.quit()


def sign_in(browser, url: str, email: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{url}/admin")
    assert browser.current_url.endswith("/admin/login")  # not signed in: sent to the sign-in page
    browser.find_element(By.ID, "email").send_keys(email)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "sign-in").click()
    WebDriverWait(browser, 10).until(lambda b: b.current_url.rstrip("/").endswith("/admin"))


def test_an_owner_runs_the_day_from_the_admin_pages(two_firms, stack, browser, tmp_path):
    textback = two_firms
    # Given one missed call whose caller answered the first question, and one dead CRM job
    with httpx.Client(timeout=10) as http:
        phone = SandboxPhone(app_url=textback.url, auth_token=stack.auth_token, account_sid=stack.account_sid,
                             twilio=stack.twilio, http=http)
        miss_a_call(phone)
        textback.drain()
        phone.text(caller=CALLER, to=BUSINESS, body="its about my divorce, my ex wont sign")
        textback.drain()
    with textback.runtime.db.transaction() as session:
        conversation_id = session.scalar(select(Conversation.id))
        dead = session.scalar(select(OutboxRow).where(OutboxRow.kind == "crm_sync_lead"))
        dead.status, dead.last_error, dead.attempts = "dead", "gave up after 10 tries; last error: Transient: 503", 10
        dead_id = dead.id

    # When the owner signs in, the dashboard shows the funnel of that call
    sign_in(browser, textback.url, OWNER)
    assert browser.current_url.endswith("/admin")
    funnel = {cell.get_attribute("data-step"): cell.text
              for cell in browser.find_elements(By.CSS_SELECTOR, "#funnel td[data-step]")}
    assert funnel == {"missed": "1", "texted": "1", "replied": "1", "qualified": "0", "booked": "0"}
    assert browser.find_element(By.CSS_SELECTOR, "svg title#funnel-title").get_attribute("textContent") == (
        "Funnel: missed 1, texted 1, replied 1, qualified 0, booked 0")
    screenshot = tmp_path / "admin-dashboard.png" if os.environ.get("TEXTBACK_SCREENSHOT") == "0" else DOCS_SCREENSHOT
    browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000  # a rendered page, not a blank one

    # And the conversations list leads to the transcript
    browser.find_element(By.LINK_TEXT, "Conversations").click()
    browser.find_element(By.LINK_TEXT, f"#{conversation_id}").click()
    transcript = browser.find_element(By.ID, "transcript").text
    assert "its about my divorce" in transcript and "automated" in transcript

    # When the owner takes over and replies, the text reaches the caller through the sandbox Twilio
    browser.find_element(By.ID, "body").send_keys("Hi, this is Dana from Smith & Lee. Can I call you at 3?")
    browser.find_element(By.ID, "send-reply").click()
    assert "the bot is paused" in browser.find_element(By.CSS_SELECTOR, "p.note").text
    textback.drain()
    assert texts_to(stack)[-1] == "Hi, this is Dana from Smith & Lee. Can I call you at 3?"
    with textback.runtime.db.transaction() as session:
        assert session.get(Conversation, conversation_id).paused

    # When the owner replays the dead row from the connector page, it runs again and is done
    browser.find_element(By.LINK_TEXT, "Connectors").click()
    assert "gave up after 10 tries" in browser.page_source
    browser.find_element(By.ID, f"replay-{dead_id}").click()
    assert f"row {dead_id} is queued again" in browser.find_element(By.CSS_SELECTOR, "p.note").text
    textback.drain()
    with textback.runtime.db.transaction() as session:
        assert session.get(OutboxRow, dead_id).status == "done"

    # And a form posted without its CSRF token is refused
    browser.get(f"{textback.url}/admin/conversations/{conversation_id}")
    browser.execute_script("document.querySelector('form[action$=\"/reply\"] input[name=csrf]').remove()")
    browser.find_element(By.ID, "body").send_keys("this must not be sent")
    browser.find_element(By.ID, "send-reply").click()
    # the click returns before the answer has loaded on a busy box: wait for it
    WebDriverWait(browser, 20).until(lambda b: "CSRF token is missing or wrong" in b.page_source)
    textback.drain()
    assert "this must not be sent" not in texts_to(stack)

    # And a user of another business gets 404 for this conversation by id, and sees none of its numbers
    sign_in(browser, textback.url, OTHER)
    browser.get(f"{textback.url}/admin/conversations/{conversation_id}")
    assert "no conversation" in browser.page_source
    browser.get(f"{textback.url}/admin")
    assert browser.find_element(By.CSS_SELECTOR, "#funnel td[data-step=missed]").text == "0"


def test_a_wrong_password_and_an_unknown_email_read_the_same(two_firms, browser):
    for email, password in ((OWNER, "wrong password!"), ("nobody@nowhere.example", PASSWORD)):
        browser.delete_all_cookies()
        browser.get(f"{two_firms.url}/admin/login")
        browser.find_element(By.ID, "email").send_keys(email)
        browser.find_element(By.ID, "password").send_keys(password)
        browser.find_element(By.ID, "sign-in").click()
        assert "do not match an account" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
        assert browser.current_url.endswith("/admin/login?failed=1")


def test_statuses_without_a_browser_404_for_another_tenant_403_without_csrf_303_when_signed_out(two_firms):
    from sqlalchemy import select as sql_select

    from core.store.tables import Lead

    textback = two_firms
    with textback.runtime.db.transaction() as session:
        lead = Lead(tenant_id="smith-law", phone=CALLER)
        session.add(lead)
        session.flush()
        session.add(Conversation(tenant_id="smith-law", lead_id=lead.id, business_number=BUSINESS, playbook="law",
                                 state="asking", answers={}, offered_slots=[]))
    with textback.runtime.db.transaction() as session:
        conversation_id = session.scalar(sql_select(Conversation.id))
    with httpx.Client(base_url=textback.url, timeout=10) as http:
        assert http.get("/admin/conversations").status_code == 303  # signed out: to the sign-in page
        assert http.post("/admin/login", data={"email": OWNER, "password": PASSWORD}).status_code == 403  # no CSRF
        form = http.get("/admin/login")
        csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        assert http.post("/admin/login", data={"email": OTHER, "password": PASSWORD, "csrf": csrf}).status_code == 303
        assert http.get(f"/admin/conversations/{conversation_id}").status_code == 404
        assert http.get(f"/admin/conversations/{conversation_id + 1000}").status_code == 404
        assert http.get("/admin?tenant=smith-law").status_code == 404
        page = http.get("/admin/conversations")
        assert page.status_code == 200 and CALLER not in page.text
        assert http.post(f"/admin/conversations/{conversation_id}/reply", data={"body": "hi"}).status_code == 403
        assert http.get("/admin/conversations?since=yesterday").status_code == 422


def test_test_connection_names_a_calendar_that_does_not_exist(two_firms):
    with httpx.Client(base_url=two_firms.url, timeout=10, follow_redirects=True) as http:
        form = http.get("/admin/login")
        csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        http.post("/admin/login", data={"email": OTHER, "password": PASSWORD, "csrf": csrf})
        page = http.get("/admin/connectors")
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        checked = http.post("/admin/connectors/other-firm/test", data={"csrf": csrf})
        assert checked.status_code == 200
        assert "calendar FAILED" in checked.text and "intake@otherfirm.example" in checked.text
        assert http.post("/admin/connectors/smith-law/test", data={"csrf": csrf}).status_code == 404
    with httpx.Client(base_url=two_firms.url, timeout=10, follow_redirects=True) as http:
        form = http.get("/admin/login")
        csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        http.post("/admin/login", data={"email": OWNER, "password": PASSWORD, "csrf": csrf})
        csrf = http.get("/admin/connectors").text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        checked = http.post("/admin/connectors/smith-law/test", data={"csrf": csrf})
        assert "calendar ok" in checked.text, checked.text[-2000:]
