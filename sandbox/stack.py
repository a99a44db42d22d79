"""All vendor emulators at once, seeded with one set of credentials: for the demo, tests and `textback sandbox`."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

from sandbox import google_calendar, hubspot, twilio
from sandbox.server import ServedApp


@dataclass
class SandboxStack:
    twilio: twilio.TwilioSandbox
    hubspot: hubspot.HubSpotSandbox
    google: google_calendar.GoogleCalendarSandbox
    servers: dict[str, ServedApp]
    env: dict[str, str] = field(default_factory=dict)  # secrets for the tenants file's env: references

    @classmethod
    @contextlib.contextmanager
    def start(cls, *, first_port: int = 0, calendars: tuple[str, ...] = ("staff@example.com",),
              auto_deliver: bool = False) -> Iterator["SandboxStack"]:
        account_sid, auth_token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
        hubspot_token = "pat-na1-" + secrets.token_hex(16)
        tw = twilio.TwilioSandbox({account_sid: auth_token}, auto_deliver=auto_deliver)
        hs = hubspot.HubSpotSandbox(tokens={hubspot_token})
        gc = google_calendar.GoogleCalendarSandbox()
        port = iter(range(first_port, first_port + 3)) if first_port else iter((0, 0, 0))
        servers = {
            "twilio": ServedApp(twilio.create_app(tw), port=next(port)),
            "hubspot": ServedApp(hubspot.create_app(hs), port=next(port)),
            "google": ServedApp(google_calendar.create_app(gc), port=next(port)),
        }
        started: list[ServedApp] = []
        try:
            for server in servers.values():
                started.append(server.start())
            service_account = gc.oauth.new_service_account(
                "textback@demo-project.iam.gserviceaccount.com", token_uri=servers["google"].url + "/token")
            for calendar in calendars:
                gc.add_calendar(calendar, owners=[service_account["client_email"]])
            stack = cls(twilio=tw, hubspot=hs, google=gc, servers=servers, env={
                "TWILIO_ACCOUNT_SID": account_sid,
                "TWILIO_AUTH_TOKEN": auth_token,
                "HUBSPOT_TOKEN": hubspot_token,
                "GOOGLE_CREDENTIALS_JSON": json.dumps(service_account),
            })
            yield stack
        finally:
            for server in reversed(started):
                server.stop()
            tw.close()

    @property
    def account_sid(self) -> str:
        return self.env["TWILIO_ACCOUNT_SID"]

    @property
    def auth_token(self) -> str:
        return self.env["TWILIO_AUTH_TOKEN"]

    def connectors_yaml(self, *, calendars: list[str]) -> dict:
        """The `connectors:` block of a tenant pointed at this stack (secrets as env: references)."""
        return {
            "sms": {"type": "twilio", "account_sid": self.account_sid, "auth_token": "env:TWILIO_AUTH_TOKEN",
                    "base_url": self.servers["twilio"].url},
            "crm": {"type": "hubspot", "access_token": "env:HUBSPOT_TOKEN", "base_url": self.servers["hubspot"].url},
            "calendar": {"type": "google", "calendars": calendars, "credentials": "env:GOOGLE_CREDENTIALS_JSON",
                         "base_url": self.servers["google"].url},
        }

    def describe(self) -> list[str]:
        lines = [f"{name:<8} {server.url}" for name, server in self.servers.items()]
        lines += [f"export {name}='{value}'" for name, value in self.env.items()]
        return lines
