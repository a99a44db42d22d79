"""Crashes and vendor faults, end to end: N missed calls through real processes while the worker is SIGKILLed.

Starts what production runs — `textback serve` and `textback worker` as their own processes, a private
redis-server, every sandbox vendor in its own process (bench/chaos_sandbox.py) — and plays N missed
calls (signed dial-complete webhooks) from distinct callers to two firms, one on HubSpot + Google
Calendar and one on Clio + Outlook (every other caller); a share of the callers answer every question by
text and pick a time, through to a booking (a calendar event, the CRM contact and its meeting or
calendar entry). Meanwhile the worker is SIGKILLed at random moments and restarted, the web process once;
optionally the vendors fail a share of their requests (429 + Retry-After, 500/502/503, late answers,
connections dropped before or after the request was handled), and every webhook is replayed N times, later
and out of order. Webhooks refused while the web process is down are sent again, as Twilio would.
At the end, with the faults off, once the outbox is quiet, it checks:

- every caller texted, and no text sent twice (each text Twilio accepted carries our message id);
- every caller exactly one contact in their firm's CRM (HubSpot or Clio), no contact for anyone else;
- every confirmed booking exactly one live event (Google or Outlook) and one HubSpot meeting or Clio
  calendar entry, and none besides;
- no outbox row stuck: each is done, or dead with its reason (follow-ups not yet due may wait);
- no sandbox secret (auth token, HubSpot and Clio tokens, Google private key) in the serve or worker log.

Run (the full counts of issue 14; about 15 minutes on 2 vCPUs):

    .venv/bin/python -m bench.chaos --calls 2000 --worker-kills 10 --web-kills 1 --fault-share 0.3 --replay 3 \
        --store postgres --redis-outage 30 --database-outage 10   # and the broker and the database go away
    .venv/bin/python -m bench.chaos --calls 2000 --worker-kills 0 --web-kills 0 --fault-share 0 --store postgres

The default share of bookers is 5%: each firm books into one staff calendar, whose 7-day horizon holds about
330 half-hour slots, so 20% of 2,000 callers (400) could not all be booked (a run with --book-share 0.2
booked 3 of them in 1,347 s; the rest were still choosing among taken times or queued for the calendar).

The last line reads `chaos: N calls, B booked, K worker kills, W web kills, F faults: L lost, D duplicated,
S stuck in T s`; the exit status is 1 when anything is lost, duplicated or stuck.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml
from sqlalchemy import create_engine, func, make_url, select
from twilio.request_validator import RequestValidator

from bench.first_text import BIN, BUSINESS, ROOT, STAFF, database, free_port, wait_until
from bench.outage_proxy import OutageProxy

CALENDAR, MAILBOX = "staff@chaos.example", "staff@second-chaos.example"
# The second firm, on Clio + Outlook: every other caller calls it.
BUSINESS2, STAFF2 = "+15550003333", "+15550004444"
# What a caller says to each of the law playbook's questions, found by a phrase of the question.
ANSWERS = {"What is your call about": "Its about my divorce, papers came yesterday",
           "court date or deadline": "no", "worked with our firm before": "nope",
           "other person or company": "none", "What's your name": "this is Sam Rivera"}
DONE_PHRASES = ("you're booked with", "you're all set")  # the booked template (core/engine/playbook.py)


@dataclass
class Report:
    calls: int = 0
    bookers: int = 0
    booked: int = 0
    worker_kills: int = 0
    web_kills: int = 0
    outages: list[str] = field(default_factory=list)
    exits: list[str] = field(default_factory=list)  # processes that stopped by themselves, restarted
    unfinished: int = 0  # bookers whose conversation had not ended in a booking by the deadline
    webhook_retries: int = 0
    replays: int = 0
    problems: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def line(self) -> str:
        c = self.counts
        return (f"chaos: {self.calls} calls, {self.booked} booked, {self.worker_kills} worker kills, "
                f"{self.web_kills} web kills, {c.get('faults', 0)} faults: {c.get('lost', 0)} lost, "
                f"{c.get('duplicated', 0)} duplicated, {c.get('stuck', 0)} stuck in {self.seconds:.0f} s")


class Sandbox:
    """bench/chaos_sandbox.py in its own process."""

    def __init__(self, workdir: Path, *, hubspot_budget: int | None = None) -> None:
        budget = ["--hubspot-budget", str(hubspot_budget)] if hubspot_budget else []
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.chaos_sandbox", "--calendar", CALENDAR, *budget],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=(workdir / "sandbox.log").open("ab"),
                                     text=True)
        facts = json.loads(self.proc.stdout.readline())
        self.control, self.env, self.connectors = facts["control"], facts["env"], facts["connectors"]
        self.second = facts["second"]

    def faults(self, share: float, seed: int) -> None:
        httpx.post(self.control + "/_chaos/faults", json={"share": share, "seed": seed}, timeout=10).raise_for_status()

    def state(self) -> dict:
        return httpx.get(self.control + "/_chaos/state", timeout=30).json()

    def hubspot(self, *, counts: bool = False) -> dict:
        """HubSpot's admitted and refused request counts, and (unless `counts`) the records it holds."""
        return httpx.get(self.control + "/_chaos/hubspot", params={"counts": counts} if counts else None,
                         timeout=60).json()

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=15)
        if self.proc.poll() is None:
            self.proc.kill()


