"""An OpenAI-compatible chat-completions endpoint over httpx, for the optional `llm` interpreter.

The interpreter (core/engine/interpreters/llm.py) decides what to ask and checks
what comes back; this module only carries the request and turns transport
failures into `ChatUnavailable`, so core needs no HTTP library.
"""

from __future__ import annotations

from typing import Any

import httpx

from core.engine.interpreters.llm import ChatUnavailable
from core.engine.interpreters.settings import InterpreterSettings


class HttpChatCompletions:
    """`create(body=..., timeout=...)` → the decoded chat-completion JSON, or ChatUnavailable."""

    def __init__(self, settings: InterpreterSettings, *, http: httpx.Client | None = None) -> None:
        self._url = f"{(settings.base_url or '').rstrip('/')}/chat/completions"
        self._headers = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"} if settings.api_key else {}
        self._http = http or httpx.Client()

    def create(self, *, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        try:
            response = self._http.post(self._url, json=body, headers=self._headers, timeout=timeout)
        except httpx.HTTPError as exc:
            raise ChatUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise ChatUnavailable(f"HTTP {response.status_code}: {response.text[:200]}")
        try:
            return response.json()
        except ValueError as exc:
            raise ChatUnavailable("the answer is not JSON") from exc

    def close(self) -> None:
        self._http.close()
