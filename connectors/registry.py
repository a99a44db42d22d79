"""Discover connectors by entry point, validate their config, build them.

A third party ships a connector as its own package by declaring

    [project.entry-points."textback.connectors"]
    mycrm = "mypackage.crm:MyCRM"

where MyCRM has `role`, `config_model` and `MyCRM(config, **injected)`.
"""

from __future__ import annotations

import inspect
import logging
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

from connectors.base import ConnectorConfig

log = logging.getLogger(__name__)

GROUP = "textback.connectors"


@cache
def available() -> dict[str, type]:
    """Connector classes by type name; one that fails to import or is not a connector is logged and skipped."""
    found: dict[str, type] = {}
    for ep in entry_points(group=GROUP):
        try:
            cls = ep.load()
        except Exception:
            log.exception("connector %r (%s) failed to load; skipping it", ep.name, ep.value)
            continue
        if not _is_connector(cls):
            log.error("connector %r (%s) lacks a string `role` or a ConnectorConfig `config_model`; skipping it",
                      ep.name, ep.value)
            continue
        found[ep.name] = cls
    return found


def validate_connector(role: str, raw: Any) -> ConnectorConfig:
    """Validate one `connectors.<role>` entry of a tenant; raises ValueError/ValidationError with the fix."""
    if not isinstance(raw, dict) or "type" not in raw:
        raise ValueError(f"connectors.{role} needs a `type:`; installed: {', '.join(sorted(_of_role(role))) or 'none'}")
    kind = raw["type"]
    cls = available().get(kind)
    if cls is None:
        raise ValueError(f"unknown connector type {kind!r}; installed {role} connectors: "
                         f"{', '.join(sorted(_of_role(role))) or 'none'}")
    if cls.role != role:
        raise ValueError(f"connector {kind!r} is a {cls.role} connector, not {role}; move it under connectors.{cls.role}")
    return cls.config_model.model_validate(raw)


def build(config: BaseModel, **injected: Any):
    """Construct the connector for a validated config, passing injected clients through."""
    cls = available()[config.type]
    return cls(config, **injected)


def accepts(config: BaseModel, name: str) -> bool:
    """Whether the config's connector takes the keyword `name` (a meter, say; older plugins take none)."""
    cls = available().get(config.type)
    return cls is not None and name in inspect.signature(cls).parameters


def _of_role(role: str) -> list[str]:
    return [name for name, cls in available().items() if getattr(cls, "role", None) == role]


def _is_connector(cls: Any) -> bool:
    model = getattr(cls, "config_model", None)
    return (isinstance(getattr(cls, "role", None), str) and isinstance(model, type)
            and issubclass(model, ConnectorConfig))
