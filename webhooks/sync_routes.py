"""Vendor push endpoints for two-way sync: verify, parse, enqueue one outbox job per change, answer.

    POST /webhooks/google            X-Goog-Channel-ID + X-Goog-Channel-Token against the stored channel;
                                     sync → 200 (handshake), exists → pull the calendar, not_exists → stop
    POST /webhooks/microsoft         ?validationToken= echoed as text/plain; notifications' clientState
                                     against the stored subscription; lifecycle events renew or resync
    POST /webhooks/hubspot           X-HubSpot-Signature-v3 (v1/v2 only where configured), 5-minute window;
                                     one job per eventId; a change older than one applied is dropped
    POST /webhooks/clio/{token}      the X-Hook-Secret handshake for a webhook we created, then
                                     X-Hook-Signature on every delivery

No signature → 401, a wrong or stale one → 403, and neither stores anything. A replayed request
writes nothing new: each job's idempotency key is the vendor's own id for the change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from core.config import Tenant
from core.outbox import Kind, Pending
from core.storable import storable_tree
from core.store import sync_state
from sync.runtime import Runtime
from webhooks.vendor_auth import Forged, Unsigned, check_clio, check_hubspot

router = APIRouter(prefix="/webhooks")

GOOGLE_STATES = frozenset({"sync", "exists", "not_exists"})
GRAPH_LIFECYCLE = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})
HUBSPOT_OWNER = "hubspot_owner_id"


def _commit(runtime: Runtime, work: Callable[[Any, Pending], Any]) -> Any:
    pending = Pending()
    with runtime.db.transaction() as session:
        result = work(session, pending)
    runtime.dispatch(pending)
    return result


def _public_url(runtime: Runtime, request: Request) -> str:
    url = runtime.settings.public_url + request.url.path
    return url + ("?" + request.url.query if request.url.query else "")


# --- Google Calendar push channels ------------------------------------------------------------

@router.post("/google")
async def google_push(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    channel_id, token = request.headers.get("X-Goog-Channel-ID"), request.headers.get("X-Goog-Channel-Token")
    state, number = request.headers.get("X-Goog-Resource-State"), request.headers.get("X-Goog-Message-Number", "")
    if not channel_id or not token:
        raise HTTPException(401, "no X-Goog-Channel-ID / X-Goog-Channel-Token")
    if state not in GOOGLE_STATES or not number.isdigit():
        raise HTTPException(400, "X-Goog-Resource-State must be sync, exists or not_exists, with a message number")
    resource_id = request.headers.get("X-Goog-Resource-ID")

    def work(session, pending: Pending) -> None:
        channel = sync_state.subscription(session, provider="google", external_id=channel_id)
        if (channel is None or channel.status != "active" or not sync_state.secret_matches(channel, token)
                or channel.resource_id != resource_id
                or (channel.expires_at is not None and channel.expires_at <= runtime.now())):
            raise HTTPException(403, "unknown, stopped or expired channel, or a wrong channel token")
        if state == "exists":
            pending.add(session, tenant_id=channel.tenant_id, kind=Kind.calendar_pull,
                        key=f"google-push:{channel_id}:{number}", payload={"calendar_id": channel.resource})
        elif state == "not_exists":
            channel.status = "stopped"  # the calendar is gone; upkeep opens nothing for it while it stays gone

    await run_in_threadpool(_commit, runtime, work)
    return Response(status_code=200)


# --- Microsoft Graph subscriptions ---------------------------------------------------------------

@router.post("/microsoft")
async def graph_notifications(request: Request) -> Response:
    token = request.query_params.get("validationToken")
    if token is not None:
        # Graph's reachability check: echo the token within 10 s. It stores nothing and proves nothing.
        return PlainTextResponse(token, status_code=200)
    runtime: Runtime = request.app.state.runtime
    try:
        notifications = storable_tree(await request.json())["value"]
        if not isinstance(notifications, list) or not all(isinstance(n, dict) for n in notifications):
            raise ValueError
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise HTTPException(400, 'expected {"value": [notification, ...]}') from None
    if not notifications:
        return Response(status_code=202)

    def work(session, pending: Pending) -> None:
        accepted = 0
        for notification in notifications:
            subscription = sync_state.subscription(session, provider="microsoft",
                                                   external_id=str(notification.get("subscriptionId")))
            if subscription is None or not sync_state.secret_matches(subscription, notification.get("clientState")):
                continue  # not ours, or forged: dropped (the whole request is refused if nothing is ours)
            lifecycle = notification.get("lifecycleEvent")
            if subscription.status == "stopped" or (lifecycle not in GRAPH_LIFECYCLE and _expired(subscription, runtime)):
                continue  # a subscription we replaced or let lapse proves nothing now (a captured, replayed request)
            accepted += 1
            tenant_id, mailbox = subscription.tenant_id, subscription.resource
            if lifecycle in GRAPH_LIFECYCLE:
                if lifecycle == "subscriptionRemoved":
                    subscription.status = "stopped"
                # Renew or re-create the subscription now; after a gap, re-read every booked event.
                bucket = runtime.now().strftime("%Y%m%d%H%M")
                pending.add(session, tenant_id=tenant_id, kind=Kind.watch_calendars,
                            key=f"graph-lifecycle:{subscription.external_id}:{lifecycle}:{bucket}", payload={})
                if lifecycle in ("missed", "subscriptionRemoved"):
                    pending.add(session, tenant_id=tenant_id, kind=Kind.calendar_pull,
                                key=f"graph-resync:{subscription.external_id}:{bucket}",
                                payload={"calendar_id": mailbox})
                continue
            event_id = (notification.get("resourceData") or {}).get("id")
            if not event_id:
                continue
            # Graph gives a change no id of its own; its etag names the event's version, so a replay or a
            # retried delivery of one change writes nothing new (and the job reads the event as it is now).
            version = (notification.get("resourceData") or {}).get("@odata.etag") or notification.get("changeType")
            digest = hashlib.sha256(f"{event_id}:{version}".encode()).hexdigest()[:32]
            pending.add(session, tenant_id=tenant_id, kind=Kind.calendar_event_changed,
                        key=f"graph:{subscription.external_id}:{digest}",
                        payload={"calendar_id": mailbox, "event_id": event_id})
        if not accepted:
            raise HTTPException(403, "no notification carries a live subscription of ours and its clientState")

    await run_in_threadpool(_commit, runtime, work)
    return Response(status_code=202)


def _expired(subscription, runtime: Runtime) -> bool:
    """Graph still sends lifecycle events around a subscription's expiry, but no change after it."""
    return subscription.expires_at is not None and subscription.expires_at <= runtime.now()


