"""Prometheus metrics: what the web app and the job runner count, and the outbox depth read at scrape time.

Counters and histograms live in this process (prometheus-client's default registry): the web
process counts webhooks and missed calls, the process that runs jobs counts texts, retries, 429s,
dead rows and connector errors. On one box (`sync/embedded.py`) that is one process and
`/metrics` shows all of them; a separate `textback worker` does not serve its counters yet.
The outbox depth is read from the database at each scrape, so every process shows the same one.

Labels stay bounded: tenant ids, job kinds, connector roles and error classes, never a phone
number, a call sid or a message body.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import func, select

from core.store.tables import OutboxRow

WEBHOOK_SECONDS = Histogram("textback_http_request_seconds", "Time to answer an HTTP request (webhooks, API, admin)",
                            ["route", "method", "status"],
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
MISSED_CALLS = Counter("textback_missed_calls", "Missed calls recorded (a retried webhook counts once)",
                       ["tenant", "texted"])
TEXTS_SENT = Counter("textback_texts_sent", "Texts the SMS provider accepted", ["tenant", "purpose"])
FIRST_TEXT_SECONDS = Histogram("textback_time_to_first_text_seconds", "From the missed call to its first text sent",
                               ["tenant"], buckets=(1, 2, 5, 10, 15, 30, 60, 120, 300, 900, 3600))
JOB_RETRIES = Counter("textback_job_retries", "Job runs that failed and will be retried", ["kind", "error"])
RATE_LIMITED = Counter("textback_rate_limited", "Vendor answers of 429 (RateLimited)", ["tenant", "role"])
DEAD_ROWS = Counter("textback_outbox_dead", "Outbox rows that became dead letters", ["kind"])
CONNECTOR_ERRORS = Counter("textback_connector_errors", "Vendor failures by connector role and error class",
                           ["tenant", "role", "error"])
OUTBOX_ROWS = Gauge("textback_outbox_rows", "Outbox rows by status (read from the database at scrape time)",
                    ["status"])
OUTBOX_STATUSES = ("pending", "done", "failed", "dead", "parked")


def scrape(db) -> tuple[bytes, str]:
    """The exposition text, with the outbox depth read now."""
    with db.transaction() as session:
        counts = dict(session.execute(select(OutboxRow.status, func.count()).group_by(OutboxRow.status)).all())
    for status in OUTBOX_STATUSES:
        OUTBOX_ROWS.labels(status).set(counts.get(status, 0))
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def missed_call(*, tenant: str, outcome) -> None:
    """Count a `core.textback.MissedCallOutcome` once: a retried webhook (duplicate) is not a new miss."""
    if outcome.missed and not outcome.duplicate:
        MISSED_CALLS.labels(tenant, "yes" if outcome.texted else "no").inc()


def connector_failed(*, tenant: str, role: str, exc: Exception) -> None:
    from connectors.base import ConnectorError, RateLimited

    if isinstance(exc, RateLimited):
        RATE_LIMITED.labels(tenant, role).inc()
    if isinstance(exc, ConnectorError):
        CONNECTOR_ERRORS.labels(tenant, role, type(exc).__name__).inc()
