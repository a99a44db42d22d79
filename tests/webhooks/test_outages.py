"""Outages delay, never drop, never 500: a job queue that is down, a database that is unreachable."""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import timedelta

import httpx
import pytest
import redis
import yaml

from connectors.registry import validate_connector
from core.config import Settings, load_tenants
from core.store.db import Database
from sandbox.phone import SandboxPhone
from sandbox.server import ServedApp, free_port
from sync import actors
from sync.broker import make_broker, ping_for
from sync.runtime import Runtime
from sync.worker import Worker
from tests.conftest import IN_CI
from webhooks.api_routes import hash_key
from webhooks.app import create_app

from .conftest import BUSINESS, CALLER, texts_to


class PrivateRedis:
    """A redis-server of this test's own, on a free port, that the test stops and starts."""

    def __init__(self, tmp_path) -> None:
        self.port, self.dir = free_port("127.0.0.1"), tmp_path
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def private_redis(tmp_path):
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is not installed; CI needs it")
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def test_with_the_job_queue_down_the_webhook_answers_and_the_text_goes_out_when_it_is_back(
        private_redis, sqlite_db, tenants_path, stack, caplog):
    # Given: serve and a worker on a Redis of their own
    broker = make_broker(private_redis.url)
    actors.bind(broker)
    runtime = Runtime(settings=Settings(database_url=sqlite_db.url, redis_url=private_redis.url,
                                        public_url="http://placeholder"),
                      db=sqlite_db, tenants=load_tenants(tenants_path, validate_connector=validate_connector))
    runtime.dispatcher = actors.DramatiqDispatcher(runtime)
    port = free_port("127.0.0.1")
    runtime.settings.public_url = f"http://127.0.0.1:{port}"
    server = ServedApp(create_app(runtime, broker_ping=ping_for(broker)), port=port).start()
    worker = Worker(runtime, broker, threads=2, relay_interval=0.2, relay_grace=timedelta(seconds=0.5)).start()
    try:
        with httpx.Client(timeout=10) as http:
            phone = SandboxPhone(app_url=server.url, auth_token=stack.auth_token, account_sid=stack.account_sid,
                                 twilio=stack.twilio, http=http)
            # When: Redis stops, and a call is missed
            private_redis.stop()
            phone.ring(call_sid="CA" + "5" * 32, caller=CALLER, to=BUSINESS)
            answer = phone.dial_complete(call_sid="CA" + "5" * 32, caller=CALLER, to=BUSINESS,
                                         dial_status="no-answer")
            ready_while_down = http.get(server.url + "/readyz")
            # Then: Twilio still gets its TwiML, readiness says what is down, and the warning is said once
            assert answer.status_code == 200 and "<Say>" in answer.text
            assert ready_while_down.status_code == 503 and ready_while_down.json()["broker"] != "ok"
            assert [r for r in caplog.records if "job queue is unreachable" in r.getMessage()] != []
            assert texts_to(stack) == []
            # When: Redis is back
            private_redis.start()
            # Then: the relay hands the committed row to the queue and the caller gets the one text
            _wait_for(lambda: len(texts_to(stack)) == 1)
            assert http.get(server.url + "/readyz").status_code == 200
        time.sleep(0.5)
        assert len(texts_to(stack)) == 1
    finally:
        worker.stop()
        server.stop()
        runtime.close()
        broker.close()


def test_with_the_database_unreachable_webhooks_answer_503_so_twilio_retries(tenants_path, stack):
    # Given: a database server that is not there, and a tenant with an API key
    raw = yaml.safe_load(tenants_path.read_text())
    raw["tenants"][0]["api_key_sha256"] = hash_key("tbk_outage")
    tenants_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    db = Database(f"postgresql://postgres@127.0.0.1:{free_port('127.0.0.1')}/textback")
    runtime = Runtime(settings=Settings(database_url=db.url, redis_url="stub://", public_url="http://placeholder"),
                      db=db, tenants=load_tenants(tenants_path, validate_connector=validate_connector))
    port = free_port("127.0.0.1")
    runtime.settings.public_url = f"http://127.0.0.1:{port}"
    server = ServedApp(create_app(runtime), port=port).start()
    try:
        with httpx.Client(timeout=10) as http:
            phone = SandboxPhone(app_url=server.url, auth_token=stack.auth_token, account_sid=stack.account_sid,
                                 twilio=stack.twilio, http=http)
            # When
            answers = [
                phone.dial_complete(call_sid="CA" + "6" * 32, caller=CALLER, to=BUSINESS, dial_status="no-answer"),
                phone.text(caller=CALLER, to=BUSINESS, body="hello?"),
                http.post(server.url + "/api/v1/missed-calls", headers={"Authorization": "Bearer tbk_outage"},
                          json={"caller": CALLER, "called": BUSINESS, "occurred_at": "2026-11-27T14:03:00-05:00",
                                "idempotency_key": "k1"}),
            ]
            health, ready = http.get(server.url + "/healthz"), http.get(server.url + "/readyz")
        # Then: 503 with Retry-After, never 200 with nothing stored; alive but not ready
        assert [a.status_code for a in answers] == [503, 503, 503]
        assert all(a.headers.get("Retry-After") for a in answers)
        assert health.status_code == 200 and ready.status_code == 503
    finally:
        server.stop()
        runtime.close()
        db.dispose()
