"""/metrics: scraped before and after a booked lead (with one HubSpot 429 on the way), the counters move."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.webhooks.test_booking_flow import offered_times, say


def scrape(textback) -> dict[tuple[str, tuple], float]:
    response = httpx.get(f"{textback.url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples, name: str, **labels) -> float:
    return sum(value for (n, got), value in samples.items()
               if n == name and all(dict(got).get(k) == v for k, v in labels.items()))


def test_a_booked_lead_moves_the_counters_and_the_outbox_depth(phone, textback, stack):
    # Given a scrape before anything happened, and HubSpot answering its first contact search with a 429
    before = scrape(textback)
    stack.hubspot.faults.fail_next("/crm/v3/objects/contacts/search", status=429, retry_after=1)
    # When a caller is missed, answers every question and books the first time offered
    offered_times(phone, textback, stack)
    say(phone, textback, "1")
    after = scrape(textback)

    # Then the missed call, the texts, speed to lead and the webhook timings are counted
    def moved(name: str, **labels) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("textback_missed_calls_total", tenant="smith-law", texted="yes") == 1
    assert moved("textback_texts_sent_total", tenant="smith-law", purpose="first") == 1
    assert moved("textback_texts_sent_total", tenant="smith-law") >= 5  # first, questions, offer, confirmation
    assert moved("textback_time_to_first_text_seconds_count", tenant="smith-law") == 1
    assert moved("textback_http_request_seconds_count", route="/twilio/voice/dial-complete", status="200") == 1
    assert moved("textback_http_request_seconds_count", route="/twilio/sms") >= 5
    # And the 429 shows as a rate limit, a connector error and a retry
    assert moved("textback_rate_limited_total", tenant="smith-law", role="crm") == 1
    assert moved("textback_connector_errors_total", role="crm", error="RateLimited") == 1
    assert moved("textback_job_retries_total", error="RateLimited") == 1
    # And the outbox depth is read from the database: everything done, nothing dead
    assert total(after, "textback_outbox_rows", status="done") > 0
    assert total(after, "textback_outbox_rows", status="dead") == 0
    # And no label carries a phone number
    assert not any("+1555" in value for (_, labels) in after for _, value in labels)
