"""Connectors built ahead of use, so no webhook or first text pays for an HTTP pool and its TLS context."""

from __future__ import annotations

import yaml

from connectors import registry
from connectors.registry import validate_connector
from core.config import Settings, load_tenants
from sync.runtime import Runtime
from tests.webhooks.conftest import tenant_yaml


def test_warm_builds_every_tenant_s_sms_connector_once_and_leaves_one_that_fails_to_its_first_use(
        sqlite_db, stack, tmp_path, monkeypatch):
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tenants": [
        tenant_yaml(stack), tenant_yaml(stack, id="jones-law", phone_numbers=["+15550003333"]),
        tenant_yaml(stack, id="broken-law", phone_numbers=["+15550004444"])]}, sort_keys=False))
    tenants = load_tenants(path, validate_connector=validate_connector)
    built = []

    def factory(config, **injected):
        built.append(config)
        if len(built) == 3:  # the third tenant's: a credentials file gone missing, say
            raise OSError("cannot read the credentials file")
        return registry.build(config, **injected)

    runtime = Runtime(settings=Settings(database_url=sqlite_db.url), db=sqlite_db, tenants=tenants,
                      connector_factory=factory)
    try:
        runtime.warm(("sms",)).join(timeout=30)
        assert len(built) == 3
        smith, jones = runtime.sms(tenants.get("smith-law")), runtime.sms(tenants.get("jones-law"))
        assert smith is not None and jones is not None and smith is not jones
        assert len(built) == 3  # both reused, not built again
        assert runtime.sms(tenants.get("broken-law")) is not None  # its first use builds it (and would report it)
        assert len(built) == 4
    finally:
        runtime.close()
