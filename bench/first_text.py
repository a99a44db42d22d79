"""Speed to first text under load: signed dial-complete webhooks at fixed arrival rates → the SMS at Twilio.

Starts what production runs (`textback serve` + `textback worker` as their own processes, a private
redis-server, the sandbox Twilio in its own process), then for each store (SQLite, PostgreSQL) and each
rate sends signed `POST /twilio/voice/dial-complete` webhooks open loop — request i leaves at
t0 + i/rate whatever the answers — from distinct callers, and measures, per caller, the time from the
request's scheduled departure to the Messages-create arriving at the sandbox. The floor (a bare signed
POST to the sandbox's Messages endpoint, the one round trip nothing can avoid) is measured in the same run
and every figure is printed with its ratio to it. Run:

    .venv/bin/python -m bench.first_text                       # 25, 50, 100, 200/s × 30 s, both stores
    .venv/bin/python -m bench.first_text --rates 100 --seconds 10 --stores postgres

Results are appended to bench/RESULTS.md; the last line reads
`first_text: p99 at R/s = X ms (floor Y ms, ratio Z), M missing, D duplicates` for the highest rate.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml
from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BUSINESS, STAFF = "+15550001111", "+15550002222"
PG_ADMIN_URL = os.environ.get("TEXTBACK_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, its threads and its child processes (`serve --workers N`), from /proc."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(proc.name) == pid or int(fields[1]) == pid:  # fields[1]: the parent's pid
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wait_until(check, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


@dataclass
class Services:
    redis_url: str
    sink_url: str
    account_sid: str
    auth_token: str
    procs: list[subprocess.Popen]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if proc.poll() is None:
                proc.kill()


@contextlib.contextmanager
def shared_services(workdir: Path):
    """A private redis-server and the sandbox Twilio, for the whole run."""
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    sink = subprocess.Popen([sys.executable, "-m", "bench.twilio_sink"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        facts = json.loads(sink.stdout.readline())
        wait_until(lambda: subprocess.run(["redis-cli", "-p", str(redis_port), "ping"], capture_output=True,
                                          text=True).stdout.strip() == "PONG", timeout=10, what="redis-server")
        yield Services(redis_url=f"redis://127.0.0.1:{redis_port}/0", sink_url=facts["url"],
                       account_sid=facts["account_sid"], auth_token=facts["auth_token"], procs=[sink, redis])
    finally:
        for proc in (sink, redis):
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


@contextlib.contextmanager
def database(store: str, workdir: Path):
    if store == "sqlite":
        yield f"sqlite:///{workdir / f'bench-{secrets.token_hex(3)}.db'}"
        return
    from sqlalchemy import create_engine, text

    name = "textback_bench_" + secrets.token_hex(4)
    admin = create_engine(PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def textback(services: Services, database_url: str, workdir: Path, *, threads: int, web_processes: int = 1):
    """`textback serve` and `textback worker`, as two processes, on one tenant texting through the sandbox."""
    port = free_port()
    tenants = workdir / "tenants.yaml"
    tenants.write_text(yaml.safe_dump({"tenants": [{
        "id": "bench-law", "name": "Bench & Co Law", "vertical": "law", "timezone": "America/New_York",
        "phone_numbers": [BUSINESS], "forward_to": [STAFF],
        "missed_call": {"mode": "dial", "ring_seconds": 18, "cooldown_hours": 24},
        "hours": {day: "00:00-23:59" for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
        "connectors": {"sms": {"type": "twilio", "account_sid": services.account_sid,
                               "auth_token": "env:TWILIO_AUTH_TOKEN", "base_url": services.sink_url}},
    }]}, sort_keys=False))
    env = {**os.environ, "TEXTBACK_DATABASE_URL": database_url, "TEXTBACK_REDIS_URL": services.redis_url,
           "TEXTBACK_CONFIG": str(tenants), "TEXTBACK_PUBLIC_URL": f"http://127.0.0.1:{port}",
           "TWILIO_AUTH_TOKEN": services.auth_token}
    subprocess.run(["redis-cli", "-u", services.redis_url, "flushdb"], check=True, capture_output=True)
    subprocess.run([BIN / "textback", "db", "upgrade"], env=env, check=True, capture_output=True, cwd=workdir)
    logs = (workdir / "serve.log").open("ab"), (workdir / "worker.log").open("ab")
    web = subprocess.Popen([BIN / "textback", "serve", "--port", str(port), "--workers", str(web_processes)], env=env, cwd=workdir,
                           stdout=logs[0], stderr=subprocess.STDOUT)
    worker = subprocess.Popen([BIN / "textback", "worker", "--threads", str(threads)], env=env, cwd=workdir,
                              stdout=logs[1], stderr=subprocess.STDOUT)
    procs = [web, worker]
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200, timeout=30,
                   what="textback serve")
        time.sleep(1.0)  # the worker's consumers and relay start
        yield f"http://127.0.0.1:{port}", web.pid, worker.pid
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()


class Caller:
    """Distinct callers, never the business's or the staff's own number: the 1,111th caller used to be the
    business calling itself, which is never texted (the "1 missing" of the runs past 1,111 callers)."""

    counter = 0

    @classmethod
    def next(cls) -> str:
        while True:
            cls.counter += 1
            number = f"+1555{cls.counter:07d}"
            if number not in (BUSINESS, STAFF):
                return number


def signed_dial_complete(app_url: str, auth_token: str, account_sid: str, caller: str) -> tuple[bytes, dict]:
    url = app_url + "/twilio/voice/dial-complete"
    params = {"AccountSid": account_sid, "CallSid": "CA" + secrets.token_hex(16), "From": caller, "To": BUSINESS,
              "Direction": "inbound", "CallStatus": "in-progress", "DialCallStatus": "no-answer",
              "DialCallSid": "CA" + secrets.token_hex(16), "DialCallDuration": "0"}
    signature = RequestValidator(auth_token).compute_signature(url, params)
    return (httpx.QueryParams(params).__str__().encode(),
            {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"})


def signed_reply(app_url: str, auth_token: str, account_sid: str, caller: str, body: str) -> tuple[bytes, dict]:
    url = app_url + "/twilio/sms"
    sid = "SM" + secrets.token_hex(16)
    params = {"MessageSid": sid, "SmsMessageSid": sid, "SmsSid": sid, "AccountSid": account_sid, "From": caller,
              "To": BUSINESS, "Body": body, "NumMedia": "0", "NumSegments": "1", "SmsStatus": "received",
              "ApiVersion": "2010-04-01"}
    signature = RequestValidator(auth_token).compute_signature(url, params)
    return (httpx.QueryParams(params).__str__().encode(),
            {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"})


KEEP_ALIVE_REUSE = 3.0  # seconds: well inside uvicorn's 5 s keep-alive


class RawPoster:
    """HTTP/1.1 POSTs written as prepared bytes over a pool of kept-alive asyncio connections: the generator
    shares the two cores with what it measures, and httpx spent ~3 ms of CPU per request (28% of the box at
    100/s). A request never waits for a connection: when none is idle a new one is opened."""

    def __init__(self, url: str) -> None:
        parsed = httpx.URL(url)
        self.host, self.port, self.path = parsed.host, parsed.port, parsed.raw_path.decode()
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.opened: list[asyncio.StreamWriter] = []

    def prepare(self, body: bytes, headers: dict) -> bytes:
        lines = [f"POST {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def post(self, request: bytes) -> int:
        """The answer's status, or -1 when the request failed. A kept-alive connection the server closed
        while idle (uvicorn closes them after 5 s) is replaced, as HTTP clients do, before anything is sent."""
        while self.idle:
            reader, writer, idle_since = self.idle.pop()
            if time.monotonic() - idle_since < KEEP_ALIVE_REUSE and not reader.at_eof():
                break
            writer.close()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self.opened.append(writer)
        try:
            writer.write(request)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            writer.close()
            return -1
        self.idle.append((reader, writer, time.monotonic()))
        return status

    def close(self) -> None:
        for writer in self.opened:
            writer.close()


async def offer(url: str, requests: list[tuple[bytes, dict]], rate: float) -> tuple[list[int], list[tuple[int, int]], float]:
    """Send request i at t0 + i/rate (open loop). Returns scheduled departure ns, (status, response ns), lag."""
    poster = RawPoster(url)
    prepared = [poster.prepare(body, headers) for body, headers in requests]
    scheduled: list[int] = []
    answers: list[tuple[int, int]] = [(0, 0)] * len(requests)
    max_lag = 0.0

    async def fire(i: int) -> None:
        status = await poster.post(prepared[i])
        answers[i] = (status, time.monotonic_ns())

    tasks = []
    t0 = time.monotonic_ns() + 50_000_000
    for i in range(len(prepared)):
        due = t0 + int(i * 1e9 / rate)
        delay = (due - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        max_lag = max(max_lag, (time.monotonic_ns() - due) / 1e6)
        scheduled.append(due)
        tasks.append(asyncio.create_task(fire(i)))
    await asyncio.gather(*tasks)
    poster.close()
    return scheduled, answers, max_lag


def arrivals(services: Services) -> list[tuple[str, str, int]]:
    return [tuple(item) for item in httpx.get(services.sink_url + "/_bench/arrivals", timeout=30).json()]


def floor(services: Services, count: int = 300) -> dict:
    """A bare signed POST to the sandbox Messages endpoint: the round trip any first text needs."""
    url = f"{services.sink_url}/2010-04-01/Accounts/{services.account_sid}/Messages.json"
    times = []
    with httpx.Client(auth=(services.account_sid, services.auth_token)) as http:
        for i in range(count):
            started = time.perf_counter()
            http.post(url, data={"To": f"+1666{i:07d}", "From": BUSINESS, "Body": "floor"}).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    httpx.post(services.sink_url + "/_bench/reset")
    return {"p50": percentile(times, 50), "p99": percentile(times, 99)}


def run_rate(services: Services, app_url: str, pids: tuple[int, int], rate: float, seconds: float,
             drain: float, *, replies_from: list[str] | None = None, database_url: str | None = None) -> dict:
    """Missed calls from new callers at `rate`; or, with `replies_from`, a reply from each of those callers
    into their open conversation (the time measured is then webhook → the next question's SMS)."""
    httpx.post(services.sink_url + "/_bench/reset")
    if replies_from is None:
        callers = [Caller.next() for _ in range(int(rate * seconds))]
        requests = [signed_dial_complete(app_url, services.auth_token, services.account_sid, c) for c in callers]
        path = "/twilio/voice/dial-complete"
    else:
        callers = replies_from[:int(rate * seconds)]
        requests = [signed_reply(app_url, services.auth_token, services.account_sid, c, "its about my divorce")
                    for c in callers]
        path = "/twilio/sms"
    cpu_before = [cpu_seconds(pid) for pid in pids]
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    wall_start = time.monotonic()
    scheduled, answers, lag = asyncio.run(offer(app_url + path, requests, rate))
    sent_wall = time.monotonic() - wall_start
    self_after = resource.getrusage(resource.RUSAGE_SELF)
    deadline = time.monotonic() + drain
    wanted = set(callers)
    while True:
        seen = arrivals(services)
        if wanted <= {to for to, _, _ in seen} or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    time.sleep(0.5)  # let any duplicate land before counting
    seen = arrivals(services)
    wall = time.monotonic() - wall_start
    cpu_after = [cpu_seconds(pid) for pid in pids]

    first: dict[str, int] = {}
    copies = collections.Counter((to, body) for to, body, _ in seen)
    for to, _, at in seen:
        first[to] = min(at, first.get(to, at))
    latencies = [(first[c] - due) / 1e6 for c, due in zip(callers, scheduled) if c in first]
    responses = [(at - due) / 1e6 for (status, at), due in zip(answers, scheduled) if at]
    statuses = collections.Counter(status for status, _ in answers)
    accepted = statuses.get(200, 0)
    generator_cpu = (self_after.ru_utime + self_after.ru_stime - self_before.ru_utime - self_before.ru_stime)
    return {
        "kind": "reply" if replies_from is not None else "missed call", "callers": callers,
        "rate": rate, "sent": len(callers), "achieved": len(callers) / (sent_wall or 1),
        "accepted_per_s": accepted / (sent_wall or 1),
        "p50": percentile(latencies, 50), "p90": percentile(latencies, 90), "p99": percentile(latencies, 99),
        "max": max(latencies, default=float("nan")), "response_p99": percentile(responses, 99),
        "missing": len(wanted - set(first)), "missing_rows": missing_rows(database_url, sorted(wanted - set(first))),
        "duplicates": sum(n - 1 for n in copies.values() if n > 1),
        "statuses": dict(statuses), "generator_cpu_share": generator_cpu / (sent_wall * (os.cpu_count() or 1)),
        "web_cpu": (cpu_after[0] - cpu_before[0]) / wall, "worker_cpu": (cpu_after[1] - cpu_before[1]) / wall,
        # Per request, not per second: the share above counts the wait for missing texts as idle time, so a run
        # with one text missing (15 s of drain) showed a third less CPU than the same work without.
        "web_ms_per_request": (cpu_after[0] - cpu_before[0]) * 1000 / max(1, len(requests)),
        "worker_ms_per_request": (cpu_after[1] - cpu_before[1]) * 1000 / max(1, len(requests)),
        "generator_lag_ms": lag,
    }


def missing_rows(database_url: str | None, callers: list[str], most: int = 5) -> list[str]:
    """Where the texts of callers with none at the sandbox are: their messages' and outbox rows' states."""
    if not database_url or not callers:
        return []
    from sqlalchemy import create_engine, select

    from core.store.db import normalized_url
    from core.store.tables import Lead, Message, OutboxRow

    engine = create_engine(normalized_url(database_url))
    found = []
    try:
        with engine.connect() as connection:
            for caller in callers[:most]:
                lead_id = connection.scalar(select(Lead.id).where(Lead.phone == caller))
                texts = connection.execute(select(Message.id, Message.status, Message.provider_sid).where(
                    Message.lead_id == lead_id, Message.direction == "outbound")).all() if lead_id else []
                rows = [connection.execute(select(OutboxRow.kind, OutboxRow.status, OutboxRow.attempts,
                                                  OutboxRow.enqueued_at, OutboxRow.claimed_until,
                                                  OutboxRow.last_error)
                                           .where(OutboxRow.idempotency_key == f"sms:{text_id}")).first()
                        for text_id, _, _ in texts]
                found.append(f"{caller}: lead {lead_id}, texts {[tuple(t) for t in texts]}, jobs "
                             f"{[tuple(r) if r else None for r in rows]}")
    finally:
        engine.dispose()
    return found


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} vCPU ({model}), Python {platform.python_version()}, {platform.system()} {platform.release()}"


