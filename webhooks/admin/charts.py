"""The dashboard's charts as inline SVG drawn on the server: no script, nothing fetched, readable by a
screen reader (each chart has a title and the same numbers in a table beside it)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

from markupsafe import Markup, escape

from core.outcomes import CallOutcome
from core.report import Funnel

STEPS = ("missed", "texted", "replied", "qualified", "booked")


def funnel_svg(funnel: Funnel) -> Markup:
    values = funnel.model_dump()
    top = max(values["missed"], 1)
    width, bar, gap = 320, 26, 8
    rows = []
    for n, step in enumerate(STEPS):
        y = n * (bar + gap)
        length = round(values[step] / top * (width - 120))
        rows.append(f'<text x="0" y="{y + 18}" class="label">{step}</text>'
                    f'<rect x="80" y="{y}" width="{max(length, 1)}" height="{bar}" class="bar bar-{step}"/>'
                    f'<text x="{86 + length}" y="{y + 18}" class="value">{values[step]}</text>')
    height = len(STEPS) * (bar + gap)
    summary = ", ".join(f"{step} {values[step]}" for step in STEPS)
    return Markup(f'<svg role="img" viewBox="0 0 {width} {height}" class="chart" aria-labelledby="funnel-title">'
                  f'<title id="funnel-title">Funnel: {escape(summary)}</title>{"".join(rows)}</svg>')


def daily(outcomes: Iterable[CallOutcome], *, since: date, days: int) -> list[dict]:
    counts = {since + timedelta(days=n): {"day": since + timedelta(days=n), "missed": 0, "booked": 0}
              for n in range(days)}
    for outcome in outcomes:
        entry = counts.get(outcome.called_at.date())
        if entry is not None:
            entry["missed"] += 1
            entry["booked"] += outcome.booked
    return list(counts.values())


def trend_svg(trend: list[dict]) -> Markup:
    top = max([d["missed"] for d in trend] + [1])
    step = max(300 // max(len(trend), 1), 4)
    height = 100
    bars = []
    for n, day in enumerate(trend):
        x = n * step
        missed = round(day["missed"] / top * height)
        booked = round(day["booked"] / top * height)
        bars.append(f'<rect x="{x}" y="{height - missed}" width="{step - 1}" height="{missed}" class="bar bar-missed">'
                    f'<title>{day["day"]}: {day["missed"]} missed, {day["booked"]} booked</title></rect>'
                    f'<rect x="{x}" y="{height - booked}" width="{step - 1}" height="{booked}" class="bar bar-booked"/>')
    total = sum(d["missed"] for d in trend), sum(d["booked"] for d in trend)
    return Markup(f'<svg role="img" viewBox="0 0 {len(trend) * step} {height}" class="chart" '
                  f'aria-labelledby="trend-title"><title id="trend-title">Last {len(trend)} days: {total[0]} missed, '
                  f'{total[1]} booked</title>{"".join(bars)}</svg>')
