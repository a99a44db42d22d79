"""Ask each vendor whether a tenant's configuration works (`textback config check --online`).

Through the real connectors, read-only: SMS and CRM connectors that have a `check_access()` make one
read call with their credentials; calendars answer a one-hour free/busy query for every configured
calendar (booking routes may name only those), which is how a calendar id that does not exist or is
not shared shows itself. Failures are reported in the connector's own words, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from connectors.base import ConnectorError

HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class CheckResult:
    role: str
    ok: bool
    detail: str


def check_tenant(runtime, tenant) -> list[CheckResult]:
    results = []
    for role in ("sms", "crm"):
        if role in tenant.connectors:
            results.append(_check_access(runtime, tenant, role))
    if "calendar" in tenant.connectors:
        results.append(_check_calendars(runtime, tenant))
    return results


def _check_access(runtime, tenant, role: str) -> CheckResult:
    config = tenant.connectors[role]
    try:
        connector = runtime.connector(tenant, role)
        check = getattr(connector, "check_access", None)
        if check is None:
            return CheckResult(role, True, f"{config.type}: not checked (it has no read-only call)")
        return CheckResult(role, True, f"{config.type}: {check()}")
    except ConnectorError as exc:
        return CheckResult(role, False, f"{config.type}: {type(exc).__name__}: {exc}")


def _check_calendars(runtime, tenant) -> CheckResult:
    config = tenant.connectors["calendar"]
    calendars = list(dict.fromkeys(getattr(config, "calendars", None) or []))
    start = runtime.clock()
    try:
        runtime.calendar(tenant).free_busy(calendars=calendars, start=start, end=start + HOUR)
    except ConnectorError as exc:
        return CheckResult("calendar", False, f"{config.type}: {type(exc).__name__}: {exc}")
    return CheckResult("calendar", True, f"{config.type}: free/busy answered for {', '.join(calendars)}")
