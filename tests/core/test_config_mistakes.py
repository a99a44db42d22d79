"""Broken tenants files, one mistake each as an admin makes it: every problem is reported at once, at its
file:line:column, echoing the bad value (never a secret) and saying how to fix it."""

from __future__ import annotations

import pytest

from connectors.registry import validate_connector
from core.config import ConfigError, load_tenants

GOOGLE_KEY = ('{"type": "service_account", "client_email": "a@b.iam.gserviceaccount.com", "private_key": "k", '
              '"token_uri": "https://oauth2.googleapis.com/token"}')

VALID = """\
tenants:
  - id: smith-law
    name: Smith & Lee Law
    vertical: law
    timezone: America/New_York
    phone_numbers: ["+15550001111"]
    forward_to: ["+15550002222"]
    hours:
      mon: "09:00-17:00"
      sat: closed
    booking: {duration_minutes: 30}
    connectors:
      sms: {type: twilio, account_sid: AC0123456789abcdef0123456789abcdef, auth_token: env:TEST_TWILIO_TOKEN}
      crm: {type: hubspot, access_token: env:TEST_HUBSPOT_TOKEN}
      calendar: {type: google, calendars: [intake@firm.example], credentials: env:TEST_GOOGLE}
"""


CASES = [  # (name, the file as written)
    ("literal_env_sid", VALID.replace("account_sid: AC0123456789abcdef0123456789abcdef", "account_sid: env:NOPE_SID")),
    ("short_sid", VALID.replace("AC0123456789abcdef0123456789abcdef", "AC123")),
    ("duplicate_key", VALID.replace("    vertical: law\n", "    vertical: law\n    vertical: medical\n")),
    ("empty_secret", VALID.replace("env:TEST_HUBSPOT_TOKEN", "env:TEST_EMPTY")),
    ("unclosed_quote", VALID.replace('mon: "09:00-17:00"', 'mon: "09:00-17:00')),
    ("unclosed_bracket", VALID.replace('forward_to: ["+15550002222"]', 'forward_to: ["+15550002222"')),
    ("empty_file", ""),
    ("only_comment", "# nothing yet\n"),
    ("list_top", "- id: a\n"),
    ("bad_enum", VALID.replace("vertical: law", "vertical: lawyer")),
    ("unquoted_list", VALID.replace('phone_numbers: ["+15550001111"]', "phone_numbers: [+15550001111]")),
    ("number_not_list", VALID.replace('phone_numbers: ["+15550001111"]', "phone_numbers: +15550001111")),
    ("string_not_list", VALID.replace('phone_numbers: ["+15550001111"]', 'phone_numbers: "+15550001111"')),
    ("bad_phone", VALID.replace('forward_to: ["+15550002222"]', 'forward_to: ["555-CALL-NOW-PLEASE"]')),
    ("env_in_name", VALID.replace("name: Smith & Lee Law", "name: env:FIRM_NAME")),
    ("missing_hours", VALID.replace('    hours:\n      mon: "09:00-17:00"\n      sat: closed\n', "")),
    ("typo_key", VALID.replace("timezone:", "time_zone:")),
    ("bad_zone", VALID.replace("America/New_York", "EST5")),
    ("two_passes", VALID.replace("vertical: law", "vertical: lawyer").replace("env:TEST_HUBSPOT_TOKEN", "pat-inline")),
    ("unknown_role", VALID.replace("      crm: {type", "      crn: {type")),
    ("tab_indent", VALID.replace("    name: Smith", "\tname: Smith")),
    ("colon_value", VALID.replace("name: Smith & Lee Law", "name: Smith: Lee Law")),
    ("bad_hours", VALID.replace('mon: "09:00-17:00"', 'mon: "9am-5pm"')),
    ("bad_weekday", VALID.replace('sat: closed', 'saturday: closed').replace('mon: "09:00-17:00"', 'mnd: "09:00-17:00"')),
    ("top_level_extra", VALID + "tenant_defaults: {}\n"),
    ("route_not_booked", VALID.replace("booking: {duration_minutes: 30}", "booking: {routes: {matter_type: {family: [family@firm.example]}}}")),
    ("bad_service_sid", VALID.replace("auth_token: env:TEST_TWILIO_TOKEN}", "auth_token: env:TEST_TWILIO_TOKEN, messaging_service_sid: MG1}")),
    ("sid_from_env", VALID.replace("AC0123456789abcdef0123456789abcdef", "env:TWILIO_SID")),
    ("ring_too_long", VALID.replace("    booking:", "    missed_call: {ring_seconds: 90}\n    booking:")),
    ("tenants_empty", "tenants:\n"),
    ("tenant_scalar", "tenants:\n  - smith-law\n"),
    ("google_no_calendars", VALID.replace("calendars: [intake@firm.example], ", "")),
    ("bool_name", VALID.replace("name: Smith & Lee Law", "name: yes")),
]

