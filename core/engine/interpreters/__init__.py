"""Interpreters turn a caller's reply into a Reading (see base.py); `interpreter_for` picks a tenant's."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

from core.engine.interpreters.base import Context, Interpreter, Reading, Signal, Window
from core.engine.interpreters.llm import ChatCompletions, LLMInterpreter
from core.engine.interpreters.rules import RulesInterpreter
from core.engine.interpreters.settings import InterpreterSettings

__all__ = ["Context", "Interpreter", "InterpreterSettings", "LLMInterpreter", "Reading", "RulesInterpreter",
           "Signal", "Window", "interpreter_for"]

RULES = RulesInterpreter()
_built: dict[str, Interpreter] = {}
_lock = threading.Lock()


def interpreter_for(settings: InterpreterSettings, *,
                    chat: Callable[[InterpreterSettings], ChatCompletions] | None = None) -> Interpreter:
    """The interpreter these settings describe, built once per distinct settings (one HTTP pool each).

    `chat` builds the transport for an llm setting (the web edge passes
    connectors.chat_completions.HttpChatCompletions); without one, rules answer.
    """
    if settings.type == "rules" or chat is None:
        return RULES
    secret = settings.api_key.get_secret_value() if settings.api_key else ""
    key = hashlib.sha256("\0".join([settings.model_dump_json(), secret]).encode()).hexdigest()
    with _lock:
        if key not in _built:
            _built[key] = LLMInterpreter(settings, chat=chat(settings), fallback=RULES)
        return _built[key]
