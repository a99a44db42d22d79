"""Read the tenants file and report every mistake in it in one pass.

Each problem is `file:line:column: where: what is wrong (the bad value) — how to fix it`. The file is
read once into located data (core/yaml_lines.py); then every tenant and every connector block is
validated on its own, so a bad vertical in one tenant does not hide a bad token in another, and
the cross-tenant rules (unique ids, a number belongs to one tenant, routed calendars are booked
calendars) run over whatever validated. Values are echoed except where a secret might be.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from core.config import ConnectorValidator, Tenant
from core.config_errors import ConfigError, ConfigProblem
from core.secrets import is_reference
from core.yaml_lines import LocatedYAML, YAMLSyntaxError, excerpt, load_located

PHONE_FIELDS = {"phone_numbers", "forward_to", "handoff_to", "blocklist"}
# Never echo what was written here: it may be a secret pasted inline.
SECRET_FIELDS = {"auth_token", "access_token", "client_secret", "credentials", "secret", "refresh_token",
                 "api_key", "grow_inbox_token", "password", "token"}
_WRAPPERS = {"function-after", "function-before", "function-wrap", "function-plain"}


def read_tenants(path: Path, *, validate_connector: ConnectorValidator | None = None) -> list[Tenant]:
    located = _load(path)
    problems: list[ConfigProblem] = [
        _problem(located, dup.loc, f"{_where(dup.loc)}: is written twice (first on line {dup.first.line}); "
                 "YAML keeps only the last one — remove one of them", position=dup.again)
        for dup in located.duplicates]
    raw_tenants = _tenant_list(located, problems)
    tenants: list[tuple[int, Tenant]] = []
    for i, raw in enumerate(raw_tenants):
        loc = ("tenants", i)
        if not isinstance(raw, dict):
            problems.append(_problem(located, loc, f"{_where(loc)}: each tenant is a mapping (id:, name:, ...), "
                                     f"not {type(raw).__name__}"))
            continue
        tenant = _validated_tenant(located, raw, loc, problems)
        connectors = _validated_connectors(located, raw.get("connectors"), loc, problems, validate_connector)
        if tenant is not None:
            tenant.connectors.update(connectors)
            checked = raw if validate_connector else {k: v for k, v in raw.items() if k != "connectors"}
            problems.extend(_literal_references(located, checked, tenant, loc))
            tenants.append((i, tenant))
    problems.extend(_across_tenants(located, tenants, validate_connector is not None))
    if problems:
        raise ConfigError(problems)
    return [tenant for _, tenant in tenants]


def _load(path: Path) -> LocatedYAML:
    try:
        return load_located(path)
    except FileNotFoundError as exc:
        raise ConfigError([ConfigProblem(file=str(path), line=1, message="file not found; set TEXTBACK_CONFIG "
                                         "to your tenants file or pass its path")]) from exc
    except IsADirectoryError as exc:
        raise ConfigError([ConfigProblem(file=str(path), line=1, message="is a directory; pass the tenants "
                                         "YAML file itself")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(file=str(path), line=1, message="is not UTF-8 text; save the "
                                         "tenants file as UTF-8")]) from exc
    except YAMLSyntaxError as exc:
        text = path.read_text()
        raise ConfigError([ConfigProblem(
            file=str(path), line=exc.position.line, column=exc.position.column,
            message=f"not valid YAML: {exc.message} — {exc.hint}", excerpt=excerpt(text, exc.position))]) from exc


def _tenant_list(located: LocatedYAML, problems: list[ConfigProblem]) -> list:
    data = located.data
    if data is None:
        problems.append(_problem(located, (), "the file is empty; it needs a `tenants:` list "
                                 "(see the example in the README's Configuration section)"))
        return []
    if not isinstance(data, dict):
        problems.append(_problem(located, (), f"the file holds a {type(data).__name__}, not a mapping; it needs "
                                 "a top-level `tenants:` list"))
        return []
    for key in data:
        if key != "tenants":
            problems.append(_problem(located, (key,), f"{key}: is not a known top-level setting; the file has "
                                     "only `tenants:` (put tenant settings under a tenant)"))
    tenants = data.get("tenants")
    if tenants is None:
        if "tenants" not in data:
            problems.append(_problem(located, (), "tenants: is required; add a `tenants:` list with one entry per "
                                     "business"))
        else:
            problems.append(_problem(located, ("tenants",), "tenants: is empty; add at least one tenant"))
        return []
    if not isinstance(tenants, list):
        problems.append(_problem(located, ("tenants",), "tenants: must be a list; start each tenant with `- id: ...`"))
        return []
    if not tenants:
        problems.append(_problem(located, ("tenants",), "tenants: is empty; add at least one tenant"))
    return tenants


def _validated_tenant(located, raw: dict, loc: tuple, problems: list) -> Tenant | None:
    try:
        return Tenant.model_validate({**raw, "connectors": {}})
    except ValidationError as exc:
        problems.extend(_problems(located, exc, prefix=loc, model=Tenant))
        return None


def _validated_connectors(located, raw, loc: tuple, problems: list, validate_connector) -> dict:
    loc = loc + ("connectors",)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(_problem(located, loc, f"{_where(loc)}: must map roles (sms, crm, calendar) to settings"))
        return {}
    out = {}
    for role, block in raw.items():
        here = loc + (role,)
        if role not in ("sms", "crm", "calendar"):
            problems.append(_problem(located, here, f"{_where(here)}: is not a connector role; use sms, crm or "
                                     f"calendar{_did_you_mean(str(role), ['sms', 'crm', 'calendar'])}"))
            continue
        if validate_connector is None:
            out[role] = block
            continue
        try:
            out[role] = validate_connector(role, block)
        except ValidationError as exc:
            problems.extend(_problems(located, exc, prefix=here, model=None))
        except ValueError as exc:
            problems.append(_problem(located, here, f"{_where(here)}: {exc}"))
    return out


def _across_tenants(located, tenants: list[tuple[int, Tenant]], connectors_checked: bool) -> list[ConfigProblem]:
    problems = []
    first_index: dict[str, int] = {}
    owner_of: dict[str, str] = {}
    for i, tenant in tenants:
        if tenant.id in first_index:
            problems.append(_problem(located, ("tenants", i, "id"), f"tenants.{i}.id: {tenant.id!r} is used twice "
                                     f"(also tenants.{first_index[tenant.id]}); ids must be unique"))
        first_index.setdefault(tenant.id, i)
        for j, number in enumerate(tenant.phone_numbers):
            if number in owner_of and owner_of[number] != tenant.id:
                problems.append(_problem(located, ("tenants", i, "phone_numbers", j),
                                         f"tenants.{i}.phone_numbers.{j}: {number} already belongs to tenant "
                                         f"{owner_of[number]!r}; a number identifies one tenant"))
            owner_of.setdefault(number, tenant.id)
        calendar = tenant.connectors.get("calendar")
        booked = set(getattr(calendar, "calendars", None) or ()) if connectors_checked else set()
        if booked:
            problems.extend(_routed_calendars_are_booked(located, i, tenant, booked))
    return problems


def _routed_calendars_are_booked(located, i: int, tenant: Tenant, booked: set[str]) -> list[ConfigProblem]:
    problems = []
    fix = "add it to connectors.calendar.calendars (textback reads and books only those) or fix the id"
    for answer, values in tenant.booking.routes.items():
        for value, calendar_ids in values.items():
            for k, calendar_id in enumerate(calendar_ids):
                if calendar_id not in booked:
                    loc = ("tenants", i, "booking", "routes", answer, value, k)
                    problems.append(_problem(located, loc, f"{_where(loc)}: calendar {calendar_id!r} is not one of "
                                             f"the calendar connector's calendars; {fix}", value=True))
    for owner, calendar_id in tenant.booking.owner_calendars.items():
        if calendar_id not in booked:
            loc = ("tenants", i, "booking", "owner_calendars", owner)
            problems.append(_problem(located, loc, f"{_where(loc)}: calendar {calendar_id!r} is not one of the "
                                     f"calendar connector's calendars; {fix}", value=True))
    return problems


def _literal_references(located, raw: Any, model: Any, loc: tuple) -> list[ConfigProblem]:
    """`env:`/`file:` written where it is not read: the setting would silently hold the literal text."""
    out = []
    for path, value in _strings(raw, ()):
        if is_reference(value) and _value_at(model, path) == value:
            here = loc + path
            out.append(_problem(located, here, f"{_where(here)}: {value!r} is taken literally here — env: and file: "
                                "are read only in secrets and account ids (auth_token, access_token, "
                                "client_secret, credentials, account_sid, client_id, tenant_id); write the value itself",
                                value=True))
    return out


def _strings(raw: Any, path: tuple):
    if isinstance(raw, dict):
        for key, value in raw.items():
            yield from _strings(value, path + (key,))
    elif isinstance(raw, list):
        for i, value in enumerate(raw):
            yield from _strings(value, path + (i,))
    elif isinstance(raw, str):
        yield path, raw


_MISSING = object()


def _value_at(model: Any, path: tuple) -> Any:
    for part in path:
        try:
            if isinstance(model, BaseModel):
                model = getattr(model, part) if isinstance(part, str) else _MISSING
            else:
                model = model[part]
        except (AttributeError, KeyError, IndexError, TypeError):
            return _MISSING
        if model is _MISSING:
            return _MISSING
    return model


# --- pydantic errors into sentences ---------------------------------------------------------

def _problems(located: LocatedYAML, exc: ValidationError, *, prefix: tuple, model: type | None) -> list[ConfigProblem]:
    out = []
    for err in exc.errors():
        parts = tuple(p for p in err["loc"] if not (isinstance(p, str) and (p in _WRAPPERS or "[" in p)))
        loc = prefix + parts
        on_value = err["type"] not in ("missing", "extra_forbidden")
        message = f"{_where(loc)}: {_explain(err, located, loc, model, parts)}"
        out.append(_problem(located, _pinpointed(located, loc, err), message, value=on_value))
    return out


def _pinpointed(located: LocatedYAML, loc: tuple, err: dict) -> tuple:
    """A validator of a whole mapping or list (hours, phone_numbers) names the bad item in quotes: point at it."""
    if located.source_of(loc) is not None or err["type"] != "value_error":
        return loc
    for quoted in re.findall(r"'([^']+)'", err["msg"]):
        found = located.find_scalar(loc, quoted)
        if found is not None:
            return found
    return loc


def _explain(err: dict, located: LocatedYAML, loc: tuple, model: type | None, parts: tuple) -> str:
    kind = err["type"]
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    raw = err.get("input")
    field = next((p for p in reversed(loc) if isinstance(p, str)), "")
    written = located.source_of(loc)
    if kind == "missing":
        return "is required; add it"
    if kind == "extra_forbidden":
        known = _known_fields(model, parts[:-1]) if model is not None else []
        return f"is not a known setting; remove it or check its spelling{_did_you_mean(str(loc[-1]), known)}"
    number_like = isinstance(raw, (int, float)) and not isinstance(raw, bool)
    if field in PHONE_FIELDS and kind == "list_type":
        shown = written if written is not None else str(raw)
        why = "YAML read it as a number, not a list" if number_like else "must be a list"
        return f"{why} (got {shown}); write it quoted in brackets: [\"{shown}\"]"
    if kind == "string_type" and number_like:
        shown = written if written is not None else str(raw)
        hint = " (a leading + is lost and a leading 0 dropped)" if field in PHONE_FIELDS else ""
        return f"YAML read {shown} as a number{hint}; quote it: \"{shown}\""
    if kind == "string_type" and isinstance(raw, bool):
        return f"YAML read {written} as {str(raw).lower()}; quote it: \"{written}\""
    if kind == "string_type" and isinstance(raw, list) and field in ("name", "contact", "timezone", "id"):
        return f"YAML read a list here (got {raw!r}); a value starting with [ must be quoted"
    if field in SECRET_FIELDS or not _is_scalar(raw):
        return msg
    shown = repr(raw) if isinstance(raw, str) or written is None else written
    if kind in ("enum", "literal_error"):
        choices = re.findall(r"'([^']+)'", str((err.get("ctx") or {}).get("expected", "")))
        return f"{msg} (got {shown}){_did_you_mean(str(raw), choices)}"
    if shown not in msg:
        return f"{msg} (got {shown})"
    return msg


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _known_fields(model: Any, parts: tuple) -> list[str]:
    """The settings allowed at `parts` inside `model`, following nested models, lists, dicts and unions."""
    for part in parts:
        model = _inner_model(model, part)
        if model is None:
            return []
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _inner_model(model: Any, part: Any) -> Any:
    if isinstance(part, int):
        return model
    if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
        return None
    return _unwrap(model.model_fields[part].annotation)


def _unwrap(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _unwrap(arg)
            if isinstance(found, type) and issubclass(found, BaseModel):
                return found
        return None
    return annotation


def _where(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(file)"


def _problem(located: LocatedYAML, loc: tuple, message: str, *, position=None, value: bool = False) -> ConfigProblem:
    position = position or (located.value_position_of(loc) if value else located.position_of(loc))
    return ConfigProblem(file=str(located.path), line=position.line, column=position.column, message=message)