class Redis:
    """A private redis-server that keeps nothing on disk: stopped and started again, its queues are empty."""

    def __init__(self, workdir: Path) -> None:
        self.port, self.workdir = free_port(), workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.workdir)], stdout=subprocess.DEVNULL)
        wait_until(lambda: subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True,
                                          text=True).stdout.strip() == "PONG", timeout=10, what="redis-server")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Textback:
    """`textback serve` and `textback worker`, each killable and restartable."""

    def __init__(self, sandbox: Sandbox, redis: Redis, database_url: str, workdir: Path, *, threads: int,
                 claim_seconds: float) -> None:
        self.port, self.workdir, self.threads = free_port(), workdir, threads
        self.url = f"http://127.0.0.1:{self.port}"
        connectors = dict(sandbox.connectors)
        # Short vendor timeouts, so a late answer is a read timeout the job must survive.
        connectors["crm"] = {**connectors["crm"], "timeout_seconds": 1}
        tenants = workdir / "tenants.yaml"
        firm = {"vertical": "law", "timezone": "America/New_York",
                "missed_call": {"mode": "dial", "ring_seconds": 18, "cooldown_hours": 24},
                "hours": {day: "00:00-23:59" for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
                "booking": {"duration_minutes": 30, "min_notice_minutes": 60}}
        tenants.write_text(yaml.safe_dump({"tenants": [
            {"id": "chaos-law", "name": "Chaos & Co Law", "phone_numbers": [BUSINESS], "forward_to": [STAFF],
             **firm, "connectors": connectors},
            {"id": "second-chaos-law", "name": "Second Chaos Law", "phone_numbers": [BUSINESS2],
             "forward_to": [STAFF2], **firm, "connectors": sandbox.second},
        ]}, sort_keys=False))
        self.env = {**os.environ, **sandbox.env, "TEXTBACK_DATABASE_URL": database_url,
                    "TEXTBACK_REDIS_URL": redis.url, "TEXTBACK_CONFIG": str(tenants),
                    "TEXTBACK_PUBLIC_URL": self.url, "TEXTBACK_RELAY_INTERVAL": "1",
                    # A killed worker's claimed rows are free again after this; production keeps 300 s.
                    "TEXTBACK_CLAIM_SECONDS": str(claim_seconds)}
        subprocess.run([BIN / "textback", "db", "upgrade"], env=self.env, check=True, capture_output=True, cwd=workdir)
        self.web = self.worker = None
        self.lock = threading.Lock()  # a kill and its restart, or a revival, at a time
        self._stopping = threading.Event()
        self.start_web()
        self.start_worker()

    def supervise(self, report: Report) -> None:
        """As a process supervisor would (systemd's Restart=always): a process that exited by itself — a worker
        started while the database was unreachable refuses to run — is started again, and counted."""
        def loop() -> None:
            while not self._stopping.wait(1.0):
                with self.lock:
                    for name in ("web", "worker"):
                        proc = getattr(self, name)
                        if self._stopping.is_set() or proc is None or proc.poll() is None:
                            continue
                        report.exits.append(f"{name} exited with {proc.returncode}")
                        print(f"  the {name} exited by itself ({proc.returncode}); started again", flush=True)
                        with contextlib.suppress(RuntimeError):  # not up yet: the next round looks again
                            self.start_web() if name == "web" else self.start_worker()
        threading.Thread(target=loop, name="supervisor", daemon=True).start()

    def _spawn(self, *args: str, log: str) -> subprocess.Popen:
        with (self.workdir / log).open("ab") as out:
            return subprocess.Popen([BIN / "textback", *args], env=self.env, cwd=self.workdir, stdout=out,
                                    stderr=subprocess.STDOUT)

    def start_web(self) -> None:
        self.web = self._spawn("serve", "--port", str(self.port), log="serve.log")
        wait_until(lambda: httpx.get(self.url + "/readyz").status_code == 200, timeout=60, what="textback serve")

    def start_worker(self) -> None:
        self.worker = self._spawn("worker", "--threads", str(self.threads), log="worker.log")

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        self._stopping.set()
        with self.lock:
            pass  # a revival under way finishes first
        for proc in (self.web, self.worker):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (self.web, self.worker):
            if proc is not None:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()


class Twilio:
    """Signed webhooks as Twilio sends them; sent again while refused (the web process is down)."""

    def __init__(self, app_url: str, account_sid: str, auth_token: str, report: Report) -> None:
        self.app_url, self.account_sid = app_url, account_sid
        self.validator = RequestValidator(auth_token)
        self.http = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=64))
        self.report = report
        self.lock = threading.Lock()
        self.sent: list[tuple[str, dict]] = []  # for the replays
        self.business_of: dict[str, str] = {}  # caller -> the firm's number they call

    def post(self, path: str, params: dict, *, replay: bool = False) -> None:
        url = self.app_url + path
        headers = {"X-Twilio-Signature": self.validator.compute_signature(url, params)}
        deadline = time.monotonic() + 120
        while True:
            try:
                response = self.http.post(url, data=params, headers=headers)
                if response.status_code < 500:
                    if response.status_code != 200:
                        raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:200]}")
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path} never accepted within 120 s")
            with self.lock:
                self.report.webhook_retries += 1
            time.sleep(0.3)
        if not replay:
            with self.lock:
                self.sent.append((path, params))

    def missed_call(self, caller: str) -> None:
        self.post("/twilio/voice/dial-complete", {
            "AccountSid": self.account_sid, "CallSid": "CA" + secrets.token_hex(16), "From": caller,
            "To": self.business_of.get(caller, BUSINESS),
            "Direction": "inbound", "CallStatus": "in-progress", "DialCallStatus": "no-answer",
            "DialCallSid": "CA" + secrets.token_hex(16), "DialCallDuration": "0"})

    def text(self, caller: str, body: str) -> None:
        sid = "SM" + secrets.token_hex(16)
        self.post("/twilio/sms", {
            "MessageSid": sid, "SmsMessageSid": sid, "SmsSid": sid, "AccountSid": self.account_sid, "From": caller,
            "To": self.business_of.get(caller, BUSINESS), "Body": body, "NumMedia": "0", "NumSegments": "1",
            "SmsStatus": "received",
            "ApiVersion": "2010-04-01"})


