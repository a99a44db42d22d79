"""/admin pages: verify the session, read through core, render; POSTs check the CSRF token first.

Every lookup by id is scoped to the tenants the user may see, so another tenant's conversation
or outbox row answers 404, the same as one that does not exist.
"""

from __future__ import annotations

import secrets
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select

from core import admin_accounts, constant_time
from core.admin_accounts import Viewer
from core.jobs import OutboxStatus
from core.outcomes import missed_call_outcomes
from core.report import build_report
from core.staff import admin_reply
from core.storable import storable
from core.store.outbox_admin import REPLAYABLE, RowFilter, replay
from core.store.repo import transcript
from core.store.tables import Connection, Conversation, Lead, OptOutEvent, OutboxRow
from sync.runtime import Runtime
from webhooks.admin import charts
from webhooks.params import RowId

router = APIRouter(prefix="/admin", include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.filters.update(
    pct=lambda rate: "-" if rate is None else f"{rate * 100:.0f}%",
    secs=lambda seconds: "-" if seconds is None else f"{seconds:.1f} s",
    when=lambda moment: "-" if moment is None else f"{moment:%Y-%m-%d %H:%M} UTC",
)
SESSION_COOKIE, LOGIN_CSRF_COOKIE = "textback_admin", "textback_login_csrf"
TROUBLE = (OutboxStatus.failed, OutboxStatus.dead, OutboxStatus.parked)


class SignInRequired(Exception):
    """Raised by the session check; the app answers with a redirect to the sign-in page."""


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime


def current_viewer(request: Request) -> Viewer:
    runtime = runtime_of(request)
    with runtime.db.transaction() as session:
        found = admin_accounts.viewer(session, token=request.cookies.get(SESSION_COOKIE), now=runtime.now())
    if found is None:
        raise SignInRequired()
    return found


def check_csrf(viewer: Viewer, token: str) -> None:
    if not token or not constant_time.equal(token, viewer.csrf_token):
        raise HTTPException(403, "the form's CSRF token is missing or wrong; reload the page and try again")


def _tenant_ids(runtime: Runtime, viewer: Viewer) -> list[str]:
    return viewer.tenants([tenant.id for tenant in runtime.tenants])


def _chosen(runtime: Runtime, viewer: Viewer, tenant: str | None) -> list[str]:
    visible = _tenant_ids(runtime, viewer)
    if tenant:
        if tenant not in visible:
            raise HTTPException(404, "no such tenant")
        return [tenant]
    return visible


def _page(request: Request, name: str, viewer: Viewer | None, **context) -> HTMLResponse:
    runtime = runtime_of(request)
    tenants = _tenant_ids(runtime, viewer) if viewer else []
    return templates.TemplateResponse(request, name, {"viewer": viewer, "tenants": tenants, **context})


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, failed: bool = False) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = _page(request, "login.html", None, csrf=token, failed=failed)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/admin")
    return response


@router.post("/login")
def login(request: Request, email: str = Form(""), password: str = Form(""), csrf: str = Form("")) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not csrf or not constant_time.equal(csrf, expected):
        raise HTTPException(403, "the form's CSRF token is missing or wrong; reload the page and try again")
    runtime = runtime_of(request)
    with runtime.db.transaction() as session:
        token = admin_accounts.sign_in(session, email=storable(email), password=password, now=runtime.now())
    if token is None:
        return RedirectResponse("/admin/login?failed=1", status_code=303)
    response = RedirectResponse("/admin", status_code=303)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", path="/admin",
                        secure=runtime.settings.public_url.startswith("https://"),
                        max_age=admin_accounts.SESSION_HOURS * 3600)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/admin")
    return response


