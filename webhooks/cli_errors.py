"""How the `textback` command fails: one paragraph saying what and how to fix it, and an exit code.

Exit codes (README "The command line"):
    0  done
    1  what you asked to check is not right (config check found problems, the demo did not book)
    2  bad usage or bad configuration (unknown option or tenant, invalid tenants file, missing key)
    3  a service textback needs is unreachable (the database, the job queue)

`FriendlyGroup` is the top-level Click group: it maps the failures an operator meets in the first
hour (database missing or down, Redis down, an invalid tenants file) to that paragraph instead of a
traceback. Anything else still raises: it is a bug, and its traceback is what a bug report needs.
"""

from __future__ import annotations

import click
import typer
from typer.core import TyperGroup

from core.config_errors import ConfigError
from core.redact import mask_url, redact

EXIT_PROBLEMS, EXIT_USAGE, EXIT_UNAVAILABLE = 1, 2, 3


class CommandFailed(click.ClickException):
    """A failure already put in words; printed as is (no "Error:" box) with its exit code."""

    def __init__(self, message: str, *, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(redact(self.message), err=True)


class FriendlyGroup(TyperGroup):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CommandFailed as exc:
            exc.show()
            raise typer.Exit(exc.exit_code) from exc
        except ConfigError as exc:
            for problem in exc.problems:
                click.echo(redact(problem.with_excerpt()), err=True)
            click.echo(f"{len(exc.problems)} problem(s) in the tenants file; `textback config check` lists them",
                       err=True)
            raise typer.Exit(EXIT_USAGE) from exc
        except Exception as exc:
            failure = explain(exc)
            if failure is None:
                raise
            failure.show()
            raise typer.Exit(failure.exit_code) from exc


def explain(exc: BaseException) -> CommandFailed | None:
    """The operator's paragraph for a known failure, or None for a bug."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

    if isinstance(exc, OperationalError):
        return database_unreachable(exc)
    if isinstance(exc, (ArgumentError, NoSuchModuleError)):
        return CommandFailed(f"TEXTBACK_DATABASE_URL is not a database URL textback can use ({exc}); write "
                             "sqlite:///path/to/textback.db or postgresql://user:password@host/dbname")
    if _is_broker_down(exc):
        return broker_unreachable(exc)
    if _is_settings_error(exc):
        problems = "; ".join(f"TEXTBACK_{str(err['loc'][0]).upper()}: {err['msg']} (got {err.get('input')!r})"
                             for err in exc.errors())
        return CommandFailed(f"the environment is not valid: {problems}; fix or unset the variable")
    return None


def _is_settings_error(exc: BaseException) -> bool:
    from pydantic import ValidationError

    return isinstance(exc, ValidationError) and exc.title == "Settings"


def database_unreachable(exc: BaseException, url: str | None = None) -> CommandFailed:
    from core.config import Settings

    url = mask_url(url or Settings().database_url)
    detail = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300].rstrip(".?! ")
    lower = detail.lower()
    if "does not exist" in lower and "database" in lower:
        fix = "create it (e.g. `createdb NAME` as the postgres user) or point TEXTBACK_DATABASE_URL at one that exists"
    elif "password authentication failed" in lower or "no password supplied" in lower:
        fix = "check the user and password in TEXTBACK_DATABASE_URL"
    elif "unable to open database file" in lower:
        fix = "the folder of the SQLite file must exist and be writable"
    elif "refused" in lower or "could not connect" in lower or "timeout" in lower or "resolve" in lower:
        fix = "is PostgreSQL running and listening at that host and port? Start it or fix TEXTBACK_DATABASE_URL"
    else:
        fix = "check TEXTBACK_DATABASE_URL and that the database server is up"
    return CommandFailed(f"textback cannot use the database at {url}: {detail}. {fix[0].upper()}{fix[1:]}.",
                         exit_code=EXIT_UNAVAILABLE)


def broker_unreachable(exc: BaseException, url: str | None = None) -> CommandFailed:
    from core.config import Settings

    url = mask_url(url or Settings().redis_url)
    detail = " ".join(str(exc).split())[:300].rstrip(".?! ")
    return CommandFailed(f"textback cannot reach the job queue at {url}: {detail}. Start Redis (or RabbitMQ) there "
                         "or fix TEXTBACK_REDIS_URL; webhooks keep answering while it is down, but nothing is sent "
                         "until a worker can reach it.", exit_code=EXIT_UNAVAILABLE)


def _is_broker_down(exc: BaseException) -> bool:
    try:
        import redis.exceptions
    except ImportError:  # pragma: no cover - redis is a dependency
        return False
    return isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError))
