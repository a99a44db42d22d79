"""A tenant that chose the llm interpreter: the webhook reads replies through the model, and survives its outage."""

from __future__ import annotations

import json

import pytest

from sandbox.llm import LLMSandbox, create_app
from sandbox.server import serve
from tests.webhooks.policy_support import world

KEY, MODEL = "sk-sandbox-webhooks", "sandbox-model"


@pytest.fixture
def llm():
    sandbox = LLMSandbox(api_keys={KEY}, models={MODEL})
    with serve(create_app(sandbox)) as served:
        yield sandbox, served.url + "/v1"


@pytest.fixture
def w(stack, sqlite_db, tmp_path, monkeypatch, llm):
    monkeypatch.setenv("WEBHOOK_TEST_LLM_KEY", KEY)
    settings = {"type": "llm", "base_url": llm[1], "model": MODEL, "api_key": "env:WEBHOOK_TEST_LLM_KEY",
                "timeout_seconds": 1}
    with world(stack=stack, db=sqlite_db, tmp_path=tmp_path, monkeypatch=monkeypatch, interpreter=settings) as w:
        yield w


def _extraction(value):
    return json.dumps({"value": value, "others": [], "pick": None, "window": None, "signals": []})


def test_a_reply_no_keyword_list_holds_is_read_by_the_model(w, llm):
    sandbox, _ = llm
    w.miss()
    sandbox.script(_extraction("family"))

    w.text("my spouse and I are going our separate ways")

    assert "court date or deadline" in w.texts()[-1]
    assert len(sandbox.requests) == 1


def test_when_the_model_times_out_the_rules_answer_and_the_caller_still_gets_a_reply(w, llm):
    sandbox, _ = llm
    w.miss()
    sandbox.script(_extraction("injury"), delay=3)

    w.text("1")

    assert "court date or deadline" in w.texts()[-1]