def converse(twilio: Twilio, sandbox: Sandbox, bookers: list[str], rng: random.Random, *, timeout: float,
             report: Report) -> None:
    """Each booker answers the newest question until told they are booked (or the time runs out)."""
    answered: dict[str, int] = dict.fromkeys(bookers, 0)  # texts seen when we last answered
    done: set[str] = set()
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(8) as pool:
        while len(done) < len(bookers) and time.monotonic() < deadline:
            texts = collections.defaultdict(list)
            for t in sandbox.state()["texts"]:
                texts[t["to"]].append(t["body"])
            replies = []
            for caller in bookers:
                seen = texts.get(caller, [])
                if caller in done or len(seen) <= answered[caller]:
                    continue
                last = seen[-1]
                if any(phrase in last.lower() for phrase in DONE_PHRASES) and "1)" not in last:
                    done.add(caller)
                    continue
                if "1)" in last:
                    options = [str(n) for n in range(1, 6) if f"{n})" in last]
                    reply = rng.choice(options)
                else:
                    reply = next((a for phrase, a in ANSWERS.items() if phrase in last), None)
                    if reply is None:
                        report.problems.append(f"{caller}: no scripted answer to {last!r}")
                        done.add(caller)
                        continue
                answered[caller] = len(seen)
                replies.append((caller, reply))
            list(pool.map(lambda cr: twilio.text(*cr), replies))
            time.sleep(0.5)
    report.unfinished = len(set(bookers) - done)
    for caller in set(bookers) - done:
        report.problems.append(f"{caller}: conversation unfinished at the deadline")


