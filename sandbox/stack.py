"""All vendor emulators at once, seeded with one set of credentials: for the demo, tests and `textback sandbox`.

Twilio, HubSpot, Google Calendar and Clio over HTTP on loopback; Microsoft's identity platform and
Graph over HTTPS with a throwaway CA (msal insists on https).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

from sandbox import clio, google_calendar, hubspot, twilio
from sandbox.graph_stack import MicrosoftStack
from sandbox.server import ServedApp

PRACTICE_AREAS = {"family": "Family", "criminal": "Criminal Defense", "injury": "Personal Injury",
                  "estate": "Estate Planning"}


@dataclass
class SandboxStack:
    twilio: twilio.TwilioSandbox
    hubspot: hubspot.HubSpotSandbox
    google: google_calendar.GoogleCalendarSandbox
    clio: clio.ClioSandbox
    microsoft: MicrosoftStack
    servers: dict[str, ServedApp]
    env: dict[str, str] = field(default_factory=dict)  # secrets for the tenants file's env: references
    outlook_app: object = None

    @classmethod
    @contextlib.contextmanager
    def start(cls, *, first_port: int = 0, host: str = "127.0.0.1",
              calendars: tuple[str, ...] = ("staff@example.com",),
              auto_deliver: bool = False) -> Iterator["SandboxStack"]:
        """Every emulator on `host`; with `first_port`, on six consecutive ports from it (Twilio, HubSpot,
        Google, Clio, Microsoft login, Graph), otherwise on free ones."""
        account_sid, auth_token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
        hubspot_token = "pat-na1-" + secrets.token_hex(16)
        tw = twilio.TwilioSandbox({account_sid: auth_token}, auto_deliver=auto_deliver)
        hs = hubspot.HubSpotSandbox(tokens={hubspot_token})
        gc = google_calendar.GoogleCalendarSandbox()
        cl = clio.ClioSandbox()
        port = iter(range(first_port, first_port + 6)) if first_port else iter((0,) * 6)
        servers = {
            "twilio": ServedApp(twilio.create_app(tw), host=host, port=next(port)),
            "hubspot": ServedApp(hubspot.create_app(hs), host=host, port=next(port)),
            "google": ServedApp(google_calendar.create_app(gc), host=host, port=next(port)),
            "clio": ServedApp(clio.create_app(cl), host=host, port=next(port)),
        }
        started: list[ServedApp] = []
        try:
            for server in servers.values():
                started.append(server.start())
            with MicrosoftStack.start(host=host, ports=(next(port), next(port))) as ms:
                service_account = gc.oauth.new_service_account(
                    "textback@demo-project.iam.gserviceaccount.com", token_uri=servers["google"].url + "/token")
                app = ms.identity.new_app()
                for calendar in calendars:
                    gc.add_calendar(calendar, owners=[service_account["client_email"]])
                    ms.graph.add_mailbox(app.tenant_id, calendar)
                for name in PRACTICE_AREAS.values():
                    cl.add_practice_area(name)
                try:
                    yield cls(twilio=tw, hubspot=hs, google=gc, clio=cl, microsoft=ms, servers=servers,
                              outlook_app=app, env={
                                  "TWILIO_ACCOUNT_SID": account_sid,
                                  "TWILIO_AUTH_TOKEN": auth_token,
                                  "HUBSPOT_TOKEN": hubspot_token,
                                  "GOOGLE_CREDENTIALS_JSON": json.dumps(service_account),
                                  "CLIO_TOKEN": cl.issue_token(),
                                  "OUTLOOK_CLIENT_SECRET": app.client_secret,
                              })
                finally:
                    for server in started:  # all stop together while the Microsoft pair stops
                        server.signal_stop()
        finally:
            for server in started:
                server.signal_stop()
            for server in started:
                server.wait_stopped()
            tw.close()

    @property
    def account_sid(self) -> str:
        return self.env["TWILIO_ACCOUNT_SID"]

    @property
    def auth_token(self) -> str:
        return self.env["TWILIO_AUTH_TOKEN"]

    def connectors_yaml(self, *, calendars: list[str], crm: str = "hubspot", calendar: str = "google") -> dict:
        """The `connectors:` block of a tenant pointed at this stack (secrets as env: references)."""
        crms = {
            "hubspot": {"type": "hubspot", "access_token": "env:HUBSPOT_TOKEN", "base_url": self.servers["hubspot"].url},
            "clio": {"type": "clio", "access_token": "env:CLIO_TOKEN", "base_url": self.servers["clio"].url,
                     "practice_areas": PRACTICE_AREAS},
        }
        calendar_blocks = {
            "google": {"type": "google", "calendars": calendars, "credentials": "env:GOOGLE_CREDENTIALS_JSON",
                       "base_url": self.servers["google"].url},
            "outlook": {"type": "outlook", "mode": "app", "tenant_id": self.outlook_app.tenant_id,
                        "client_id": self.outlook_app.client_id, "client_secret": "env:OUTLOOK_CLIENT_SECRET",
                        "calendars": calendars, **self.microsoft.connector_urls()},
        }
        return {
            "sms": {"type": "twilio", "account_sid": self.account_sid, "auth_token": "env:TWILIO_AUTH_TOKEN",
                    "base_url": self.servers["twilio"].url},
            "crm": crms[crm],
            "calendar": calendar_blocks[calendar],
        }

    def describe(self) -> list[str]:
        """Where each emulator listens, in words."""
        names = {"twilio": "Twilio (Messages, Lookup)", "hubspot": "HubSpot CRM", "google": "Google Calendar",
                 "clio": "Clio Manage"}
        lines = [f"{names[name]:<26} {server.url}" for name, server in self.servers.items()]
        lines += [f"{'Microsoft identity (login)':<26} {self.microsoft.login.url}",
                  f"{'Microsoft Graph (Outlook)':<26} {self.microsoft.api.url}  (HTTPS; CA bundle "
                  f"{self.microsoft.ca.bundle})"]
        return lines

    def export_lines(self) -> list[str]:
        """`export NAME='value'` for every secret the tenants file names with env: (shell-quoted)."""
        import shlex

        return [f"export {name}={shlex.quote(value)}" for name, value in self.env.items()]