def record(results: dict[str, list[dict]], floor_ms: dict, command: str, note: str) -> str:
    lines = [f"\n### first_text run of {datetime.date.today().isoformat()}{' — ' + note if note else ''}\n",
             f"Machine: {machine()}. Command: `{command}`. Floor (bare POST to the sandbox Messages endpoint): "
             f"p50 {floor_ms['p50']:.1f} ms, p99 {floor_ms['p99']:.1f} ms.\n",
             "| store | webhook | rate/s | achieved/s | p50 | p90 | p99 (× floor p50) | max | webhook resp p99 | "
             "missing | dup | non-200 | web CPU (ms/request) | worker CPU (ms/request) | generator CPU |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for store, runs in results.items():
        for r in runs:
            non_200 = sum(n for status, n in r["statuses"].items() if status != 200)
            lines.append(
                f"| {store} | {r['kind']} | {r['rate']:g} | {r['achieved']:.0f} | {r['p50']:.0f} ms | {r['p90']:.0f} ms | "
                f"{r['p99']:.0f} ms ({r['p99'] / floor_ms['p50']:.1f}×) | {r['max']:.0f} ms | "
                f"{r['response_p99']:.0f} ms | {r['missing']} | {r['duplicates']} | {non_200} | "
                f"{r['web_cpu']:.0%} ({r['web_ms_per_request']:.1f}) | {r['worker_cpu']:.0%} "
                f"({r['worker_ms_per_request']:.1f}) | {r['generator_cpu_share']:.0%} |")
    store, runs = list(results.items())[-1]
    top = max((r for r in runs if r["kind"] == "missed call"), key=lambda r: r["rate"])
    last = (f"first_text: p99 at {top['rate']:g}/s = {top['p99']:.0f} ms (floor {floor_ms['p50']:.1f} ms, ratio "
            f"{top['p99'] / floor_ms['p50']:.1f}), {top['missing']} missing, {top['duplicates']} duplicates")
    lines += ["", f"`{last}` ({store})", ""]
    with (ROOT / "bench" / "RESULTS.md").open("a") as results_file:
        results_file.write("\n".join(lines))
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="25,50,100,200", help="missed calls per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=30, help="length of each rate's run")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--threads", type=int, default=8, help="worker threads (textback worker --threads)")
    parser.add_argument("--web-processes", type=int, default=1, help="textback serve --workers")
    parser.add_argument("--drain", type=float, default=15, help="seconds to wait for the last texts")
    parser.add_argument("--reply-rates", default="50,100", help="inbound replies per second (POST /twilio/sms)")
    parser.add_argument("--note", default="", help="a few words for the results heading")
    args = parser.parse_args()
    rates = [float(rate) for rate in args.rates.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="textback-bench-"))
    results: dict[str, list[dict]] = {}
    try:
        with shared_services(workdir) as services:
            floor_ms = floor(services)
            print(f"floor: p50 {floor_ms['p50']:.1f} ms, p99 {floor_ms['p99']:.1f} ms", flush=True)
            for store in args.stores.split(","):
                with database(store, workdir) as url, textback(services, url, workdir, threads=args.threads,
                                                                    web_processes=args.web_processes) as (
                        app_url, web_pid, worker_pid):
                    run_rate(services, app_url, (web_pid, worker_pid), 5, 2, args.drain)  # warm-up, not recorded
                    texted: list[str] = []
                    plan = [(rate, None) for rate in rates] + [
                        (float(rate), texted) for rate in args.reply_rates.split(",") if rate]
                    for rate, replies_from in plan:
                        result = run_rate(services, app_url, (web_pid, worker_pid), rate, args.seconds, args.drain,
                                          database_url=url,
                                          replies_from=None if replies_from is None else list(replies_from))
                        if replies_from is None:
                            texted.extend(result["callers"])
                        else:
                            used = set(result["callers"])
                            texted[:] = [c for c in texted if c not in used]
                        results.setdefault(store, []).append(result)
                        print(f"{store} {result['kind']} {rate:g}/s: accepted {result['accepted_per_s']:.0f}/s, p50 {result['p50']:.0f} ms p99 {result['p99']:.0f} ms "
                              f"(×{result['p99'] / floor_ms['p50']:.1f}) resp p99 {result['response_p99']:.0f} ms, "
                              f"{result['missing']} missing, {result['duplicates']} dup, {result['statuses']}, "
                              f"web {result['web_cpu']:.0%} ({result['web_ms_per_request']:.1f} ms/req) "
                              f"worker {result['worker_cpu']:.0%} ({result['worker_ms_per_request']:.1f} ms/req) "
                              f"gen {result['generator_cpu_share']:.0%} lag {result['generator_lag_ms']:.0f} ms",
                              flush=True)
                        for line in result["missing_rows"]:
                            print(f"  missing {line}", flush=True)
        command = "python -m bench.first_text " + " ".join(sys.argv[1:])
        print(record(results, floor_ms, command.strip(), args.note))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
