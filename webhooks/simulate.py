"""Play a caller against a running `textback serve`: signed webhooks exactly as Twilio sends them.

The tenant is found from the number called (`--to`) in the tenants file; its Twilio connector gives
the auth token that signs each request and the Twilio API (the sandbox's, when the file came from
`textback sandbox`) where the texts textback sends can be read back. The URL signed is
TEXTBACK_PUBLIC_URL + path, the one the server checks, so a signature failure here is the same
misconfiguration a real Twilio call would meet.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from xml.etree import ElementTree

import httpx

from core.config import Tenant, TenantDirectory
from sandbox.twilio import API_VERSION, post_signed

MISSED = ("no-answer", "busy", "failed", "canceled")


class SimulationError(Exception):
    """The simulation could not be played; the message says why and what to fix."""


@dataclass
class Caller:
    tenant: Tenant
    public_url: str
    caller: str
    http: httpx.Client

    @classmethod
    def for_number(cls, tenants: TenantDirectory, *, to: str, caller: str, public_url: str,
                   http: httpx.Client) -> "Caller":
        tenant = tenants.by_number(to)
        if tenant is None:
            numbers = ", ".join(n for t in tenants for n in t.phone_numbers)
            raise SimulationError(f"no tenant has the number {to}; the tenants file's numbers are: {numbers}")
        if tenant.connectors.get("sms") is None or tenant.connectors["sms"].type != "twilio":
            raise SimulationError(f"tenant {tenant.id} has no twilio sms connector to sign webhooks with")
        return cls(tenant=tenant, public_url=public_url.rstrip("/"), caller=caller, http=http)

    @property
    def number(self) -> str:
        return self.tenant.phone_numbers[0]

    @property
    def _sms(self):
        return self.tenant.connectors["sms"]

    def call(self, *, dial_status: str = "no-answer", talked_seconds: int = 0) -> list[str]:
        """Ring the number, then end the dial with `dial_status` after `talked_seconds` of conversation;
        returns what happened, in words."""
        call_sid = "CA" + secrets.token_hex(16)
        common = {"CallSid": call_sid, "AccountSid": self._sms.account_sid, "From": self.caller,
                  "Caller": self.caller, "To": self.number, "Direction": "inbound", "ApiVersion": API_VERSION}
        story = [f"{self.caller} calls {self.tenant.name} at {self.number}"]
        ring = self._post("/twilio/voice", {**common, "CallStatus": "ringing"})
        story.append(f"  textback answers the call: {spoken(ring.text)}")
        if _dials(ring.text):
            done = self._post("/twilio/voice/dial-complete", {
                **common, "CallStatus": "in-progress", "DialCallStatus": dial_status,
                "DialCallSid": "CA" + secrets.token_hex(16), "DialCallDuration": str(talked_seconds)})
            outcome = ("nobody picks up" if dial_status in MISSED
                       else f"the dial ends: {dial_status} after {talked_seconds} s")
            story.append(f"  {outcome}; the caller hears: {spoken(done.text)}")
        return story

    def text(self, body: str) -> None:
        sid = "SM" + secrets.token_hex(16)
        self._post("/twilio/sms", {"MessageSid": sid, "SmsMessageSid": sid, "SmsSid": sid,
                                   "AccountSid": self._sms.account_sid, "From": self.caller, "To": self.number,
                                   "Body": body, "NumMedia": "0", "NumSegments": "1", "SmsStatus": "received",
                                   "ApiVersion": API_VERSION})

    def texts_received(self) -> list[str]:
        """The texts sent to the caller, oldest first, read from the Twilio API the connector uses."""
        url = f"{self._sms.base_url.rstrip('/')}/{API_VERSION}/Accounts/{self._sms.account_sid}/Messages.json"
        answer = self.http.get(url, params={"To": self.caller, "PageSize": 100},
                               auth=(self._sms.account_sid, self._sms.auth_token.get_secret_value()))
        if answer.status_code != 200:
            raise SimulationError(f"the Twilio API at {self._sms.base_url} answered {answer.status_code} when "
                                  "listing the caller's texts")
        return [m.get("body", "") for m in reversed(answer.json().get("messages", []))]

    def wait_for_texts(self, seen: int, *, seconds: float, sleep: Callable[[float], None] = time.sleep,
                       clock: Callable[[], float] = time.monotonic) -> list[str]:
        """New texts after the first `seen`, waiting up to `seconds` for the first one (the worker sends them)."""
        deadline = clock() + seconds
        while True:
            texts = self.texts_received()[seen:]
            if texts or clock() >= deadline:
                return texts
            sleep(0.25)

    def _post(self, path: str, params: dict[str, str]) -> httpx.Response:
        url = self.public_url + path
        try:
            answer = post_signed(self.http, url=url, params=params,
                                 auth_token=self._sms.auth_token.get_secret_value())
        except httpx.TransportError as exc:
            raise SimulationError(f"nothing answers at {url} ({type(exc).__name__}); is `textback serve` running "
                                  "and TEXTBACK_PUBLIC_URL its address?") from exc
        if answer.status_code == 403:
            raise SimulationError(f"textback refused the signature for {url}: the server checks signatures "
                                  "against its own TEXTBACK_PUBLIC_URL; both sides must use the same URL and "
                                  "the same tenants file")
        if answer.status_code >= 400:
            raise SimulationError(f"POST {url} answered {answer.status_code}: {answer.text[:200]}")
        return answer


def _dials(twiml: str) -> bool:
    try:
        return any(verb.tag == "Dial" for verb in ElementTree.fromstring(twiml))
    except ElementTree.ParseError:
        return False


def spoken(twiml: str) -> str:
    """TwiML in plain words: who is rung for how long, what is said, whether the line is hung up."""
    try:
        verbs = list(ElementTree.fromstring(twiml))
    except ElementTree.ParseError:
        return "an answer that is not TwiML"
    parts = []
    for verb in verbs:
        if verb.tag == "Dial":
            numbers = ", ".join((n.text or "").strip() for n in verb) or "the staff phone"
            parts.append(f"rings {numbers} for {verb.get('timeout', '30')} seconds")
        elif verb.tag == "Say":
            parts.append(f"“{(verb.text or '').strip()}”")
        elif verb.tag == "Record":
            parts.append("records a voicemail")
        elif verb.tag == "Hangup":
            parts.append("hangs up")
        elif verb.tag == "Pause":
            parts.append("pauses")
        else:
            parts.append(verb.tag.lower())
    return ", then ".join(parts) or "silence"
