"""App settings (environment) and the tenants file (YAML, validated, errors as file:line)."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from datetime import time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.engine.interpreters.settings import InterpreterSettings
from core.templates import Templates
from core.config_errors import ConfigError, ConfigProblem  # noqa: F401  (re-exported)


class Settings(BaseSettings):
    """Process settings, read from TEXTBACK_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="TEXTBACK_", extra="ignore")

    database_url: str = "sqlite:///textback.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    public_url: str = Field("http://127.0.0.1:8000", description="Base URL Twilio calls; signatures are computed over it")
    config: Path = Path("tenants.yaml")
    secret_keys: SecretStr | None = Field(
        None, description="Fernet keys that encrypt stored OAuth tokens, comma-separated, newest first")
    relay_interval: float = Field(5.0, gt=0, description="Seconds between outbox relay passes in each worker")
    claim_seconds: float = Field(300.0, ge=10, description="How long a worker owns a claimed outbox row; a row "
                                 "whose worker died is run again after this (longer than any one job runs)")

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")


# --- tenants -----------------------------------------------------------------------------

class Vertical(str, enum.Enum):
    law = "law"
    medical = "medical"
    home_services = "home_services"
    real_estate = "real_estate"


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")


def to_e164(value: str, *, region: str = "US") -> str:
    """Normalise a phone number to E.164 or raise ValueError with the fix."""
    try:
        parsed = phonenumbers.parse(str(value), region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"{value!r} is not a phone number; write it in E.164 form such as +15551234567") from exc
    if not phonenumbers.is_possible_number(parsed):
        raise ValueError(f"{value!r} is not a possible phone number; write it in E.164 form such as +15551234567")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpeningHours(_Strict):
    """Per weekday: "09:00-17:00", a list of such ranges, or "closed"."""

    days: dict[str, list[tuple[time, time]]]

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "days" in raw:
            return raw
        if not isinstance(raw, dict):
            raise ValueError("hours must map weekdays (mon..sun) to \"09:00-17:00\" or \"closed\"")
        days: dict[str, list[tuple[time, time]]] = {day: [] for day in WEEKDAYS}
        for day, spec in raw.items():
            key = str(day).lower()[:3]
            if key not in WEEKDAYS:
                raise ValueError(f"unknown weekday {day!r}; use mon, tue, wed, thu, fri, sat, sun")
            ranges = spec if isinstance(spec, list) else [spec]
            for item in ranges:
                if item in (None, False, "closed"):
                    continue
                days[key].append(_parse_range(str(item)))
        return {"days": days}

    def ranges(self, weekday: int) -> list[tuple[time, time]]:
        return self.days.get(WEEKDAYS[weekday], [])


def _parse_range(text: str) -> tuple[time, time]:
    match = _HOURS.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not an hours range; write it as \"09:00-17:00\"")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59:
        raise ValueError(f"{text!r} has an impossible time; hours are 00-23, minutes 00-59")
    start, end = time(h1, m1), time(23, 59) if h2 == 24 else time(h2, m2)
    if end <= start:
        raise ValueError(f"{text!r} closes before it opens; write the earlier time first")
    return start, end


class MissedCallSettings(_Strict):
    mode: Literal["dial", "forwarded"] = "dial"
    ring_seconds: int = Field(18, ge=5, le=60, description="Over ~20 s the staff phone's voicemail answers")
    delay_seconds: int = Field(0, ge=0, le=900)
    cooldown_hours: float = Field(24, ge=0)
    min_answered_seconds: int = Field(10, ge=0, le=120, description="A shorter bridged call counts as missed")
    machine_detection: bool = True
    whisper: bool = Field(False, description="Staff must press a key to take the call, so voicemail can't answer")
    voicemail: bool = False
    greeting: str | None = Field(None, max_length=500, description="Spoken to callers whose call was missed")
    lookup_line_type: bool = False


class QuietHours(_Strict):
    """Texting window in the caller's local time (TCPA: 8 am to 9 pm)."""

    start: time = time(8, 0)
    end: time = time(21, 0)
    first_reply_anytime: bool = Field(True, description="The one reply to the caller's own call may go out at once")


class FollowUpSettings(_Strict):
    max: int = Field(1, ge=0, le=3)
    after_hours: float = Field(24, ge=0.25, le=168)


class BookingSettings(_Strict):
    duration_minutes: int = Field(30, ge=5, le=480)
    buffer_minutes: int = Field(0, ge=0, le=240)
    min_notice_minutes: int = Field(60, ge=0)
    horizon_days: int = Field(7, ge=1, le=60)
    slots_offered: int = Field(3, ge=2, le=3)
    step_minutes: int = Field(30, ge=5, le=240)
    location: str | None = None
    # Calendars named here must also be in the calendar connector's `calendars` (it reads and books only
    # those); core/booking.py drops any other with a warning. That check needs the connector's config,
    # which is validated in another layer, so it is not made when the file loads.
    routes: dict[str, dict[str, list[str]]] = Field(
        {}, description="answer id -> answer value -> calendar ids to offer from, e.g. "
                        "{matter_type: {family: [family@firm.example]}}; unmatched leads use every calendar")
    owner_calendars: dict[str, str] = Field(
        {}, description="CRM owner id -> that person's calendar id; a lead with an owner is offered only it")


