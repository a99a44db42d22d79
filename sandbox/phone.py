"""The caller's side of the carrier: rings, dial outcomes and texts, sent to our app as Twilio would.

Every request is signed with `X-Twilio-Signature` over `app_url + path`, so our
webhooks validate them exactly as they validate Twilio.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

import httpx

from sandbox.twilio import API_VERSION, TwilioSandbox, post_signed


class SandboxPhone:
    def __init__(self, *, app_url: str, auth_token: str, account_sid: str, twilio: TwilioSandbox,
                 http: httpx.Client) -> None:
        self.app_url = app_url.rstrip("/")
        self.auth_token = auth_token
        self.account_sid = account_sid
        self.twilio = twilio
        self.http = http

    def signed_post(self, path: str, params: Mapping[str, str]) -> httpx.Response:
        return post_signed(self.http, url=self.app_url + path, params=params, auth_token=self.auth_token)

    def ring(self, *, call_sid: str, caller: str, to: str) -> httpx.Response:
        """An inbound call reaching one of our numbers: Twilio asks /twilio/voice for TwiML."""
        return self.signed_post("/twilio/voice", {
            **self._call(call_sid=call_sid, caller=caller, to=to),
            "CallStatus": "ringing",
        })

    def dial_complete(self, *, call_sid: str, caller: str, to: str, dial_status: str, duration: int = 0,
                      answered_by: str | None = None, call_status: str = "in-progress") -> httpx.Response:
        """The <Dial> action callback: how the forward to the business ended (`no-answer`, `busy`, ...).

        `call_status` is the caller's leg: "completed" when they hung up during the dial.
        """
        params = {
            **self._call(call_sid=call_sid, caller=caller, to=to),
            "CallStatus": call_status,
            "DialCallStatus": dial_status,
            "DialCallSid": "CA" + secrets.token_hex(16),
            "DialCallDuration": str(duration),
        }
        if answered_by is not None:
            params["AnsweredBy"] = answered_by
        return self.signed_post("/twilio/voice/dial-complete", params)

    def text(self, *, caller: str, to: str, body: str, message_sid: str | None = None) -> httpx.Response:
        """An SMS from the caller; Twilio records it (and any STOP/START) before calling /twilio/sms.

        Pass the same `message_sid` again to replay a webhook retry.
        """
        message = self.twilio.record_inbound(account_sid=self.account_sid, from_=caller, to=to, body=body,
                                             message_sid=message_sid)
        return self.signed_post("/twilio/sms", {
            "MessageSid": message["sid"],
            "SmsMessageSid": message["sid"],
            "SmsSid": message["sid"],
            "AccountSid": self.account_sid,
            "From": caller,
            "To": to,
            "Body": body,
            "NumMedia": "0",
            "NumSegments": message["num_segments"],
            "SmsStatus": "received",
            "ApiVersion": API_VERSION,
        })

    def _call(self, *, call_sid: str, caller: str, to: str) -> dict[str, str]:
        return {
            "CallSid": call_sid,
            "AccountSid": self.account_sid,
            "From": caller,
            "Caller": caller,
            "To": to,
            "Called": to,
            "Direction": "inbound",
            "ApiVersion": API_VERSION,
        }