@dataclass
class Outages:
    """What the chaos thread may take away besides the processes: the broker and the database."""

    redis: Redis
    redis_seconds: float = 0.0
    database: OutageProxy | None = None
    database_seconds: float = 0.0


def chaos(textback: Textback, rng: random.Random, *, worker_kills: int, web_kills: int, stop: threading.Event,
          report: Report, spacing: tuple[float, float], outages: Outages) -> None:
    """SIGKILL the worker `worker_kills` times (and the web process `web_kills` times) at random moments;
    stop the redis-server (and cut the database off) once each, when asked to."""
    plan = ["worker"] * worker_kills + ["web"] * web_kills
    plan += ["redis"] * bool(outages.redis_seconds) + ["database"] * bool(outages.database and outages.database_seconds)
    rng.shuffle(plan)
    for target in plan:
        if stop.wait(rng.uniform(*spacing)):
            return
        if target in ("redis", "database"):
            down, seconds = ((outages.redis, outages.redis_seconds) if target == "redis"
                             else (outages.database, outages.database_seconds))
            down.stop()
            print(f"  {target} down for {seconds:g} s", flush=True)
            time.sleep(seconds)
            down.start() if target == "redis" else down.restore()
            report.outages.append(f"{target} {seconds:g} s")
            print(f"  {target} back", flush=True)
            continue
        with textback.lock:
            if target == "worker":
                Textback.kill(textback.worker)
                report.worker_kills += 1
                time.sleep(rng.uniform(0.2, 1.5))
                textback.start_worker()
            else:
                Textback.kill(textback.web)
                report.web_kills += 1
                time.sleep(rng.uniform(0.5, 2.0))
                textback.start_web()
        print(f"  killed the {target} (kill #{report.worker_kills + report.web_kills})", flush=True)


def quiet(database_url: str, *, timeout: float) -> list:
    """Wait until no outbox row is pending or failed but due; the rows that stay so."""
    from core.store.tables import OutboxRow

    engine = create_engine(_driver(database_url))
    deadline = time.monotonic() + timeout
    try:
        while True:
            horizon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=10)
            with engine.connect() as connection:
                rows = connection.execute(select(OutboxRow.id, OutboxRow.kind, OutboxRow.status, OutboxRow.not_before,
                                                 OutboxRow.last_error).where(OutboxRow.status.notin_(("done", "dead")))).all()
            stuck = [r for r in rows if not (r.status == "pending" and r.not_before is not None
                                             and _aware(r.not_before) > horizon)]
            if not stuck or time.monotonic() > deadline:
                return stuck
            time.sleep(1.0)
    finally:
        engine.dispose()


