""""Test connection" for the admin page: the tenant's credentials work and every configured calendar exists.

Read-only vendor calls: a one-hour free/busy query on all the tenant's calendars (a wrong or
unshared calendar id fails here instead of leaving callers without slots). CRM and SMS connectors
have no read-only call in their protocols yet, so they are reported as not checked rather than
written to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from connectors.base import ConnectorError
from core.config import Tenant
from sync.runtime import Runtime


@dataclass(frozen=True)
class CheckResult:
    role: str
    ok: bool | None  # None: not checked
    detail: str


def check_connections(runtime: Runtime, tenant: Tenant) -> list[CheckResult]:
    results = []
    for role in sorted(tenant.connectors):
        if role != "calendar":
            results.append(CheckResult(role, None, "no read-only check for this connector yet"))
            continue
        calendars = list(tenant.connectors["calendar"].calendars)
        start = runtime.now()
        try:
            runtime.calendar(tenant).free_busy(calendars=calendars, start=start, end=start + timedelta(hours=1))
        except ConnectorError as exc:
            results.append(CheckResult(role, False, f"{type(exc).__name__}: {exc}"))
        except Exception as exc:  # a plugin's bug must show on the page, not as a 500
            results.append(CheckResult(role, False, f"{type(exc).__name__}: {exc}"))
        else:
            results.append(CheckResult(role, True, f"credentials work; {len(calendars)} calendar(s) answer: "
                                                   + ", ".join(calendars)))
    return results
