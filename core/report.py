"""The report: the funnel and what drives it, per tenant and across tenants, from the call outcomes.

    missed → texted → replied → qualified → booked

Each step counts calls (a call counts in a step only if it reached every step before it is
not assumed: "booked" counts only calls whose calendar event exists). Rates are step over the
step before (`texted` is texted/missed, `replied` replied/texted, ...), plus `booked_of_missed`.
Percentiles are nearest-rank over seconds (p50 of [10, 20, 30, 40] is 20): exact, so a seeded
data set has known answers. The JSON shape is the pydantic `Report` below; its JSON Schema
is docs/report.schema.json (`textback report --schema`).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, Field

from core.outcomes import CallOutcome

SCHEMA_ID = "textback.report/1"


class Funnel(BaseModel):
    missed: int = 0
    texted: int = 0
    replied: int = 0
    qualified: int = 0
    booked: int = 0


class FunnelRates(BaseModel):
    """Each step over the step before; None when the step before is empty."""

    texted: float | None = None
    replied: float | None = None
    qualified: float | None = None
    booked: float | None = None
    booked_of_missed: float | None = None


class Percentiles(BaseModel):
    count: int = 0
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None


class TemplateReplies(BaseModel):
    texted: int = 0
    replied: int = 0
    rate: float | None = None


class OptOuts(BaseModel):
    count: int = 0
    rate: float | None = Field(None, description="opted out after the call, over texted")


class Section(BaseModel):
    funnel: Funnel
    rates: FunnelRates
    seconds_to_first_text: Percentiles = Field(description="call → first text sent (speed to lead)")
    seconds_to_first_reply: Percentiles = Field(description="first text sent → the caller's first reply")
    skip_reasons: dict[str, int] = Field(description="missed calls not texted, by calls.skip_reason")
    opt_outs: OptOuts
    delivery_failures: dict[str, int] = Field(description="failed or undelivered texts by Twilio error code "
                                                          "('unknown' when none was given)")
    reply_rate_by_template: dict[str, TemplateReplies] = Field(description="by the first text's template")
    bookings_by_calendar: dict[str, int] = Field(description="booked calls by staff calendar id")
    handed_off: int = 0


class Report(BaseModel):
    schema_id: str = Field(SCHEMA_ID, alias="schema")
    since: datetime | None = None
    until: datetime | None = None
    funnel: Funnel = Field(description="the total funnel, the same as total.funnel")
    total: Section
    tenants: dict[str, Section] = Field(description="one section per tenant id, with its own funnel")

    model_config = {"populate_by_name": True}

    def as_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)


def build_report(outcomes: Iterable[CallOutcome], *, tenant_ids: Iterable[str] = (), since: datetime | None = None,
                 until: datetime | None = None) -> Report:
    """`tenant_ids` lists tenants to show even when they had no missed call in the window."""
    by_tenant: dict[str, list[CallOutcome]] = defaultdict(list)
    for tenant_id in tenant_ids:
        by_tenant[tenant_id]
    everything: list[CallOutcome] = []
    for outcome in outcomes:
        by_tenant[outcome.tenant_id].append(outcome)
        everything.append(outcome)
    total = section(everything)
    return Report(since=since, until=until, funnel=total.funnel, total=total,
                  tenants={tenant: section(rows) for tenant, rows in sorted(by_tenant.items())})


def section(outcomes: list[CallOutcome]) -> Section:
    funnel = Funnel(missed=len(outcomes), texted=sum(o.texted for o in outcomes),
                    replied=sum(o.texted and o.replied for o in outcomes),
                    qualified=sum(o.texted and o.qualified for o in outcomes),
                    booked=sum(o.texted and o.booked for o in outcomes))
    templates: dict[str, TemplateReplies] = {}
    for outcome in outcomes:
        if outcome.texted:
            entry = templates.setdefault(outcome.first_template or "unknown", TemplateReplies())
            entry.texted += 1
            entry.replied += outcome.replied
    for entry in templates.values():
        entry.rate = _rate(entry.replied, entry.texted)
    opted = sum(o.texted and o.opted_out_at is not None for o in outcomes)
    failures = Counter(str(f.error_code) if f.error_code is not None else "unknown"
                       for o in outcomes for f in o.delivery_failures)
    return Section(
        funnel=funnel,
        rates=FunnelRates(texted=_rate(funnel.texted, funnel.missed), replied=_rate(funnel.replied, funnel.texted),
                          qualified=_rate(funnel.qualified, funnel.replied),
                          booked=_rate(funnel.booked, funnel.qualified),
                          booked_of_missed=_rate(funnel.booked, funnel.missed)),
        seconds_to_first_text=percentiles([o.seconds_to_first_text for o in outcomes]),
        seconds_to_first_reply=percentiles([o.seconds_to_first_reply for o in outcomes]),
        skip_reasons=dict(sorted(Counter(o.skip_reason for o in outcomes if o.skip_reason).items())),
        opt_outs=OptOuts(count=opted, rate=_rate(opted, funnel.texted)),
        delivery_failures=dict(sorted(failures.items())),
        reply_rate_by_template=dict(sorted(templates.items())),
        bookings_by_calendar=dict(sorted(Counter(o.calendar_id for o in outcomes if o.booked and o.texted).items())),
        handed_off=sum(o.handed_off_at is not None for o in outcomes),
    )


def percentiles(values: Iterable[float | None]) -> Percentiles:
    ordered = sorted(v for v in values if v is not None)
    if not ordered:
        return Percentiles()
    return Percentiles(count=len(ordered), p50=nearest_rank(ordered, 50), p90=nearest_rank(ordered, 90),
                       p99=nearest_rank(ordered, 99))


def nearest_rank(ordered: list[float], percent: float) -> float:
    """The smallest value with at least `percent`% of the values at or below it."""
    return ordered[max(math.ceil(percent / 100 * len(ordered)), 1) - 1]


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def flat_rows(report: Report) -> list[dict[str, object]]:
    """One row per tenant and one for the total, for csv and the table (nested counts flattened)."""
    rows = []
    for name, sec in [*report.tenants.items(), ("(all tenants)", report.total)]:
        rows.append({
            "tenant": name, **sec.funnel.model_dump(),
            "booked_of_missed": sec.rates.booked_of_missed,
            "first_text_p50_s": sec.seconds_to_first_text.p50, "first_text_p90_s": sec.seconds_to_first_text.p90,
            "first_text_p99_s": sec.seconds_to_first_text.p99,
            "first_reply_p50_s": sec.seconds_to_first_reply.p50,
            "opt_outs": sec.opt_outs.count, "opt_out_rate": sec.opt_outs.rate,
            "handed_off": sec.handed_off,
            "skip_reasons": _pairs(sec.skip_reasons), "delivery_failures": _pairs(sec.delivery_failures),
            "reply_rate_by_template": _pairs({k: v.rate for k, v in sec.reply_rate_by_template.items()}),
            "bookings_by_calendar": _pairs(sec.bookings_by_calendar),
        })
    return rows


def _pairs(values: dict[str, object]) -> str:
    return "; ".join(f"{key}={value}" for key, value in values.items())