def _e164(numbers: list[str | None]) -> str | None:
    """A Clio contact's first number as the caller's E.164 (Clio keeps what was written: national or not)."""
    digits = "".join(ch for ch in next((n for n in numbers if n), "") if ch.isdigit())
    return f"+1{digits[-10:]}" if len(digits) >= 10 else None


def _aware(moment: datetime.datetime) -> datetime.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def _driver(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def secrets_in_logs(workdir: Path, env: dict[str, str]) -> list[str]:
    """The names of the sandbox secrets that appear in the serve or worker log of the run."""
    logs = "".join((workdir / name).read_text(errors="replace") for name in ("serve.log", "worker.log")
                   if (workdir / name).exists())
    found = []
    for name, value in env.items():
        if name == "TWILIO_ACCOUNT_SID":  # an identifier, not a secret
            continue
        probe = json.loads(value)["private_key"][40:80] if name == "GOOGLE_CREDENTIALS_JSON" else value
        if probe and probe in logs:
            found.append(name)
    return found


def check(database_url: str, sandbox: Sandbox, callers: list[str], report: Report, stuck: list,
          workdir: Path | None = None, *, business_of: dict[str, str] | None = None) -> None:
    from core.store.tables import Booking, Lead, Message, OutboxRow

    state = sandbox.state()
    engine = create_engine(_driver(database_url))
    with engine.connect() as connection:
        confirmed = connection.execute(select(Booking.external_event_id, Booking.tenant_id)
                                       .join(Lead, Lead.id == Booking.lead_id)
                                       .where(Booking.status == "confirmed")).all()
        sent_ids = {str(i) for i in connection.scalars(select(Message.id).where(
            Message.direction == "outbound", Message.provider_sid.is_not(None)))}
        dead = connection.execute(select(OutboxRow.kind, OutboxRow.last_error).where(OutboxRow.status == "dead")).all()
        purposes = dict(connection.execute(
            select(Message.purpose, func.count()).where(Message.direction == "outbound",
                                                        Message.provider_sid.is_not(None))
            .group_by(Message.purpose)).all())
    engine.dispose()
    business_of = business_of or {}
    firm_one = [c for c in callers if business_of.get(c, BUSINESS) == BUSINESS]
    firm_two = [c for c in callers if business_of.get(c, BUSINESS) == BUSINESS2]
    texted = collections.Counter(t["to"] for t in state["texts"])
    by_id = collections.Counter(t["m"] for t in state["texts"])
    lost_texts = [c for c in callers if texted[c] == 0]
    duplicate_texts = sum(n - 1 for n in by_id.values() if n > 1)
    # Each firm's callers are contacts in its own CRM, once each, and nobody else is.
    hubspot = collections.Counter(state["contacts"])
    clio = collections.Counter(_e164(numbers) for numbers in state["clio_contacts"])
    lost_leads = [c for c in firm_one if hubspot[c] == 0] + [c for c in firm_two if clio[c] == 0]
    duplicate_leads = sum(n - 1 for n in hubspot.values() if n > 1) + sum(n - 1 for n in clio.values() if n > 1)
    strangers = [p for p in hubspot if p not in set(firm_one)] + [p for p in clio if p not in set(firm_two)]
    # Each confirmed booking is one live event in its firm's calendar and one meeting / calendar entry in its CRM.
    events = collections.Counter(state["events"] + state["graph_events"])
    booked_events = collections.Counter(event_id for event_id, _ in confirmed)
    lost_events = [e for e in booked_events if events[e] == 0]
    orphan_events = [e for e in events if e not in booked_events]
    duplicate_bookings = sum(n - 1 for n in booked_events.values() if n > 1) + sum(n - 1 for n in events.values() if n > 1)
    booked_one = sum(1 for _, tenant in confirmed if tenant == "chaos-law")
    off = (state["meetings"] - booked_one, state["clio_entries"] - (len(confirmed) - booked_one))
    meetings_over, meetings_under = sum(max(0, n) for n in off), sum(max(0, -n) for n in off)
    report.booked = len(confirmed)
    dead_without_reason = [d for d in dead if not d.last_error]
    faults = sum(sum(kinds.values()) for kinds in state["faults"].values())
    unrecorded = [m for m in by_id if m not in sent_ids]  # at Twilio, but not sent in our store
    report.counts = {
        "lost": len(lost_texts) + len(lost_leads) + len(lost_events) + meetings_under,
        "duplicated": duplicate_texts + duplicate_leads + duplicate_bookings + meetings_over + len(orphan_events),
        "stuck": len(stuck) + len(dead_without_reason), "dead": len(dead), "faults": faults,
        "texts": sum(texted.values()), "texts_by_purpose": {str(k): v for k, v in sorted(purposes.items(), key=str)},
        "contacts": sum(hubspot.values()) + sum(clio.values()),
        "events": sum(events.values()), "meetings": state["meetings"] + state["clio_entries"], "faults_by_vendor": state["faults"],
        "secrets_in_logs": secrets_in_logs(workdir, sandbox.env) if workdir else [],
    }
    if report.counts["secrets_in_logs"]:
        report.problems.append(f"secrets in the logs: {report.counts['secrets_in_logs']}")
    for label, items in (("callers never texted", lost_texts), ("texts at Twilio not recorded as sent", unrecorded),
                         ("callers with no contact", lost_leads), ("contacts of no caller", strangers),
                         ("confirmed bookings with no event", lost_events), ("events with no booking", orphan_events),
                         ("rows stuck", stuck), ("dead rows without a reason", dead_without_reason)):
        if items:
            report.problems.append(f"{len(items)} {label}: {list(items)[:5]}")
    if duplicate_texts or duplicate_leads or duplicate_bookings or meetings_over or meetings_under:
        report.problems.append(f"duplicates: {duplicate_texts} texts, {duplicate_leads} contacts, "
                               f"{duplicate_bookings} bookings; CRM meetings/entries - confirmed (HubSpot, Clio) = {off}")
    if dead:
        report.problems.append(f"{len(dead)} dead rows (visible, with reasons): "
                               f"{collections.Counter(d.kind for d in dead).most_common()}")


def run(*, calls: int, book_share: float, worker_kills: int, web_kills: int, fault_share: float, replay: int,
        store: str, seed: int, threads: int, rate: float, timeout: float, claim_seconds: float = 30,
        workdir: Path | None = None, redis_outage: float = 0.0, database_outage: float = 0.0) -> Report:
    rng = random.Random(seed)
    report = Report(calls=calls)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="textback-chaos-"))
    started = time.monotonic()
    sandbox = Sandbox(workdir)
    redis = Redis(workdir)
    textback = None
    try:
        with database(store, workdir) as database_url:
            outages = Outages(redis, redis_outage)
            served_url = database_url
            if database_outage and store == "postgres":  # textback reaches PostgreSQL through a proxy we can cut
                target = make_url(database_url)
                outages.database = OutageProxy(target.host or "127.0.0.1", target.port or 5432).start()
                outages.database_seconds = database_outage
                served_url = target.set(host="127.0.0.1", port=outages.database.port).render_as_string(
                    hide_password=False)
            elif database_outage:
                raise SystemExit("--database-outage needs --store postgres (SQLite is a file: it has no outage)")
            textback = Textback(sandbox, redis, served_url, workdir, threads=threads, claim_seconds=claim_seconds)
            textback.supervise(report)
            twilio = Twilio(textback.url, sandbox.env["TWILIO_ACCOUNT_SID"], sandbox.env["TWILIO_AUTH_TOKEN"], report)
            sandbox.faults(fault_share, seed)
            base = rng.randrange(10**6)
            callers = [f"+1555{(base + i) % 10**7:07d}" for i in range(calls)]
            twilio.business_of = {caller: (BUSINESS, BUSINESS2)[i % 2] for i, caller in enumerate(callers)}
            bookers = rng.sample(callers, round(calls * book_share))
            report.bookers = len(bookers)
            stop = threading.Event()
            # Kills spread over about the time the calls and conversations take.
            expected = calls / rate + (30 if bookers else 5)
            events = max(1, worker_kills + web_kills + bool(redis_outage) + bool(outages.database))
            spacing = (0.3 * expected / events, 1.7 * expected / events)
            killer = threading.Thread(target=chaos, args=(textback, random.Random(seed + 1)), kwargs={
                "worker_kills": worker_kills, "web_kills": web_kills, "stop": stop, "report": report,
                "spacing": spacing, "outages": outages}, daemon=True)
            killer.start()
            with ThreadPoolExecutor(8) as pool:
                for i, caller in enumerate(callers):
                    pool.submit(twilio.missed_call, caller)
                    time.sleep(1 / rate)
            print(f"  {calls} missed calls accepted ({report.webhook_retries} sent again)", flush=True)
            converse(twilio, sandbox, bookers, rng, timeout=timeout, report=report)
            if replay:
                again = list(twilio.sent) * replay
                rng.shuffle(again)
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(lambda pp: twilio.post(*pp, replay=True), again))
                report.replays = len(again)
                print(f"  {len(again)} webhooks replayed, out of order", flush=True)
            killer.join()  # every kill happens, even when the calls finished first
            sandbox.faults(0, seed)
            stuck = quiet(database_url, timeout=timeout)
            time.sleep(1.0)  # a duplicate in flight lands before counting
            report.seconds = time.monotonic() - started
            check(database_url, sandbox, callers, report, stuck, workdir, business_of=twilio.business_of)
            textback.stop()
            textback = None
            if outages.database is not None:
                outages.database.cut()
    finally:
        if textback is not None:
            textback.stop()
        redis.stop()
        sandbox.stop()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--book-share", type=float, default=0.05, help="share of callers who text through to a booking")
    parser.add_argument("--worker-kills", type=int, default=10)
    parser.add_argument("--web-kills", type=int, default=1)
    parser.add_argument("--fault-share", type=float, default=0.0, help="share of vendor requests that fail")
    parser.add_argument("--replay", type=int, default=0, metavar="N",
                        help="send every webhook N more times, later, all shuffled together (out of order)")
    parser.add_argument("--store", default="sqlite", choices=("sqlite", "postgres"))
    parser.add_argument("--rate", type=float, default=20, help="missed calls per second")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--timeout", type=float, default=600, help="seconds for the conversations, then the drain")
    parser.add_argument("--claim-seconds", type=float, default=30,
                        help="TEXTBACK_CLAIM_SECONDS: how soon a killed worker's claimed rows run again")
    parser.add_argument("--redis-outage", type=float, default=0, metavar="SECONDS",
                        help="stop the redis-server once, mid-run, for this long (it comes back empty)")
    parser.add_argument("--database-outage", type=float, default=0, metavar="SECONDS",
                        help="with --store postgres: cut textback off from PostgreSQL once, mid-run, for this long")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) and print it")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="textback-chaos-"))
    try:
        report = run(calls=args.calls, book_share=args.book_share, worker_kills=args.worker_kills,
                     web_kills=args.web_kills, fault_share=args.fault_share, replay=args.replay, store=args.store,
                     seed=args.seed, threads=args.threads, rate=args.rate, timeout=args.timeout,
                     claim_seconds=args.claim_seconds, workdir=workdir, redis_outage=args.redis_outage,
                     database_outage=args.database_outage)
    finally:
        if args.keep:
            print(f"logs in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({k: v for k, v in report.counts.items()}, default=str))
    print(f"webhooks sent again while refused: {report.webhook_retries}; replays: {report.replays}; "
          f"bookers: {report.bookers}; outages: {', '.join(report.outages) or 'none'}; "
          f"exited by themselves and restarted: {', '.join(report.exits) or 'none'}")
    for problem in report.problems:
        print("  " + problem)
    print(report.line)
    sys.exit(1 if report.unfinished or any(report.counts.get(k) for k in ("lost", "duplicated", "stuck",
                                                                         "secrets_in_logs")) else 0)


if __name__ == "__main__":
    main()
