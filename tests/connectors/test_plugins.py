"""Connectors shipped as third-party packages: a real wheel, installed by pip into a throwaway directory.

The wheel is assembled here from the plugin's own pyproject.toml because the test environment
has no wheel-building backend offline; pip then installs it the way it installs any wheel.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from connectors.base import CRMConnector
from connectors.registry import available, build, validate_connector
from core.config import ConfigError, load_tenants

PYPROJECT = """\
[project]
name = "acme-textback-crm"
version = "0.1.0"

[project.entry-points."textback.connectors"]
acme = "acme_crm:AcmeCRM"
acme_broken = "acme_crm_broken:BrokenCRM"
acme_helper = "acme_crm:helper"
"""

ACME_CRM = '''\
from typing import ClassVar, Literal

from connectors.base import ConnectorConfig, Secret


class AcmeConfig(ConnectorConfig):
    type: Literal["acme"]
    api_key: Secret
    base_url: str = "https://api.acme-crm.example"


class AcmeCRM:
    role: ClassVar[str] = "crm"
    config_model: ClassVar[type[ConnectorConfig]] = AcmeConfig

    def __init__(self, config, *, http=None):
        self.config, self.http = config, http

    def upsert_contact(self, contact, *, existing_id=None):
        return existing_id or "acme-" + contact.phone

    def log_conversation(self, *, contact_id, log, existing_id=None):
        return existing_id or "acme-log"

    def upsert_opportunity(self, *, contact_id, opportunity, existing_id=None):
        return existing_id or "acme-deal"

    def record_booking(self, *, contact_id, booking, existing_id=None):
        return existing_id or "acme-meeting"


def helper():
    return "not a connector"
'''

ACME_CRM_BROKEN = '''\
import acme_sdk_that_was_never_installed  # the plugin's dependency is missing


class BrokenCRM:
    role = "crm"
'''

TENANTS = """\
tenants:
  - id: acme-dental
    name: Acme Dental
    vertical: medical
    timezone: America/Chicago
    phone_numbers: ["+15550003333"]
    missed_call: {mode: forwarded}
    hours: {mon: "09:00-17:00"}
    connectors:
      crm: {type: %s, api_key: env:ACME_TEST_KEY}
"""


def build_wheel(source: Path, out: Path) -> Path:
    """A py3-none-any wheel of the flat modules in `source`, with the entry points its pyproject declares."""
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    dist = f"{project['name'].replace('-', '_')}-{project['version']}"
    entry_points = "".join(f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items())
                           for group, points in project["entry-points"].items())
    files = {module.name: module.read_bytes() for module in sorted(source.glob("*.py"))}
    files |= {f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                            f"Version: {project['version']}\n".encode(),
              f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: textback-tests\n"
                                         b"Root-Is-Purelib: true\nTag: py3-none-any\n",
              f"{dist}.dist-info/entry_points.txt": entry_points.encode()}
    record = "".join(f"{name},sha256={_b64_sha256(data)},{len(data)}\n" for name, data in files.items())
    wheel = out / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{dist}.dist-info/RECORD", record + f"{dist}.dist-info/RECORD,,\n")
    return wheel


def _b64_sha256(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The plugin package, pip-installed into its own directory (never into the project's virtualenv)."""
    source, target = tmp_path_factory.mktemp("acme-src"), tmp_path_factory.mktemp("acme-site")
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / "acme_crm.py").write_text(ACME_CRM)
    (source / "acme_crm_broken.py").write_text(ACME_CRM_BROKEN)
    wheel = build_wheel(source, tmp_path_factory.mktemp("acme-dist"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--disable-pip-version-check", "--target", str(target), str(wheel)], check=True)
    return target


@pytest.fixture
def plugins(site, monkeypatch):
    """The plugin's directory on sys.path and the registry rescanned; both undone afterwards."""
    monkeypatch.setenv("ACME_TEST_KEY", "acme-secret")
    monkeypatch.syspath_prepend(str(site))
    available.cache_clear()
    yield
    available.cache_clear()
    for module in ("acme_crm", "acme_crm_broken"):
        sys.modules.pop(module, None)


def tenants_file(tmp_path: Path, connector_type: str) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS % connector_type)
    return path


def test_the_registry_lists_an_installed_plugin_next_to_the_bundled_connectors(plugins):
    found = available()

    assert found["acme"].__module__ == "acme_crm"
    assert {"acme", "hubspot", "webhook", "twilio", "google"} <= set(found)


def test_a_tenant_enabling_the_plugin_validates_and_builds_it(plugins, tmp_path):
    # Given
    tenants = load_tenants(tenants_file(tmp_path, "acme"), validate_connector=validate_connector)
    config = tenants.get("acme-dental").connectors["crm"]
    # When
    crm = build(config, http="an injected client")
    # Then
    assert type(config).__name__ == "AcmeConfig" and config.api_key.get_secret_value() == "acme-secret"
    assert isinstance(crm, CRMConnector) and crm.http == "an injected client"


def test_a_plugin_that_fails_to_import_is_logged_and_skipped(plugins, caplog):
    with caplog.at_level(logging.ERROR, logger="connectors.registry"):
        found = available()

    assert "acme_broken" not in found and "acme" in found
    [failure] = [r for r in caplog.records if "acme_broken" in r.getMessage()]
    assert "failed to load; skipping it" in failure.getMessage()
    assert failure.exc_info[0] is ModuleNotFoundError


def test_an_entry_point_that_is_not_a_connector_is_logged_and_skipped(plugins, caplog):
    with caplog.at_level(logging.ERROR, logger="connectors.registry"):
        found = available()

    assert "acme_helper" not in found
    assert any("acme_helper" in r.getMessage() and "lacks a string `role`" in r.getMessage() for r in caplog.records)


def test_an_unknown_type_names_the_installed_connectors_of_that_role(plugins, tmp_path):
    with pytest.raises(ConfigError) as raised:
        load_tenants(tenants_file(tmp_path, "salesforce"), validate_connector=validate_connector)

    [problem] = raised.value.problems
    assert problem.line == 10
    assert "unknown connector type 'salesforce'" in problem.message
    installed = problem.message.split("installed crm connectors: ")[1].split(", ")
    assert {"acme", "hubspot", "webhook"} <= set(installed) and "twilio" not in installed


def test_without_the_plugin_on_the_path_it_is_gone_again(site):
    available.cache_clear()

    assert "acme" not in available()
    assert str(site) not in sys.path