# --- HubSpot app webhooks -------------------------------------------------------------------------

@router.post("/hubspot")
async def hubspot_events(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    tenant = _hubspot_tenant(runtime, request, body, headers)
    try:
        events = storable_tree(json.loads(body))  # verified over the raw body; stored as PostgreSQL can
        if not isinstance(events, list) or not all(isinstance(e, dict) and "eventId" in e for e in events):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, "expected a JSON array of events, each with an eventId") from None
    config = tenant.connectors["crm"]
    changes = contact_changes_from_hubspot(events, do_not_text_property=config.do_not_text_property,
                                           portal_id=config.portal_id)

    def work(session, pending: Pending) -> None:
        # One job per event, keyed by HubSpot's eventId: an event HubSpot sends again, alone or in another
        # batch, is the job already written; the job drops a change older than one already applied.
        for change in changes:
            pending.add(session, tenant_id=tenant.id, kind=Kind.crm_contact_changed,
                        key=f"hubspot:{tenant.id}:{change.contact_id}:{change.event_id}"[:200],
                        payload={"contact_id": change.contact_id, "changes": change.fields,
                                 "occurred_at": change.occurred_at})

    await run_in_threadpool(_commit, runtime, work)
    return Response(status_code=204)


def _hubspot_tenant(runtime: Runtime, request: Request, body: bytes, headers: dict[str, str]) -> Tenant:
    """The tenant whose app secret signed the request (several portals may share one app: portal_id decides)."""
    uri, unsigned, forged = _public_url(runtime, request), False, None
    candidates = [t for t in runtime.tenants if getattr(t.connectors.get("crm"), "type", None) == "hubspot"
                  and t.connectors["crm"].webhook_secret is not None]
    portal_ids, verified = _portal_ids(body), []
    for tenant in candidates:
        config = tenant.connectors["crm"]
        try:
            check_hubspot(secret=config.webhook_secret.get_secret_value(), versions=config.signature_versions,
                          method=request.method, uri=uri, body=body, headers=headers, now=runtime.now())
        except Unsigned:
            unsigned = True
            continue
        except Forged as exc:
            forged = exc
            continue
        if config.portal_id is None or config.portal_id in portal_ids:
            return tenant
        verified.append(tenant)
    if verified and not portal_ids:
        return verified[0]  # signed by this app but unreadable: the caller answers 400
    if verified:
        raise HTTPException(403, f"the events are for portal(s) {sorted(portal_ids)}, which no tenant configures")
    if unsigned and forged is None:
        raise HTTPException(401, "no X-HubSpot-Signature-v3")
    raise HTTPException(403, f"signature not valid for any configured HubSpot app{f' ({forged})' if forged else ''}")


