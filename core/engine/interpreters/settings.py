"""A tenant's `interpreter:` setting: `rules` (default, offline) or `llm` (an OpenAI-compatible endpoint).

    interpreter:
      type: llm
      base_url: https://api.openai.com/v1     # any OpenAI-compatible chat-completions API
      model: gpt-4o-mini
      api_key: env:OPENAI_API_KEY             # env:NAME or file:/path, never inline
      timeout_seconds: 4                      # then the rules interpreter answers instead
      response_format: json_schema            # json_object for servers without structured outputs
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.secrets import Secret


class InterpreterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["rules", "llm"] = "rules"
    base_url: str | None = Field(None, description="Chat-completions base URL, up to and including /v1")
    model: str | None = None
    api_key: Secret | None = None
    timeout_seconds: float = Field(4.0, gt=0, le=20, description="The inbound webhook waits for this at most")
    response_format: Literal["json_schema", "json_object"] = "json_schema"

    @model_validator(mode="after")
    def _llm_needs_endpoint(self) -> "InterpreterSettings":
        if self.type == "llm" and not (self.base_url and self.model):
            raise ValueError("interpreter type llm needs base_url (e.g. https://api.openai.com/v1) and model")
        return self
