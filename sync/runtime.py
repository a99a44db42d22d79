"""Everything a web process or a worker needs, built once from Settings."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any


from connectors import registry
from connectors.base import CalendarConnector, CRMConnector, SMSProvider
from connectors.oauth import TokenProvider, uses_oauth
from core.config import Settings, Tenant, TenantDirectory, load_tenants
from core.outbox import Dispatcher, Pending
from core.store.db import Database
from sync.locks import RecordLocks
from sync.quotas import LocalMeter, RedisMeter, meter_for_url

log = logging.getLogger(__name__)

ConnectorFactory = Callable[..., Any]  # (config, **injected clients) -> connector


class Runtime:
    """Settings, database, tenants, connectors and the dispatcher, shared by web and worker code."""

    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        tenants: TenantDirectory,
        dispatcher: Dispatcher | None = None,
        connector_factory: ConnectorFactory = registry.build,
        clock: Callable[[], datetime] | None = None,
        locks: RecordLocks | None = None,
        meter: RedisMeter | LocalMeter | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.tenants = tenants
        self.dispatcher = dispatcher
        # One clock for the process: the database stamps rows with the same clock the jobs read.
        if clock is not None:
            db.clock = clock
        self.clock = db.clock
        self.locks = locks or RecordLocks()
        # Every connector of this process counts its requests on one meter (in Redis: shared by every worker).
        self.meter = meter or LocalMeter()
        self._factory = connector_factory
        self._connectors: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._broker_failing_since: datetime | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> "Runtime":
        tenants = load_tenants(settings.config, validate_connector=registry.validate_connector)
        kwargs.setdefault("locks", RecordLocks.for_broker_url(settings.redis_url))
        kwargs.setdefault("meter", meter_for_url(settings.redis_url))
        return cls(settings=settings, db=Database(settings.database_url), tenants=tenants, **kwargs)

    def connector(self, tenant: Tenant, role: str) -> Any | None:
        """The tenant's connector for `role` ("sms", "crm", "calendar"), or None when not enabled."""
        config = tenant.connectors.get(role)
        if config is None:
            return None
        key = (tenant.id, role)
        with self._lock:
            if key not in self._connectors:
                # An OAuth-authorized connector gets its tokens from the connection `textback connect` stored.
                injected = {"token": TokenProvider.for_config(
                    config, db=self.db, secret_keys=self.settings.secret_keys, tenant_id=tenant.id, role=role,
                )} if uses_oauth(config) else {}
                if registry.accepts(config, "meter"):
                    injected["meter"] = self.meter
                self._connectors[key] = self._factory(config, **injected)
            return self._connectors[key]

    def warm(self, roles: tuple[str, ...]) -> threading.Thread:
        """Build every tenant's connectors for `roles` now, in the background, so no request or first text pays
        for an HTTP pool and its TLS context (tens of milliseconds each). One that cannot be built is left to
        the request that needs it, which reports it as before."""
        def build() -> None:
            for tenant in list(self.tenants):
                for role in roles:
                    try:
                        self.connector(tenant, role)
                    except Exception as exc:  # noqa: BLE001 (reported by the first use, where it matters)
                        log.debug("could not build %s's %s connector ahead of use: %s", tenant.id, role, exc)

        thread = threading.Thread(target=build, name="connectors-warm", daemon=True)
        thread.start()
        return thread

    def sms(self, tenant: Tenant) -> SMSProvider | None:
        return self.connector(tenant, "sms")

    def crm(self, tenant: Tenant) -> CRMConnector | None:
        return self.connector(tenant, "crm")

    def calendar(self, tenant: Tenant) -> CalendarConnector | None:
        return self.connector(tenant, "calendar")

    def interpreter(self, tenant: Tenant):
        """The tenant's reply interpreter: rules, or the llm one over an HTTP chat-completions client."""
        from connectors.chat_completions import HttpChatCompletions
        from core.engine.interpreters import interpreter_for

        return interpreter_for(tenant.interpreter, chat=HttpChatCompletions)

    def close(self) -> None:
        """Close the connectors' HTTP pools (at shutdown)."""
        with self._lock:
            connectors, self._connectors = list(self._connectors.values()), {}
        for connector in connectors:
            close = getattr(connector, "close", None)
            if close is not None:
                close()

    def dispatch(self, rows: list[int] | Pending) -> None:
        """Hand committed rows (ids, or the Pending that wrote them) to the queue. A broker that is down delays
        them, it loses nothing: the rows are in the database and the relay enqueues them once the broker is
        back. So this never raises."""
        outbox_ids, due = (rows.ids, rows.due) if isinstance(rows, Pending) else (rows, None)
        if not outbox_ids or self.dispatcher is None:
            return
        try:
            self.dispatcher.dispatch(outbox_ids, due=due)
        except Exception as exc:
            self._broker_down(exc, len(outbox_ids))
        else:
            self._broker_failing_since = None

    def _broker_down(self, exc: Exception, count: int) -> None:
        # One warning per outage, not one per request; the relay's own log line says when rows go out again.
        if self._broker_failing_since is None:
            self._broker_failing_since = self.now()
            log.warning("the job queue is unreachable (%s: %s); %d committed outbox row(s) wait for the relay",
                        type(exc).__name__, exc, count)
        else:
            log.debug("job queue still unreachable; %d more row(s) wait for the relay", count)

    def now(self) -> datetime:
        return self.clock()