@router.post("/logout")
def logout(request: Request, viewer: Viewer = Depends(current_viewer), csrf: str = Form("")) -> Response:
    check_csrf(viewer, csrf)
    runtime = runtime_of(request)
    with runtime.db.transaction() as session:
        admin_accounts.sign_out(session, token=request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/admin")
    return response


@router.get("", response_class=HTMLResponse)
def dashboard(request: Request, viewer: Viewer = Depends(current_viewer), tenant: str | None = None,
              days: int = 30) -> HTMLResponse:
    runtime = runtime_of(request)
    chosen = _chosen(runtime, viewer, tenant)
    days = min(max(days, 1), 366)
    today = datetime.combine(runtime.now().date(), time(0), tzinfo=timezone.utc)
    since, until = today - timedelta(days=days - 1), today + timedelta(days=1)
    with runtime.db.transaction() as session:
        outcomes = missed_call_outcomes(session, tenant_ids=chosen, since=since, until=until)
    report = build_report(outcomes, tenant_ids=chosen, since=since, until=until)
    trend = charts.daily(outcomes, since=since.date(), days=days)
    return _page(request, "dashboard.html", viewer, report=report, tenant=tenant, days=days,
                 funnel_svg=charts.funnel_svg(report.funnel), trend_svg=charts.trend_svg(trend), trend=trend)


@router.get("/conversations", response_class=HTMLResponse)
def conversations(request: Request, viewer: Viewer = Depends(current_viewer), tenant: str | None = None,
                  status: str | None = None, outcome: str | None = None, since: str | None = None) -> HTMLResponse:
    runtime = runtime_of(request)
    query = (select(Conversation, Lead.phone).join(Lead, Lead.id == Conversation.lead_id)
             .where(Conversation.tenant_id.in_(_chosen(runtime, viewer, tenant))))
    if status:
        query = query.where(Conversation.state == status)
    if outcome:
        query = query.where(Conversation.outcome == outcome)
    start = _date(since)
    if start is not None:
        query = query.where(Conversation.created_at >= start)
    with runtime.db.transaction() as session:
        rows = session.execute(query.order_by(Conversation.id.desc()).limit(200)).all()
        states = sorted(set(session.scalars(select(Conversation.state).distinct())))
        outcomes = sorted(o for o in session.scalars(select(Conversation.outcome).distinct()) if o)
    return _page(request, "conversations.html", viewer, rows=rows, tenant=tenant, status=status, outcome=outcome,
                 since=since or "", states=states, outcomes=outcomes)


def _visible_conversation(session, viewer: Viewer, conversation_id: int) -> Conversation:
    conversation = session.get(Conversation, conversation_id)
    if conversation is None or not viewer.may_see(conversation.tenant_id):
        raise HTTPException(404, f"no conversation {conversation_id}")
    return conversation


@router.get("/conversations/{conversation_id}", response_class=HTMLResponse)
def conversation_page(request: Request, conversation_id: RowId, viewer: Viewer = Depends(current_viewer),
                      note: str | None = None) -> HTMLResponse:
    runtime = runtime_of(request)
    with runtime.db.transaction() as session:
        conversation = _visible_conversation(session, viewer, conversation_id)
        lead = session.get(Lead, conversation.lead_id)
        messages = transcript(session, conversation_id=conversation.id)
        outcome = None
        if conversation.call_id is not None:
            found = missed_call_outcomes(session, tenant_ids=[conversation.tenant_id], call_id=conversation.call_id)
            outcome = found[0] if found else None
    return _page(request, "conversation.html", viewer, conversation=conversation, lead=lead, messages=messages,
                 outcome=outcome, note=note)


@router.post("/conversations/{conversation_id}/reply")
def reply(request: Request, conversation_id: RowId, viewer: Viewer = Depends(current_viewer), csrf: str = Form(""),
          body: str = Form("")) -> Response:
    check_csrf(viewer, csrf)
    runtime = runtime_of(request)
    from core.outbox import Pending

    pending = Pending()
    with runtime.db.transaction() as session:
        conversation = _visible_conversation(session, viewer, conversation_id)
        tenant = runtime.tenants.get(conversation.tenant_id)
        if tenant is None:
            raise HTTPException(404, f"no conversation {conversation_id}")
        refused = admin_reply(session, tenant=tenant, conversation=conversation, by=viewer.email, text=storable(body),
                              now=runtime.now(), pending=pending)
    runtime.dispatch(pending)
    note = refused or "sent: the reply is queued and the bot is paused for this conversation"
    return RedirectResponse(f"/admin/conversations/{conversation_id}?note={quote(note)}", status_code=303)


@router.get("/connectors", response_class=HTMLResponse)
def connectors(request: Request, viewer: Viewer = Depends(current_viewer), tenant: str | None = None,
               note: str | None = None) -> HTMLResponse:
    from sync.runner import handlers

    runtime = runtime_of(request)
    chosen = _chosen(runtime, viewer, tenant)
    kinds_of: dict[str, list[str]] = {}
    for kind, (role, _handler) in handlers().items():
        kinds_of.setdefault(role, []).append(kind.value)
    health = []
    with runtime.db.transaction() as session:
        for tenant_id in chosen:
            configured = runtime.tenants.get(tenant_id).connectors
            links = {c.role: c for c in session.scalars(select(Connection).where(Connection.tenant_id == tenant_id))}
            roles = []
            for role, config in sorted(configured.items()):
                kinds = kinds_of.get(role, [])
                last_ok = session.scalar(select(func.max(OutboxRow.done_at)).where(
                    OutboxRow.tenant_id == tenant_id, OutboxRow.kind.in_(kinds), OutboxRow.status == "done"))
                errors = list(session.scalars(select(OutboxRow).where(
                    OutboxRow.tenant_id == tenant_id, OutboxRow.kind.in_(kinds),
                    OutboxRow.status.in_([s.value for s in TROUBLE])).order_by(OutboxRow.id.desc()).limit(20)))
                roles.append({"role": role, "type": getattr(config, "type", type(config).__name__),
                              "connection": links.get(role), "last_ok": last_ok, "rows": errors})
            health.append({"tenant": tenant_id, "roles": roles})
    return _page(request, "connectors.html", viewer, health=health, tenant=tenant, note=note)


@router.post("/connectors/{tenant_id}/test")
def test_connection(request: Request, tenant_id: str, viewer: Viewer = Depends(current_viewer),
                    csrf: str = Form("")) -> Response:
    from sync.connection_check import check_connections

    check_csrf(viewer, csrf)
    runtime = runtime_of(request)
    [tenant_id] = _chosen(runtime, viewer, tenant_id)
    results = check_connections(runtime, runtime.tenants.get(tenant_id))
    note = f"{tenant_id}: " + "; ".join(
        f"{r.role} {'ok' if r.ok else 'FAILED' if r.ok is False else 'not checked'} ({r.detail})" for r in results)
    return RedirectResponse(f"/admin/connectors?note={quote(note)}", status_code=303)


@router.post("/outbox/{outbox_id}/replay")
def replay_row(request: Request, outbox_id: RowId, viewer: Viewer = Depends(current_viewer),
               csrf: str = Form("")) -> Response:
    check_csrf(viewer, csrf)
    runtime = runtime_of(request)
    with runtime.db.transaction() as session:
        row = session.get(OutboxRow, outbox_id)
        if row is None or not viewer.may_see(row.tenant_id):
            raise HTTPException(404, f"no outbox row {outbox_id}")
        ids = replay(session, RowFilter(statuses=tuple(REPLAYABLE), ids=(outbox_id,)))
    runtime.dispatch(ids)
    note = f"row {outbox_id} is queued again" if ids else f"row {outbox_id} was not failed, dead or parked"
    return RedirectResponse(f"/admin/connectors?note={quote(note)}", status_code=303)


@router.get("/opt-outs", response_class=HTMLResponse)
def opt_outs(request: Request, viewer: Viewer = Depends(current_viewer), tenant: str | None = None) -> HTMLResponse:
    runtime = runtime_of(request)
    with runtime.db.transaction() as session:
        rows = session.execute(
            select(OptOutEvent, Lead.phone).join(Lead, Lead.id == OptOutEvent.lead_id)
            .where(OptOutEvent.tenant_id.in_(_chosen(runtime, viewer, tenant)))
            .order_by(OptOutEvent.id.desc()).limit(500)).all()
    return _page(request, "opt_outs.html", viewer, rows=rows, tenant=tenant)


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
    except ValueError:
        raise HTTPException(422, f"{value!r} is not a date (YYYY-MM-DD)") from None