EXPECTED = {
    'literal_env_sid': ["F:13:40: tenants.0.connectors.sms.account_sid: environment variable NOPE_SID is not set; export it or point to a file with file:/path (got 'env:NOPE_SID')"],
    'short_sid': ["F:13:40: tenants.0.connectors.sms.account_sid: is not a Twilio AC SID (got 'AC123', 5 characters); use the Account SID on the Twilio console's home page: AC followed by 32 hex digits"],
    'duplicate_key': ['F:5:5: tenants.0.vertical: is written twice (first on line 4); YAML keeps only the last one — remove one of them'],
    'empty_secret': ['F:14:42: tenants.0.connectors.crm.access_token: environment variable TEST_EMPTY is set but empty; export its value'],
    'unclosed_quote': ['F:9:12: not valid YAML: while scanning a quoted scalar found unexpected end of stream — the quote opened here is never closed; close it on the same line'],
    'unclosed_bracket': ["F:7:17: not valid YAML: while parsing a flow sequence expected ',' or ']', but got '<scalar>' — the [ or { opened here is never closed, or an item in it needs quotes"],
    'empty_file': ["F:1:1: the file is empty; it needs a `tenants:` list (see the example in the README's Configuration section)"],
    'only_comment': ["F:1:1: the file is empty; it needs a `tenants:` list (see the example in the README's Configuration section)"],
    'list_top': ['F:1:1: the file holds a list, not a mapping; it needs a top-level `tenants:` list'],
    'bad_enum': ["F:4:15: tenants.0.vertical: Input should be 'law', 'medical', 'home_services' or 'real_estate' (got 'lawyer') (did you mean law?)"],
    'unquoted_list': ['F:6:21: tenants.0.phone_numbers.0: YAML read +15550001111 as a number (a leading + is lost and a leading 0 dropped); quote it: "+15550001111"'],
    'number_not_list': ['F:6:20: tenants.0.phone_numbers: YAML read it as a number, not a list (got +15550001111); write it quoted in brackets: ["+15550001111"]'],
    'string_not_list': ['F:6:20: tenants.0.phone_numbers: must be a list (got +15550001111); write it quoted in brackets: ["+15550001111"]'],
    'bad_phone': ["F:7:18: tenants.0.forward_to: '555-CALL-NOW-PLEASE' is not a possible phone number; write it in E.164 form such as +15551234567"],
    'env_in_name': ["F:3:11: tenants.0.name: 'env:FIRM_NAME' is taken literally here — env: and file: are read only in secrets and account ids (auth_token, access_token, client_secret, credentials, account_sid, client_id, tenant_id); write the value itself"],
    'missing_hours': ['F:2:5: tenants.0.hours: is required; add it'],
    'typo_key': ['F:2:5: tenants.0.timezone: is required; add it', 'F:5:5: tenants.0.time_zone: is not a known setting; remove it or check its spelling (did you mean timezone?)'],
    'bad_zone': ["F:5:15: tenants.0.timezone: unknown time zone 'EST5'; use an IANA name such as America/New_York"],
    'two_passes': ["F:4:15: tenants.0.vertical: Input should be 'law', 'medical', 'home_services' or 'real_estate' (got 'lawyer') (did you mean law?)", 'F:14:42: tenants.0.connectors.crm.access_token: inline secrets are not allowed; write env:NAME or file:/path instead'],
    'unknown_role': ['F:14:7: tenants.0.connectors.crn: is not a connector role; use sms, crm or calendar (did you mean crm?)'],
    'tab_indent': ["F:3:1: not valid YAML: while scanning for the next token found character '\\t' that cannot start any token — YAML indents with spaces, not tabs"],
    'colon_value': ['F:3:16: not valid YAML: mapping values are not allowed here — a value containing \': \' must be quoted, e.g. name: "Smith: Lee"'],
    'bad_hours': ['F:9:12: tenants.0.hours: \'9am-5pm\' is not an hours range; write it as "09:00-17:00"'],
    'bad_weekday': ["F:9:12: tenants.0.hours: unknown weekday 'mnd'; use mon, tue, wed, thu, fri, sat, sun"],
    'top_level_extra': ['F:16:1: tenant_defaults: is not a known top-level setting; the file has only `tenants:` (put tenant settings under a tenant)'],
    'route_not_booked': ["F:11:47: tenants.0.booking.routes.matter_type.family.0: calendar 'family@firm.example' is not one of the calendar connector's calendars; add it to connectors.calendar.calendars (textback reads and books only those) or fix the id"],
    'bad_service_sid': ["F:13:134: tenants.0.connectors.sms.messaging_service_sid: is not a Twilio MG SID (got 'MG1', 3 characters); use the Messaging Service's SID: MG followed by 32 hex digits"],
    'sid_from_env': [],
    'ring_too_long': ['F:11:33: tenants.0.missed_call.ring_seconds: Input should be less than or equal to 60 (got 90)'],
    'tenants_empty': ['F:1:1: tenants: is empty; add at least one tenant'],
    'tenant_scalar': ['F:2:5: tenants.0: each tenant is a mapping (id:, name:, ...), not str'],
    'google_no_calendars': ['F:15:7: tenants.0.connectors.calendar.calendars: is required; add it'],
    'bool_name': ['F:3:11: tenants.0.name: YAML read yes as true; quote it: "yes"'],
}


@pytest.fixture(autouse=True)
def _environment(monkeypatch):
    for name, value in {"TEST_TWILIO_TOKEN": "tok", "TEST_HUBSPOT_TOKEN": "pat", "TEST_EMPTY": "",
                        "TWILIO_SID": "AC" + "ab" * 16, "TEST_GOOGLE": GOOGLE_KEY}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("NOPE_SID", raising=False)
    monkeypatch.delenv("FIRM_NAME", raising=False)


@pytest.mark.parametrize(("name", "text"), CASES, ids=[name for name, _ in CASES])
def test_each_broken_file_reports_exactly_its_problems_where_they_are(tmp_path, name, text):
    path = tmp_path / "tenants.yaml"
    path.write_text(text)

    if not EXPECTED[name]:
        load_tenants(path, validate_connector=validate_connector)
        return
    with pytest.raises(ConfigError) as info:
        load_tenants(path, validate_connector=validate_connector)

    assert [str(p).replace(str(path), "F") for p in info.value.problems] == EXPECTED[name]


def test_there_are_at_least_25_broken_files():
    assert sum(1 for problems in EXPECTED.values() if problems) >= 25