class TwoWaySettings(_Strict):
    """What changes made in the CRM and the calendars do here (README "Two-way sync")."""

    owner_phones: dict[str, str] = Field(
        {}, description="CRM owner id -> that person's phone: handoffs of their leads go there")
    pull_minutes: int = Field(15, ge=1, le=1440, description="minutes between incremental pulls, the safety "
                                                              "net under push notifications")
    tell_caller: bool = Field(True, description="text the caller when staff move or cancel the appointment")

    @field_validator("owner_phones")
    @classmethod
    def _phones(cls, value: dict[str, str]) -> dict[str, str]:
        return {owner: to_e164(phone) for owner, phone in value.items()}


class Tenant(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{1,62}$")
    name: str = Field(min_length=1, max_length=80)
    vertical: Vertical
    timezone: str
    phone_numbers: list[str] = Field(min_length=1)
    forward_to: list[str] = []
    missed_call: MissedCallSettings = MissedCallSettings()
    hours: OpeningHours
    booking: BookingSettings = BookingSettings()
    contact: str | None = Field(None, description="How a caller reaches a person, used in HELP and handoff texts")
    handoff_to: list[str] = []
    provider_confirms_opt_out: bool = Field(True, description="The SMS provider answers STOP keywords itself "
                                            "(Twilio's default on long codes); textback confirms free-text opt-outs")
    blocklist: list[str] = []
    quiet_hours: QuietHours = QuietHours()
    followups: FollowUpSettings = FollowUpSettings()
    templates: Templates = Templates()
    playbook: dict[str, Any] | None = Field(None, description="Overrides of the vertical's shipped playbook "
                                            "(steps, wording, rules), validated like the playbook itself")
    interpreter: InterpreterSettings = InterpreterSettings()  # rules (offline) or an OpenAI-compatible llm
    api_key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$",
                                       description="SHA-256 of the key other phone systems send as a bearer token")
    connectors: dict[Literal["sms", "crm", "calendar"], Any] = {}
    two_way: TwoWaySettings = TwoWaySettings()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as America/New_York") from exc
        return value

    @field_validator("phone_numbers", "forward_to", "handoff_to", "blocklist")
    @classmethod
    def _numbers(cls, values: list[str]) -> list[str]:
        return [to_e164(v) for v in values]

    @model_validator(mode="after")
    def _dial_needs_staff(self) -> "Tenant":
        if self.missed_call.mode == "dial" and not self.forward_to:
            raise ValueError("missed_call.mode is dial but forward_to is empty; list the staff numbers to ring, "
                             "or set mode: forwarded")
        return self

    @field_validator("playbook")
    @classmethod
    def _playbook_override_is_valid(cls, override: dict[str, Any] | None, info: ValidationInfo):
        vertical = info.data.get("vertical")
        if override and vertical is not None:
            from core.engine.playbook import playbook_for

            try:
                playbook_for(vertical.value, override)
            except (ValueError, KeyError) as exc:
                raise ValueError(f"playbook override: {exc}") from exc
        return override

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def conversation_playbook(self, name: str | None = None):
        """The playbook this tenant's conversations follow: the shipped one with the tenant's override."""
        from core.engine.playbook import playbook_for

        return playbook_for(name or self.vertical.value, self.playbook)


class TenantsFile(_Strict):
    tenants: list[Tenant] = Field(min_length=1)


class TenantDirectory:
    """Validated tenants, found by id or by the number a call or text came to."""

    def __init__(self, tenants: list[Tenant], *, source: Path | None = None) -> None:
        self.tenants = tenants
        self.source = source
        self._by_id = {t.id: t for t in tenants}
        self._by_number = {n: t for t in tenants for n in t.phone_numbers}

    def get(self, tenant_id: str) -> Tenant | None:
        return self._by_id.get(tenant_id)

    def by_number(self, number: str) -> Tenant | None:
        found = self._by_number.get(number)  # Twilio sends E.164 already: no parse on every webhook
        if found is not None:
            return found
        try:
            return self._by_number.get(to_e164(number))
        except ValueError:
            return None

    def __iter__(self):
        return iter(self.tenants)


# validate_connector(role, raw mapping) -> a validated connector config model; raises
# ValidationError (pydantic) or ValueError. Supplied by connectors.registry.
ConnectorValidator = Callable[[str, Any], BaseModel]


def load_tenants(path: Path, *, validate_connector: ConnectorValidator | None = None) -> TenantDirectory:
    """Every tenant of the file, validated; raises ConfigError listing every problem at once."""
    from core import redact
    from core.tenants_file import read_tenants

    tenants = read_tenants(Path(path), validate_connector=validate_connector)
    redact.register_models(tenants)  # no log line or CLI output shows a tenant's secrets
    return TenantDirectory(tenants, source=Path(path))
