"""schemathesis against the app's own OpenAPI schema (issue 14 item 6): every operation, never a 5xx.

The schema is the app's own (what `/openapi.json` serves), the requests go over real HTTP to textback
embedded, and every operation in it gets generated requests: the missed-calls and takeover API carry a valid key, and half the
missed-call reports are for the key's own number, so generated callers, times and idempotency keys reach the
policy and the database instead of stopping at the 403. The Twilio and vendor routes declare no body (they
verify a signature over the raw request), so their generated requests are the forgeries and odd headers a
scanner would send. 0 responses ≥ 500 and no ERROR in the logs.

CI runs up to SCHEMA_EXAMPLES per operation (default 25: about 300 requests, a third of them to the API);
`TEXTBACK_SCHEMA_EXAMPLES=2000` for the full run. The bodyless operations stop early, once hypothesis has
sent the few distinct requests they allow (other methods, odd headers). It runs on PostgreSQL, the stricter
store (its first run found an idempotency key too long for the CallSid column and row ids beyond
INTEGER: tests/webhooks/test_storable_input.py); `TEXTBACK_SCHEMA_DB=sqlite` runs it on SQLite.
"""

from __future__ import annotations

import logging
import os

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings

from connectors.registry import validate_connector
from core.config import load_tenants
from sync.embedded import Embedded
from tests.webhooks.conftest import BUSINESS, tenant_yaml
from webhooks.api_routes import hash_key
from webhooks.app import create_app

SCHEMA_EXAMPLES = int(os.environ.get("TEXTBACK_SCHEMA_EXAMPLES", "25"))
API_KEY = "tbk_schemathesis"


@pytest.fixture
def tenants_path(tmp_path, stack, monkeypatch):
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tenants": [tenant_yaml(stack, api_key_sha256=hash_key(API_KEY))]},
                                   sort_keys=False))
    return path


@pytest.fixture
def served(request, tenants_path):
    db = request.getfixturevalue("sqlite_db" if os.environ.get("TEXTBACK_SCHEMA_DB") == "sqlite" else "postgres_db")
    with Embedded(db=db, tenants=load_tenants(tenants_path, validate_connector=validate_connector)) as textback:
        yield textback


# The schema does not depend on the runtime, so it is read at collection (schemathesis's lazy fixture loader
# does not work with pytest 9); the requests go over real HTTP to a served app.
schema = schemathesis.openapi.from_dict(create_app(None).openapi())


@schema.parametrize()
@settings(max_examples=SCHEMA_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_generated_request_to_any_operation_of_the_schema_gets_a_5xx(case, served, caplog):
    caplog.set_level(logging.ERROR)
    if case.path == "/api/v1/missed-calls" and isinstance(case.body, dict) and hash(str(case.body)) % 2:
        case.body["called"] = BUSINESS  # the key's own number: the report reaches the policy and the database
    response = case.call(base_url=served.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)

    assert response.status_code < 500, (case.method, case.path, case.body, response.status_code, response.text[:300])
    unhandled = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not unhandled, unhandled[:3]
