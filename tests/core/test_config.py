"""The tenants file: valid files load; every mistake is reported as file:line with the fix."""

from __future__ import annotations

import textwrap

import pytest

from connectors.registry import validate_connector
from core.config import ConfigError, load_tenants

VALID = """\
tenants:
  - id: smith-law
    name: Smith & Lee Law
    vertical: law
    timezone: America/New_York
    phone_numbers: ["+15550001111"]
    forward_to: ["(555) 000-2222"]
    missed_call: {mode: dial, ring_seconds: 18, cooldown_hours: 24}
    hours:
      mon: "09:00-17:00"
      tue: ["09:00-12:00", "13:00-17:00"]
      sat: closed
    booking: {duration_minutes: 30}
    connectors:
      sms: {type: twilio, account_sid: AC0123456789abcdef0123456789abcdef, auth_token: env:TEST_TWILIO_TOKEN}
      crm: {type: hubspot, access_token: env:TEST_HUBSPOT_TOKEN}
"""


@pytest.fixture(autouse=True)
def _secrets(monkeypatch):
    monkeypatch.setenv("TEST_TWILIO_TOKEN", "tok")
    monkeypatch.setenv("TEST_HUBSPOT_TOKEN", "pat")


def _write(tmp_path, text: str):
    path = tmp_path / "tenants.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def _problems(path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_tenants(path, validate_connector=validate_connector)
    return [str(p) for p in info.value.problems]


def test_a_valid_file_loads_with_numbers_normalised_and_secrets_resolved(tmp_path):
    tenants = load_tenants(_write(tmp_path, VALID), validate_connector=validate_connector)

    tenant = tenants.by_number("+1 555 000 1111")
    assert tenant.id == "smith-law"
    assert tenant.forward_to == ["+15550002222"]
    assert tenant.connectors["sms"].auth_token.get_secret_value() == "tok"
    assert tenant.connectors["crm"].base_url == "https://api.hubapi.com"
    assert [r[0].hour for r in tenant.hours.ranges(1)] == [9, 13]
    assert tenant.hours.ranges(5) == []


def test_an_unknown_vertical_is_reported_on_its_line(tmp_path):
    path = _write(tmp_path, VALID.replace("vertical: law", "vertical: plumbing"))

    [problem] = _problems(path)

    assert problem.startswith(f"{path}:4:15: tenants.0.vertical:")
    assert "law" in problem and "real_estate" in problem


def test_a_missing_secret_names_the_variable_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_HUBSPOT_TOKEN")

    [problem] = _problems(_write(tmp_path, VALID))

    assert ":16:42: tenants.0.connectors.crm.access_token: " in problem
    assert "TEST_HUBSPOT_TOKEN is not set" in problem


def test_an_inline_secret_is_refused(tmp_path):
    [problem] = _problems(_write(tmp_path, VALID.replace("env:TEST_TWILIO_TOKEN", "s3cr3t")))

    assert ":15:88: tenants.0.connectors.sms.auth_token: " in problem and "inline secrets are not allowed" in problem


def test_an_unknown_connector_type_lists_the_installed_ones(tmp_path):
    [problem] = _problems(_write(tmp_path, VALID.replace("type: hubspot", "type: salesforce")))

    assert ":16:7: tenants.0.connectors.crm: " in problem and "salesforce" in problem and "hubspot" in problem


def test_a_connector_under_the_wrong_role_says_where_it_belongs(tmp_path):
    text = VALID.replace("crm: {type: hubspot, access_token: env:TEST_HUBSPOT_TOKEN}",
                         "crm: {type: twilio, account_sid: AC0123456789abcdef0123456789abcdef, auth_token: env:TEST_TWILIO_TOKEN}")
    [problem] = _problems(_write(tmp_path, text))

    assert "is a sms connector, not crm" in problem


def test_bad_hours_a_bad_zone_and_a_misspelt_key_are_all_reported(tmp_path):
    text = (VALID.replace('mon: "09:00-17:00"', 'mon: "5pm-9am"')
            .replace("America/New_York", "America/Gotham")
            .replace("booking: {duration_minutes: 30}", "booking: {duration_minute: 30}"))
    problems = _problems(_write(tmp_path, text))

    joined = "\n".join(problems)
    assert ":5:15: tenants.0.timezone: unknown time zone 'America/Gotham'" in joined
    assert "write it as \"09:00-17:00\"" in joined
    assert ":13:15: tenants.0.booking.duration_minute: is not a known setting; remove it or check its spelling (did you mean duration_minutes?)" in joined


def test_dial_mode_without_staff_numbers_explains_both_fixes(tmp_path):
    [problem] = _problems(_write(tmp_path, VALID.replace('forward_to: ["(555) 000-2222"]', "forward_to: []")))

    assert "forward_to is empty" in problem and "mode: forwarded" in problem


def test_a_number_claimed_by_two_tenants_is_an_error(tmp_path):
    second = VALID.split("tenants:\n", 1)[1].replace("smith-law", "other-law")
    [problem] = _problems(_write(tmp_path, VALID + second))

    assert "already belongs to tenant 'smith-law'" in problem


def test_yaml_syntax_errors_carry_their_line(tmp_path):
    [problem] = _problems(_write(tmp_path, VALID.replace("    name: Smith & Lee Law", "    name: [unclosed")))

    assert problem.startswith(str(tmp_path / "tenants.yaml") + ":")
    assert "not valid YAML" in problem


def test_a_playbook_override_rewords_a_question_for_that_tenant_only(tmp_path):
    text = VALID + """    playbook:
      steps:
        - id: deadline
          ask: "Do you have a court date or filing deadline in the next week? Reply YES or NO."
"""
    tenants = load_tenants(_write(tmp_path, text), validate_connector=validate_connector)

    playbook = tenants.get("smith-law").conversation_playbook()
    assert playbook.step("deadline").ask.startswith("Do you have a court date or filing deadline")
    assert playbook.step("matter_type").ask.startswith("What is your call about?")


def test_a_playbook_override_that_patches_an_unknown_step_is_reported_on_its_line(tmp_path):
    text = VALID + """    playbook:
      steps:
        - id: favourite_colour
          ask: "What is your favourite colour?"
"""
    [problem] = _problems(_write(tmp_path, text))

    assert problem.startswith(f"{tmp_path / 'tenants.yaml'}:19:15: tenants.0.playbook: playbook override")
    assert "favourite_colour" in problem and "steps are" in problem
