"""An OpenAI-compatible chat-completions endpoint, served by `create_app(state)`.

    llm = LLMSandbox(api_keys={"sk-sandbox"}, models={"sandbox-model"})
    with serve(create_app(llm)) as served:
        base_url = served.url + "/v1"

`POST /v1/chat/completions` and `GET /v1/models`, with OpenAI's shapes: Bearer
keys (401 `invalid_api_key`), unknown models (404 `model_not_found`), request
validation (400 `invalid_request_error`), structured outputs (`json_schema`
with `strict: true` is refused unless every object lists all its properties as
required and sets `additionalProperties: false`; `json_object` needs the word
"JSON" in the messages), `x-ratelimit-*` headers on every answer, and 429/5xx
with Retry-After, late answers and dropped connections through `faults`.

There is no model inside. What the "model" answers is scripted: `script(...)`
queues answers (content, a refusal, a delay for timeouts, truncation), and
otherwise `responder(body)` answers; the default extracts nothing (all nulls),
which is valid against textback's schema. Every request body is kept in
`requests` for tests to inspect.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sandbox.common import Faults, inject_faults

Responder = Callable[[dict[str, Any]], str]
EMPTY_EXTRACTION = json.dumps({"value": None, "others": [], "pick": None, "window": None, "signals": []})
RATE_LIMIT_REQUESTS = 500


@dataclass
class Scripted:
    content: str | None = None
    refusal: str | None = None
    delay: float = 0.0
    finish_reason: str = "stop"


class LLMError(Exception):
    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.type, "param": self.param,
                                       "code": self.code}}, status_code=self.status, headers=self.headers)


class LLMSandbox:
    def __init__(self, *, api_keys: set[str], models: set[str], responder: Responder | None = None) -> None:
        self.api_keys = set(api_keys)
        self.models = set(models)
        self.responder = responder or (lambda body: EMPTY_EXTRACTION)
        self.faults = Faults()
        self.requests: list[dict[str, Any]] = []
        self._script: deque[Scripted] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def revoke_api_key(self, key: str) -> None:
        """Delete a key, as its owner does in the dashboard: requests with it answer 401 invalid_api_key."""
        with self._lock:
            self.api_keys.discard(key)

    def script(self, content: str | None = None, *, refusal: str | None = None, delay: float = 0.0,
               finish_reason: str = "stop", times: int = 1) -> None:
        """Queue what the next `times` completions answer (content, or a refusal), after `delay` seconds."""
        with self._lock:
            for _ in range(times):
                self._script.append(Scripted(content, refusal, delay, finish_reason))

    def complete(self, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        _validate(body, self.models)
        with self._lock:
            self.requests.append(body)
            scripted = self._script.popleft() if self._script else None
            number = next(self._ids)
        if scripted is None:
            scripted = Scripted(content=self.responder(body))
        content = None if scripted.refusal else scripted.content
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        completion_tokens = len((content or scripted.refusal or "").split())
        return {
            "id": f"chatcmpl-sandbox{number:06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_sandbox",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": scripted.refusal},
                         "logprobs": None, "finish_reason": scripted.finish_reason}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }, scripted.delay


def _validate(body: dict[str, Any], models: set[str]) -> None:
    if not isinstance(body.get("model"), str):
        raise LLMError(400, "you must provide a model parameter", param="model")
    if body["model"] not in models:
        raise LLMError(404, f"The model `{body['model']}` does not exist or you do not have access to it.",
                       code="model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise LLMError(400, "[] is too short - 'messages'", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant", "developer",
                                                                        "tool"):
            raise LLMError(400, f"Invalid value for 'messages[{i}].role'.", param=f"messages[{i}].role")
    response_format = body.get("response_format") or {"type": "text"}
    kind = response_format.get("type")
    if kind == "json_object":
        if not any("json" in str(m.get("content", "")).lower() for m in messages):
            raise LLMError(400, "'messages' must contain the word 'json' in some form, to use 'response_format' "
                                "of type 'json_object'.", param="messages")
    elif kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        if not spec.get("name") or not isinstance(spec.get("schema"), dict):
            raise LLMError(400, "Missing required parameter: 'response_format.json_schema.name'.",
                           param="response_format.json_schema")
        if spec.get("strict"):
            problem = _strict_problem(spec["schema"], spec["name"])
            if problem:
                raise LLMError(400, f"Invalid schema for response_format '{spec['name']}': {problem}",
                               param="response_format")
    elif kind != "text":
        raise LLMError(400, f"Invalid value: '{kind}'. Supported values are: 'json_object', 'json_schema', and 'text'.",
                       param="response_format.type")


def _strict_problem(schema: Any, path: str) -> str | None:
    """What strict structured outputs reject: objects must require every property and forbid extras."""
    if not isinstance(schema, dict):
        return None
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is not False:
            return f"In context=('{path}',), 'additionalProperties' is required to be supplied and to be false."
        missing = [k for k in properties if k not in schema.get("required", [])]
        if missing:
            return f"In context=('{path}',), 'required' is required to include every key in properties. Missing '{missing[0]}'."
        for key, sub in properties.items():
            problem = _strict_problem(sub, f"{path}.{key}")
            if problem:
                return problem
    for option in [*([schema["items"]] if "items" in schema else []), *schema.get("anyOf", [])]:
        problem = _strict_problem(option, path)
        if problem:
            return problem
    return None


def _rate_headers() -> dict[str, str]:
    return {"x-ratelimit-limit-requests": str(RATE_LIMIT_REQUESTS),
            "x-ratelimit-remaining-requests": str(RATE_LIMIT_REQUESTS - 1), "x-ratelimit-reset-requests": "120ms"}


def _fault(fault: dict) -> JSONResponse:
    headers = {"retry-after": str(fault["retry_after"])} if fault["retry_after"] is not None else {}
    if fault["status"] == 429:
        return LLMError(429, "Rate limit reached for requests. Please try again later.", type_="requests",
                        code="rate_limit_exceeded", headers={**_rate_headers(), **headers}).response()
    return LLMError(fault["status"], "The server had an error while processing your request. Sorry about that!",
                    type_="server_error", headers=headers).response()


def _authenticate(sandbox: LLMSandbox, request: Request) -> None:
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer "):
        raise LLMError(401, "You didn't provide an API key. You need to provide your API key in an Authorization "
                            "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
    key = header.removeprefix("Bearer ").strip()
    if key not in sandbox.api_keys:
        raise LLMError(401, f"Incorrect API key provided: {key[:3]}***{key[-4:]}.", code="invalid_api_key")


def create_app(sandbox: LLMSandbox) -> FastAPI:
    app = FastAPI(title="OpenAI-compatible sandbox")

    @app.exception_handler(LLMError)
    async def llm_error(request: Request, exc: LLMError) -> JSONResponse:
        return exc.response()

    @app.middleware("http")
    async def rate_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(_rate_headers())
        return response

    inject_faults(app, sandbox.faults, respond=_fault)

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict:
        _authenticate(sandbox, request)
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "sandbox"}
                                           for m in sorted(sandbox.models)]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> dict:
        _authenticate(sandbox, request)
        try:
            body = await request.json()
        except ValueError as exc:
            raise LLMError(400, "We could not parse the JSON body of your request.") from exc
        if not isinstance(body, dict):
            raise LLMError(400, "We could not parse the JSON body of your request.")
        answer, delay = sandbox.complete(body)
        if delay:
            await asyncio.sleep(delay)
        return answer

    return app
