"""`textback import TENANT FILE`: past missed calls from a phone log into the CRM, without texting anyone.

Three passes, each safe to interrupt and run again:

    check    every line of the file (core/importing.py); one bad line and nothing is written
    record   the calls in chunks, one transaction each; a call recorded before is found by its sid
    push     this tenant's import jobs still pending, run here one after another at the CRM's quota
             (the connection's shared budget: this process waits for a slot, no worker thread does);
             a job that fails is left to the workers' retries (`textback outbox list`)

With --text-back each call goes through the missed-call policy instead (opt-outs, cooldown, quiet
hours in the caller's zone; an imported call never counts as one just made), and the texts and
their CRM pushes are queued for `textback worker`.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                           TimeRemainingColumn)
from rich.text import Text
from sqlalchemy import select, update

CHUNK = 200
IMPORT_KINDS = ("crm_sync_lead", "crm_log_conversation")


def register(app: typer.Typer) -> None:
    app.command("import")(import_calls)


def import_calls(
    tenant_id: str = typer.Argument(..., help="the tenant the calls were made to"),
    file: Path = typer.Argument(..., help="CSV: caller, time[, name, notes]; Twilio's call-log export as it is",
                                exists=True, dir_okay=False, readable=True),
    text_back: bool = typer.Option(False, "--text-back", help="also text the callers (policy and quiet hours "
                                                               "apply); without it nobody is texted"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
) -> None:
    """Import past missed calls and push the callers to the CRM as leads."""
    from core.config import Settings
    from core.importing import read_past_calls
    from webhooks.cli_serve import require_schema, runtime_for

    console = Console(stderr=True)
    runtime = runtime_for(Settings())
    require_schema(runtime)
    tenant = runtime.tenants.get(tenant_id)
    if tenant is None:
        typer.echo(f"unknown tenant {tenant_id!r}; configured: {', '.join(t.id for t in runtime.tenants)}", err=True)
        raise typer.Exit(2)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        typer.echo(f"{file}: not UTF-8 text ({exc}); export the log as CSV in UTF-8", err=True)
        raise typer.Exit(2) from exc

    checked = read_past_calls(text, tenant=tenant, now=runtime.now())
    if checked.bad:
        for bad in checked.bad:
            typer.echo(f"{file}:{bad}", err=True)
        typer.echo(f"{len(checked.bad)} bad line(s); nothing was imported. Fix them and run the import again.",
                   err=True)
        raise typer.Exit(1)
    skipped = ", ".join(f"{count} {reason}" for reason, count in checked.skipped.items())
    typer.echo(f"{file}: {len(checked.calls)} missed call(s) to import" + (f"; skipped {skipped}" if skipped else ""))

    added = _record(runtime, tenant, checked.calls, text_back=text_back, console=console, show=progress)
    typer.echo(f"recorded {added} new call(s); {len(checked.calls) - added} were imported before")
    if text_back:
        typer.echo("texts and CRM pushes are queued for `textback worker` (quiet hours and opt-outs apply)")
        return
    pushed, failed = _push(runtime, tenant, console=console, show=progress)
    typer.echo(f"pushed {pushed} CRM job(s)" + (f"; {failed} failed and are left to the worker's retries "
                                                 "(`textback outbox list`)" if failed else ""))


def _record(runtime, tenant, calls, *, text_back: bool, console: Console, show: bool) -> int:
    from core.importing import record_past_calls
    from core.outbox import Pending
    from core.store.tables import OutboxRow

    added = 0
    with _bar(console, show) as bar:
        task = bar.add_task("recording", total=len(calls))
        for start in range(0, len(calls), CHUNK):
            chunk, pending = calls[start:start + CHUNK], Pending()
            with runtime.db.transaction() as session:
                added += record_past_calls(session, tenant=tenant, calls=chunk, now=runtime.now(), pending=pending,
                                           text_back=text_back)
                if not text_back and pending.ids:
                    # Pushed by this command: the relay leaves them alone while it runs.
                    session.execute(update(OutboxRow).where(OutboxRow.id.in_(pending.ids))
                                    .values(enqueued_at=runtime.now()))
            bar.advance(task, len(chunk))
    return added


def _push(runtime, tenant, *, console: Console, show: bool) -> tuple[int, int]:
    from connectors.quota import OverQuota
    from core.store.tables import OutboxRow
    from sync.locks import RecordBusy
    from sync.runner import run_job

    with runtime.db.transaction() as session:
        waiting = OutboxRow.tenant_id == tenant.id, OutboxRow.status == "pending", \
            OutboxRow.kind.in_(IMPORT_KINDS), OutboxRow.idempotency_key.like(f"import:{tenant.id}:%")
        # A run interrupted while it held a job left that claim behind: the job is this command's to run.
        session.execute(update(OutboxRow).where(*waiting).values(claimed_until=None))
        ids = list(session.scalars(select(OutboxRow.id).where(*waiting).order_by(OutboxRow.id)))
    pushed = failed = 0
    with _bar(console, show) as bar:
        task = bar.add_task("pushing to the CRM", total=len(ids))
        for outbox_id in ids:
            while True:
                try:
                    run_job(runtime, outbox_id)
                except OverQuota as exc:
                    time.sleep(exc.retry_after)  # this command's own thread: no worker waits
                    continue
                except RecordBusy:
                    time.sleep(0.2)
                    continue
                except Exception as exc:  # noqa: BLE001  (recorded on the row; the workers retry it)
                    failed += 1
                    console.print(f"outbox {outbox_id}: {type(exc).__name__}: {exc}")
                    with runtime.db.transaction() as session:
                        session.execute(update(OutboxRow).where(OutboxRow.id == outbox_id).values(enqueued_at=None))
                else:
                    pushed += 1
                break
            bar.advance(task)
    return pushed, failed


class _Rate(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f}/s" if task.speed else "-/s", style="progress.data.speed")


def _bar(console: Console, show: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
                    TextColumn("eta"), TimeRemainingColumn(), console=console, disable=not show)
