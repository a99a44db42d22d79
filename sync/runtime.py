"""Everything a web process or a worker needs, built once from Settings."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any


from connectors import registry
from connectors.oauth import TokenProvider, uses_oauth
from core.config import Settings, Tenant, TenantDirectory, load_tenants
from core.outbox import Dispatcher
from core.store.db import Database
from sync.locks import RecordLocks

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
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        locks: RecordLocks | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.tenants = tenants
        self.dispatcher = dispatcher
        self.clock = clock
        self.locks = locks or RecordLocks()
        self._factory = connector_factory
        self._connectors: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> "Runtime":
        tenants = load_tenants(settings.config, validate_connector=registry.validate_connector)
        kwargs.setdefault("locks", RecordLocks.for_broker_url(settings.redis_url))
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
                self._connectors[key] = self._factory(config, **injected)
            return self._connectors[key]

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

    def dispatch(self, outbox_ids: list[int]) -> None:
        if outbox_ids and self.dispatcher is not None:
            self.dispatcher.dispatch(outbox_ids)

    def now(self) -> datetime:
        return self.clock()
