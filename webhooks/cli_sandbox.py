"""`textback sandbox`, `textback simulate call | sms` and `textback demo`: the workbench with no vendor accounts.

`sandbox` serves every emulator and writes the tenants file pointed at them, plus the env lines it
needs; `serve` + `worker` run against that file; `simulate` plays the caller's side against the
running server with signed webhooks and prints the texts the caller gets back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

import typer
import yaml

from core.config import Settings
from webhooks.cli_errors import EXIT_PROBLEMS, EXIT_UNAVAILABLE, EXIT_USAGE, CommandFailed

simulate_app = typer.Typer(help="Play a caller against a running `textback serve` (signed Twilio webhooks).",
                           no_args_is_help=True)
DIAL_STATUSES = ("no-answer", "busy", "failed", "canceled", "completed")


def register(app: typer.Typer) -> None:
    app.command()(sandbox)
    app.add_typer(simulate_app, name="simulate")
    app.command()(demo)


def sandbox(
    host: str = typer.Option("127.0.0.1", help="interface the emulators listen on"),
    port: int = typer.Option(8900, help="first port; the six emulators take consecutive ones (0: any free)"),
    tenants_file: Path = typer.Option(Path("sandbox-tenants.yaml"), "--tenants-file", metavar="PATH",
                                      help="where to write the tenants file pointed at the emulators"),
    env_file: Path = typer.Option(Path("sandbox.env"), "--env-file", metavar="PATH",
                                  help="where to write the export lines of the secrets that file names"),
) -> None:
    """Serve every vendor emulator until Ctrl-C; writes a tenants file and an env file to run textback against."""
    from sandbox.stack import SandboxStack
    from webhooks.demo import sandbox_tenants

    calendars = ("intake@smithlee.example", "consults@riveralaw.example")
    with contextlib.ExitStack() as scope:
        try:
            stack = scope.enter_context(SandboxStack.start(first_port=port, host=host, calendars=calendars,
                                                           auto_deliver=True))
        except (RuntimeError, OSError) as exc:
            taken = f"ports {port}-{port + 5} on {host}" if port else f"free ports on {host}"
            raise CommandFailed(f"the emulators could not start ({exc}): {taken} must be free and the address "
                                "this machine's; choose others with --port N (0: any free) or --host",
                                exit_code=EXIT_USAGE) from exc
        tenants_file.write_text("# Written by `textback sandbox`: two law firms pointed at the running emulators.\n"
                                + yaml.safe_dump({"tenants": sandbox_tenants(stack)}, sort_keys=False))
        _write_private(env_file, "\n".join(stack.export_lines()) + "\n")
        typer.echo("Vendor emulators (Ctrl-C stops them):")
        for line in stack.describe():
            typer.echo(f"  {line}")
        typer.echo(f"\nTenants file: {tenants_file}  (Twilio numbers +15550001111 and +15550004444)")
        typer.echo(f"Secrets it names: {env_file}  (mode 600)")
        typer.echo("\nIn another terminal, from this folder:")
        typer.echo(f"  . {'' if env_file.is_absolute() else './'}{env_file} && export TEXTBACK_CONFIG={tenants_file} TEXTBACK_PUBLIC_URL=http://127.0.0.1:8000")
        typer.echo("  textback config check && textback db upgrade")
        typer.echo("  textback serve &  textback worker &")
        typer.echo("  textback simulate call --to +15550001111 --from +15550107777")
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()


def _write_private(path: Path, text: str) -> None:
    """Write `text` readable by this user only, from the first byte (it holds the emulators' secrets)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)  # an existing file keeps its old mode through O_CREAT


def _caller(to: str, caller: str, url: Optional[str]):
    import httpx

    from connectors.registry import validate_connector
    from core.config import load_tenants
    from webhooks.simulate import Caller

    settings = Settings()
    tenants = load_tenants(settings.config, validate_connector=validate_connector)
    http = httpx.Client(timeout=15)
    return Caller.for_number(tenants, to=to, caller=caller, public_url=url or settings.public_url, http=http)


TO = typer.Option(..., "--to", metavar="NUMBER", help="the business number called (one of a tenant's phone_numbers)")
FROM = typer.Option("+15550107777", "--from", metavar="NUMBER", help="the caller's number")
URL = typer.Option(None, "--url", metavar="URL", help="the server's public URL (default TEXTBACK_PUBLIC_URL)")
WAIT = typer.Option(10.0, "--wait", metavar="SECONDS", help="how long to wait for textback's text")


@simulate_app.command("call")
def simulate_call(to: str = TO, caller: str = FROM, url: Optional[str] = URL,
                  status: str = typer.Option("no-answer", "--status", help=" | ".join(DIAL_STATUSES)),
                  talked: Optional[int] = typer.Option(None, "--talked", metavar="SECONDS", min=0,
                                                       help="how long staff talked (default 60 if completed, else 0)"),
                  wait: float = WAIT) -> None:
    """Ring a tenant's number and end the dial with --status; prints the texts the caller gets."""
    from webhooks.simulate import SimulationError

    if status not in DIAL_STATUSES:
        raise typer.BadParameter(f"{status} is not a dial status; use one of {', '.join(DIAL_STATUSES)}",
                                 param_hint="--status")
    try:
        phone = _caller(to, caller, url)
        seen = len(phone.texts_received())
        talked = talked if talked is not None else (60 if status == "completed" else 0)
        for line in phone.call(dial_status=status, talked_seconds=talked):
            typer.echo(line)
        _print_texts(phone, seen, wait)
    except SimulationError as exc:
        raise CommandFailed(str(exc), exit_code=EXIT_UNAVAILABLE) from exc


@simulate_app.command("sms")
def simulate_sms(body: str = typer.Argument(..., metavar="TEXT", help="what the caller texts"),
                 to: str = TO, caller: str = FROM, url: Optional[str] = URL, wait: float = WAIT) -> None:
    """Text a tenant's number as the caller; prints textback's answer."""
    from webhooks.simulate import SimulationError

    try:
        phone = _caller(to, caller, url)
        seen = len(phone.texts_received())
        typer.echo(f"💬 {caller}: {body}")
        phone.text(body)
        _print_texts(phone, seen, wait)
    except SimulationError as exc:
        raise CommandFailed(str(exc), exit_code=EXIT_UNAVAILABLE) from exc


def _print_texts(phone, seen: int, wait: float) -> None:
    texts = phone.wait_for_texts(seen, seconds=wait)
    for text in texts:
        typer.echo(f"🤖 {phone.tenant.name}: {text}")
    if not texts:
        typer.echo(f"(no text within {wait:g} s: is `textback worker` running? `textback outbox list` shows "
                   "failed jobs)")


def demo(verbose: bool = typer.Option(False, "--verbose", "-v", help="also print the log (redacted)")) -> None:
    """Play missed calls end to end against the sandbox and tell the story (exit 0 only if both booked)."""
    from webhooks.demo import run_demo

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    try:
        code = run_demo(echo=typer.echo)
    except Exception as exc:  # the story ends with a sentence, not a traceback; -v logs the traceback
        logging.getLogger("textback.demo").info("the demo failed", exc_info=True)
        raise CommandFailed(f"the demo stopped: {type(exc).__name__}: {exc}"
                            + ("" if verbose else " (run `textback demo -v` for the log)"),
                            exit_code=EXIT_PROBLEMS) from exc
    if code:
        raise typer.Exit(EXIT_PROBLEMS)
    sys.exit(0)
