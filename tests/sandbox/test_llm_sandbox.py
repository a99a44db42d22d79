"""The OpenAI-compatible sandbox over real HTTP: auth, models, request validation, structured outputs, faults."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from core.engine.interpreters.llm import response_schema
from sandbox.llm import EMPTY_EXTRACTION, LLMSandbox, create_app
from sandbox.server import serve

KEY, MODEL = "sk-sandbox-test", "sandbox-model"


@pytest.fixture(scope="module")
def sandbox() -> LLMSandbox:
    return LLMSandbox(api_keys={KEY}, models={MODEL})


@pytest.fixture(scope="module")
def client(sandbox):
    with serve(create_app(sandbox)) as served, httpx.Client(base_url=served.url + "/v1",
                                                            headers={"Authorization": f"Bearer {KEY}"}) as http:
        yield http


def body(**overrides) -> dict:
    return {"model": MODEL, "messages": [{"role": "system", "content": "Answer in JSON."},
                                         {"role": "user", "content": "hi"}], **overrides}


def strict_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "reading", "strict": True, "schema": schema}}


def test_a_completion_has_openais_shape_and_rate_limit_headers(client):
    response = client.post("/chat/completions", json=body())
    assert response.status_code == 200
    completion = response.json()
    assert completion["object"] == "chat.completion" and completion["id"].startswith("chatcmpl-")
    assert completion["model"] == MODEL
    [choice] = completion["choices"]
    assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == EMPTY_EXTRACTION and choice["message"]["refusal"] is None
    usage = completion["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert response.headers["x-ratelimit-limit-requests"] and response.headers["x-ratelimit-remaining-requests"]


def test_textbacks_schema_is_accepted_as_strict(client):
    response = client.post("/chat/completions", json=body(response_format=strict_format(response_schema())))
    assert response.status_code == 200


def test_a_strict_schema_with_an_optional_property_is_refused(client):
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "required": ["a"],
              "additionalProperties": False}
    response = client.post("/chat/completions", json=body(response_format=strict_format(schema)))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "'required' is required" in error["message"]


def test_a_strict_schema_without_additional_properties_false_is_refused(client):
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    response = client.post("/chat/completions", json=body(response_format=strict_format(schema)))
    assert response.status_code == 400 and "additionalProperties" in response.json()["error"]["message"]


def test_json_object_mode_needs_the_word_json_in_the_messages(client):
    response = client.post("/chat/completions", json=body(
        messages=[{"role": "user", "content": "hello"}], response_format={"type": "json_object"}))
    assert response.status_code == 400 and "must contain the word 'json'" in response.json()["error"]["message"]
    assert client.post("/chat/completions", json=body(response_format={"type": "json_object"})).status_code == 200


def test_a_wrong_key_is_401_invalid_api_key(client):
    response = client.post("/chat/completions", json=body(), headers={"Authorization": "Bearer sk-nope-1234"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert "sk-nope-1234" not in response.json()["error"]["message"]


def test_a_missing_key_is_401(client):
    response = client.post("/chat/completions", json=body(), headers={"Authorization": ""})
    assert response.status_code == 401 and "didn't provide an API key" in response.json()["error"]["message"]


def test_an_unknown_model_is_404_model_not_found(client):
    response = client.post("/chat/completions", json=body(model="gpt-nope"))
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("bad", [{"messages": []}, {"messages": [{"role": "robot", "content": "x"}]},
                                 {"model": None}, {"response_format": {"type": "yaml"}}])
def test_invalid_requests_are_400(client, bad):
    assert client.post("/chat/completions", json=body(**bad)).status_code == 400


def test_models_are_listed(client):
    assert [m["id"] for m in client.get("/models").json()["data"]] == [MODEL]


def test_scripted_answers_come_in_order_then_the_responder(client, sandbox):
    sandbox.script('{"first": 1}')
    sandbox.script(refusal="I can't help with that.")
    first = client.post("/chat/completions", json=body()).json()["choices"][0]["message"]
    second = client.post("/chat/completions", json=body()).json()["choices"][0]["message"]
    third = client.post("/chat/completions", json=body()).json()["choices"][0]["message"]
    assert json.loads(first["content"]) == {"first": 1}
    assert second["content"] is None and second["refusal"] == "I can't help with that."
    assert third["content"] == EMPTY_EXTRACTION


def test_a_scripted_delay_makes_a_client_time_out(client, sandbox):
    sandbox.script("{}", delay=1.5)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        client.post("/chat/completions", json=body(), timeout=0.3)
    assert time.monotonic() - started < 1.2


def test_rate_limit_faults_answer_429_with_retry_after(client, sandbox):
    sandbox.faults.fail_next("/v1/chat/completions", status=429, retry_after=2)
    response = client.post("/chat/completions", json=body())
    assert response.status_code == 429 and response.headers["retry-after"] == "2"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert client.post("/chat/completions", json=body()).status_code == 200


def test_server_faults_answer_500_with_openais_error_body(client, sandbox):
    sandbox.faults.fail_next("/v1/chat/completions", status=500)
    response = client.post("/chat/completions", json=body())
    assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"


def test_requests_are_recorded_for_inspection(client, sandbox):
    client.post("/chat/completions", json=body(messages=[{"role": "user", "content": "recorded json"}]))
    assert sandbox.requests[-1]["messages"] == [{"role": "user", "content": "recorded json"}]