def _portal_ids(body: bytes) -> set[int]:
    try:
        return {e.get("portalId") for e in json.loads(body) if isinstance(e, dict)}
    except (ValueError, TypeError, AttributeError):
        return set()


@dataclass(frozen=True)
class HubSpotChange:
    """One HubSpot event, as the contact fields it changes."""

    event_id: int
    contact_id: str
    fields: dict[str, str | None]
    occurred_at: str | None


def contact_changes_from_hubspot(events: list[dict], *, do_not_text_property: str,
                                 portal_id: int | None) -> list[HubSpotChange]:
    """The events that change a field we read, in time order, each once (a batch may repeat an event)."""
    seen: set[str] = set()
    out: list[HubSpotChange] = []
    for event in sorted(events, key=lambda e: (_number(e.get("occurredAt")), _number(e.get("eventId")))):
        ident = str(event["eventId"])
        if ident in seen or (portal_id is not None and event.get("portalId") != portal_id):
            continue
        seen.add(ident)
        if event.get("subscriptionType") != "contact.propertyChange":
            continue
        name = {do_not_text_property: "do_not_text", HUBSPOT_OWNER: "owner_id"}.get(event.get("propertyName"))
        if name is None or event.get("objectId") is None:
            continue
        out.append(HubSpotChange(event_id=event["eventId"], contact_id=str(event["objectId"]),
                                 fields={name: event.get("propertyValue")},
                                 occurred_at=_ms_iso(event.get("occurredAt"))))
    return out


def _number(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _ms_iso(value: Any) -> str | None:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(value / 1000, timezone.utc).isoformat() if isinstance(value, int) else None


# --- Clio webhooks -------------------------------------------------------------------------------

@router.post("/clio/{path_token}")
async def clio_hook(path_token: str, request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    body = await request.body()
    handshake, signature = request.headers.get("X-Hook-Secret"), request.headers.get("X-Hook-Signature")

    def work(session, pending: Pending) -> Response:
        hook = sync_state.by_path_token(session, path_token)
        if hook is None or hook.provider != "clio" or hook.status == "stopped":
            raise HTTPException(403, "no such webhook")
        if handshake is not None and signature is None:
            if hook.status != "pending":
                raise HTTPException(403, "this webhook finished its handshake already")
            hook.signing_secret, hook.status = handshake, "active"
            return Response(status_code=200, headers={"X-Hook-Secret": handshake})
        if hook.status != "active" or not hook.signing_secret:
            raise HTTPException(403, "this webhook has not finished its handshake")
        try:
            check_clio(secret=hook.signing_secret, body=body, signature=signature)
        except Unsigned as exc:
            raise HTTPException(401, str(exc)) from None
        except Forged as exc:
            raise HTTPException(403, str(exc)) from None
        try:
            delivery = storable_tree(json.loads(body))
            data, meta = delivery["data"], delivery.get("meta") or {}
            record_id = str(data["id"])
        except (ValueError, KeyError, TypeError):
            raise HTTPException(400, 'expected {"data": {"id": ...}, "meta": {...}}') from None
        tenant = runtime.tenants.get(hook.tenant_id)
        changes = clio_contact_changes(tenant, data) if tenant is not None and hook.resource == "contact" else {}
        if changes:
            version = data.get("etag") or data.get("updated_at") or hashlib.sha256(body).hexdigest()[:16]
            pending.add(session, tenant_id=hook.tenant_id, kind=Kind.crm_contact_changed,
                        key=f"clio:{hook.external_id}:{record_id}:{meta.get('event')}:{version}"[:200],
                        payload={"contact_id": record_id, "changes": changes})
        return Response(status_code=200)

    return await run_in_threadpool(_commit, runtime, work)


def clio_contact_changes(tenant: Tenant, data: dict) -> dict[str, str | None]:
    """Clio has no do-not-text flag of its own: the tenant names a custom field (a checkbox) to use."""
    config = tenant.connectors.get("crm")
    field = getattr(config, "do_not_text_field", None)
    if field is None:
        return {}
    for value in data.get("custom_field_values") or []:
        name = (value.get("custom_field") or {}).get("name") or value.get("field_name")
        if name == field or str((value.get("custom_field") or {}).get("id")) == field:
            raw = value.get("value")
            return {"do_not_text": "true" if raw in (True, "true", "1", 1) else "false"}
    return {}
