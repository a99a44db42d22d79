"""The two-way sync's timer: incremental pulls every `two_way.pull_minutes`, subscription upkeep hourly.

Every worker runs the timer, and no leader is elected: each due job is written with an idempotency key
naming its period (`pull:<tenant>:<calendar>:<period number>`), so however many workers tick in that
period, one row exists and one job runs. A worker that was down for a period simply skips it: the next
pull starts from the stored cursor and misses nothing.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.exc import IntegrityError

from core.outbox import Dispatcher, Kind, Pending
from sync.runtime import Runtime

log = logging.getLogger(__name__)

UPKEEP_SECONDS = 3600  # Graph subscriptions renew a day ahead of expiry, so hourly checks leave room


def schedule_due(runtime: Runtime) -> list[int]:
    """Write the pulls and upkeep due in this period for every tenant (once per period across all workers)."""
    try:
        return _schedule_due(runtime)
    except IntegrityError:
        # Another worker wrote this period's rows between our look-up and our insert (two workers started
        # together tick together): they exist now, so a second pass finds them and writes only what is missing.
        return _schedule_due(runtime)


def _schedule_due(runtime: Runtime) -> list[int]:
    epoch, pending = int(runtime.now().timestamp()), Pending()
    with runtime.db.transaction() as session:
        for tenant in runtime.tenants:
            calendar, crm = tenant.connectors.get("calendar"), tenant.connectors.get("crm")
            upkeep = epoch // UPKEEP_SECONDS
            if calendar is not None and calendar.type in ("google", "outlook"):
                period = epoch // (tenant.two_way.pull_minutes * 60)
                for calendar_id in calendar.calendars:
                    pending.add(session, tenant_id=tenant.id, kind=Kind.calendar_pull,
                                key=f"pull:{tenant.id}:{calendar_id}:{period}", payload={"calendar_id": calendar_id})
                pending.add(session, tenant_id=tenant.id, kind=Kind.watch_calendars,
                            key=f"watch-calendars:{tenant.id}:{upkeep}", payload={})
            if crm is not None and crm.type == "hubspot":
                period = epoch // (tenant.two_way.pull_minutes * 60)
                pending.add(session, tenant_id=tenant.id, kind=Kind.crm_pull, key=f"crm-pull:{tenant.id}:{period}",
                            payload={})
            if crm is not None and crm.type == "clio":
                pending.add(session, tenant_id=tenant.id, kind=Kind.watch_crm, key=f"watch-crm:{tenant.id}:{upkeep}",
                            payload={})
    return pending.ids


class TwoWayTimer(threading.Thread):
    """Runs `schedule_due` every `interval` seconds until stopped (one per worker process)."""

    def __init__(self, runtime: Runtime, dispatcher: Dispatcher, *, interval: float = 60.0) -> None:
        super().__init__(name="two-way-timer", daemon=True)
        self.runtime, self.dispatcher, self.interval = runtime, dispatcher, interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:
            try:
                self.dispatcher.dispatch(schedule_due(self.runtime))
            except Exception as exc:  # the database or the broker is down: the relay and the next tick catch up
                log.warning("two-way timer tick failed (%s: %s)", type(exc).__name__, exc)
            if self._stop_event.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop_event.set()
