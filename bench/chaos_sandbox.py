"""Every sandbox vendor in its own process, with a control port, for bench.chaos and bench.crm_push.

    python -m bench.chaos_sandbox --calendar staff@chaos.example [--hubspot-budget 100]

Prints one JSON line ({"control": url, "env": {...}, "connectors": {...}}) once it serves, then serves
until SIGTERM. The control port answers:

- `POST /_chaos/faults {"share": 0.3, "seed": 1}`: every vendor (Twilio, HubSpot, Google, Clio, Graph)
  fails about that share of its requests (sandbox.common.Faults.random_share); share 0 stops it.
- `GET /_chaos/state`: what the vendors hold — every text Twilio accepted with our message id (the `m`
  of its StatusCallback), HubSpot's contacts and meetings, Google's live events, Clio's contacts and
  calendar entries, the Outlook mailbox's events — and the faults served.
- `GET /_chaos/hubspot`: the requests HubSpot's limits admitted and the 429s they answered, and what it
  holds: each contact's phone, each note's and deal's `textback_key` (for counting duplicates).

Two firms use it: one on HubSpot + Google Calendar (`connectors`), one on Clio + Outlook (`second`).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import urllib.parse

from fastapi import FastAPI

from sandbox.server import ServedApp
from sandbox.stack import SandboxStack


CLIO_PER_MINUTE = 600


def _clio_budget(connectors: dict) -> dict:
    return {**connectors, "crm": {**connectors["crm"], "requests_per_minute": CLIO_PER_MINUTE}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calendar", default="staff@chaos.example", help="the HubSpot firm's Google calendar")
    parser.add_argument("--mailbox", default="staff@second-chaos.example", help="the Clio firm's Outlook mailbox")
    parser.add_argument("--hubspot-budget", type=int, default=None, help="HubSpot's requests per 10 s (its plan's)")
    args = parser.parse_args()
    with SandboxStack.start(calendars=(args.calendar, args.mailbox)) as stack:
        stack.google.channels.allow_http = True  # textback is served on plain loopback here; real Google needs HTTPS
        # A Clio account on a larger API budget than the default 50 per minute: the run is about crashes, faults
        # and replays, and Clio's own limit is proved elsewhere (tests/sync/test_crm_quotas.py).
        stack.clio.rate_limit = CLIO_PER_MINUTE
        if args.hubspot_budget:
            stack.hubspot.access.burst_limit = args.hubspot_budget
        accepted: list[dict] = []
        lock = threading.Lock()
        create = stack.twilio.create_message

        def recording_create(account_sid, form):
            message = create(account_sid, form)
            query = urllib.parse.urlparse(form.get("StatusCallback") or "").query
            with lock:
                accepted.append({"to": message["to"], "body": message["body"],
                                 "m": urllib.parse.parse_qs(query).get("m", [None])[0]})
            return message

        stack.twilio.create_message = recording_create  # the routes call the instance's method
        all_faults = [stack.twilio.faults, stack.hubspot.faults, stack.google.faults, stack.clio.faults,
                      stack.microsoft.graph.faults]
        control = FastAPI()

        @control.post("/_chaos/faults")
        def faults(body: dict) -> dict:
            for i, vendor in enumerate(all_faults):
                if body.get("share", 0):
                    vendor.random_share(float(body["share"]), seed=int(body.get("seed", 0)) * 10 + i,
                                        delay_seconds=float(body.get("delay_seconds", 1.5)))
                else:
                    vendor.clear()
            return {}

        @control.get("/_chaos/state")
        def state() -> dict:
            with lock:
                texts = list(accepted)
            return {
                "texts": texts,
                "contacts": [c["properties"].get("phone") for c in stack.hubspot.objects("contacts")],
                "meetings": len(stack.hubspot.objects("meetings")),
                "events": [e["id"] for e in stack.google.events(args.calendar) if e["status"] != "cancelled"],
                "clio_contacts": [[p.get("number") for p in c.get("phone_numbers") or []]
                                  for c in stack.clio.records("contacts") if c.get("type") == "Person"],
                "clio_entries": len(stack.clio.records("calendar_entries")),
                "graph_events": [e["id"] for e in stack.microsoft.graph.events(args.mailbox)
                                 if not e.get("isCancelled")],
                "faults": {name: dict(f.served) for name, f in
                           zip(("twilio", "hubspot", "google", "clio", "graph"), all_faults)},
            }

        @control.get("/_chaos/hubspot")
        def hubspot(counts: bool = False) -> dict:
            if counts:  # only the counts: cheap enough to ask every second
                return {"admitted": stack.hubspot.access.admitted, "refused": len(stack.hubspot.access.refused)}
            keys = {kind: [r["properties"].get("textback_key") for r in stack.hubspot.objects(kind)]
                    for kind in ("notes", "deals")}
            return {"admitted": stack.hubspot.access.admitted, "refused": len(stack.hubspot.access.refused),
                    "by_route": dict(stack.hubspot.access.admitted_by),
                    "contacts": [c["properties"].get("phone") for c in stack.hubspot.objects("contacts")], **keys}

        server = ServedApp(control, port=0).start()
        print(json.dumps({"control": server.url, "env": stack.env,
                          "connectors": stack.connectors_yaml(calendars=[args.calendar]),
                          "second": _clio_budget(stack.connectors_yaml(calendars=[args.mailbox], crm="clio",
                                                                       calendar="outlook"))}),
              flush=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        server.signal_stop()
        server.wait_stopped()
    sys.exit(0)


if __name__ == "__main__":
    main()
