"""Text as every supported database can store it: applied where inbound text enters (webhooks/, the API).

PostgreSQL refuses U+0000 in a text column and in a query parameter, and a lone surrogate (which JSON can
carry as "\\ud800") has no UTF-8 encoding, so either one turns a request into a 500 there, though SQLite
takes both. NUL carries nothing a person wrote: it is dropped. A lone surrogate becomes U+FFFD, the
replacement character, so a text keeps its length and the place where something was. Everything else is
kept as it came (emoji, control characters, every script).
"""

from __future__ import annotations

import re
from typing import Any

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    if not _UNSTORABLE.search(text):
        return text  # the common case costs one scan
    return _UNSTORABLE.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", text)


def storable_tree(value: Any) -> Any:
    """The same for parsed JSON: every string in it, keys included."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, list):
        return [storable_tree(item) for item in value]
    if isinstance(value, dict):
        return {storable_tree(key): storable_tree(item) for key, item in value.items()}
    return value
