"""The sandbox Twilio in its own process, noting when each Messages-create arrives (for bench.first_text).

    python -m bench.twilio_sink --port 8911

Prints one JSON line ({"url", "account_sid", "auth_token"}) once it serves, then serves until killed.
`GET /_bench/arrivals` returns [[to, body, monotonic_ns], ...] for every message created since the last
`POST /_bench/reset`. CLOCK_MONOTONIC is one clock for every process on the machine, so these times
compare with the load generator's.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import sys
import threading
import time
from collections.abc import Mapping

from sandbox import twilio
from sandbox.server import ServedApp


class TimedTwilio(twilio.TwilioSandbox):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: list[tuple[str, str, int]] = []

    def create_message(self, account_sid: str, form: Mapping[str, str]) -> dict:
        arrived = time.monotonic_ns()
        message = super().create_message(account_sid, form)
        self.arrivals.append((message["to"], message["body"], arrived))
        return message


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    account_sid, auth_token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
    sandbox = TimedTwilio({account_sid: auth_token}, auto_deliver=False)
    app = twilio.create_app(sandbox)

    @app.get("/_bench/arrivals")
    def arrivals() -> list:
        return list(sandbox.arrivals)

    @app.post("/_bench/reset")
    def reset() -> dict:
        sandbox.arrivals.clear()
        return {}

    server = ServedApp(app, port=args.port).start()
    print(json.dumps({"url": server.url, "account_sid": account_sid, "auth_token": auth_token}), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
