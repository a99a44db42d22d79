"""`textback report`: the funnel and outcomes of missed calls, as a table, CSV or JSON."""

from __future__ import annotations

import csv
import enum
import json
import sys
from datetime import datetime, time, timezone
from typing import Optional

import typer

from core.config import Settings


class Format(str, enum.Enum):
    table = "table"
    csv = "csv"
    json = "json"


def register(app: typer.Typer) -> None:
    app.command("report")(report)


def parse_moment(value: str | None, *, option: str) -> datetime | None:
    """ISO date or datetime; a date is midnight UTC, a datetime without an offset is UTC."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date; write 2031-03-01 or 2031-03-01T09:00+00:00",
                                 param_hint=option) from None
    if len(value) == 10:
        moment = datetime.combine(moment.date(), time(0))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def report(
    tenant: list[str] = typer.Option([], "--tenant", "-t", help="only this tenant (repeatable; default: all)"),
    since: Optional[str] = typer.Option(None, help="calls from this date or time on (ISO, UTC unless an offset "
                                        "is given)"),
    until: Optional[str] = typer.Option(None, help="calls before this date or time (exclusive)"),
    output: Format = typer.Option(Format.table, "--format", "-f", help="table | csv | json"),
    calls: bool = typer.Option(False, "--calls", help="one row per missed call (its outcome) instead of the "
                               "funnel; with --format csv or json"),
    schema: bool = typer.Option(False, "--schema", help="print the JSON Schema of --format json and exit"),
) -> None:
    """The funnel missed → texted → replied → qualified → booked, speed to lead, skips, opt-outs, failures."""
    from core.outcomes import missed_call_outcomes
    from core.report import Report, build_report, flat_rows
    from core.store.db import Database
    from core.store.tables import Call
    from sqlalchemy import select

    if schema:
        typer.echo(json.dumps(Report.model_json_schema(by_alias=True), indent=2))
        return
    start, end = parse_moment(since, option="--since"), parse_moment(until, option="--until")
    if start and end and end <= start:
        raise typer.BadParameter("--until must be after --since", param_hint="--until")
    settings = Settings()
    db = Database(settings.database_url)
    try:
        with db.transaction() as session:
            if tenant:
                known = set(session.scalars(select(Call.tenant_id).distinct()))
                unknown = [t for t in tenant if t not in known]
                if unknown:
                    typer.echo(f"no calls were ever recorded for {', '.join(unknown)} in {settings.database_url}; "
                               f"tenants with calls: {', '.join(sorted(known)) or 'none'}", err=True)
                    raise typer.Exit(2)
            outcomes = missed_call_outcomes(session, tenant_ids=tenant or None, since=start, until=end)
    finally:
        db.dispose()
    if calls:
        _print_calls(outcomes, output)
        return
    result = build_report(outcomes, tenant_ids=tenant, since=start, until=end)
    if output is Format.json:
        typer.echo(result.as_json())
    elif output is Format.csv:
        rows = flat_rows(result)
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    else:
        _print_table(result)


def _print_table(result) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    window = f"{result.since or 'the beginning'} to {result.until or 'now'}"
    funnel = Table(title=f"Missed calls, {window}")
    for column in ("tenant", "missed", "texted", "replied", "qualified", "booked", "booked/missed",
                   "first text p50/p90/p99 s", "first reply p50 s", "opt-outs"):
        funnel.add_column(column, justify="left" if column == "tenant" else "right")
    for name, sec in [*result.tenants.items(), ("all tenants", result.total)]:
        f, speed = sec.funnel, sec.seconds_to_first_text
        funnel.add_row(name, str(f.missed), _with_rate(f.texted, sec.rates.texted),
                       _with_rate(f.replied, sec.rates.replied), _with_rate(f.qualified, sec.rates.qualified),
                       _with_rate(f.booked, sec.rates.booked), _percent(sec.rates.booked_of_missed),
                       "/".join(_num(v) for v in (speed.p50, speed.p90, speed.p99)),
                       _num(sec.seconds_to_first_reply.p50), _with_rate(sec.opt_outs.count, sec.opt_outs.rate),
                       end_section=name == list(result.tenants)[-1] if result.tenants else False)
    console.print(funnel)
    details = Table(title="Why, where and how (all tenants)", show_header=True)
    details.add_column("what")
    details.add_column("counts")
    total = result.total
    details.add_row("skip reasons", _pairs(total.skip_reasons))
    details.add_row("delivery failures by code", _pairs(total.delivery_failures))
    details.add_row("reply rate by first template",
                    _pairs({k: f"{v.replied}/{v.texted} ({_percent(v.rate)})"
                            for k, v in total.reply_rate_by_template.items()}))
    details.add_row("bookings by calendar", _pairs(total.bookings_by_calendar))
    details.add_row("handed to staff", str(total.handed_off))
    console.print(details)


def _print_calls(outcomes, output: Format) -> None:
    from dataclasses import asdict

    rows = []
    for outcome in outcomes:
        row = asdict(outcome)
        row.update(texted=outcome.texted, replied=outcome.replied, qualified=outcome.qualified,
                   booked=outcome.booked, seconds_to_first_text=outcome.seconds_to_first_text,
                   sync_status=outcome.sync_status)
        rows.append(row)
    if output is Format.json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    columns = ["tenant_id", "call_id", "source", "called_at", "skip_reason", "conversation_id", "outcome",
               "first_text_at", "first_reply_at", "qualified_at", "booked_at", "handed_off_at", "booking_status",
               "calendar_id", "event_link", "followups_sent", "opted_out_at", "sync_status"]
    if output is Format.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} missed call(s)")
    shown = ["tenant_id", "call_id", "source", "called_at", "skip_reason", "outcome", "booking_status", "sync_status"]
    for column in shown:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) if row[c] is not None else "" for c in shown))
    Console().print(table)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.0f}%"


def _with_rate(count: int, rate: float | None) -> str:
    return f"{count} ({_percent(rate)})" if rate is not None else str(count)


def _pairs(values: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in values.items()) or "none"
