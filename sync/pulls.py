"""Two-way sync jobs: read what staff changed at the vendor and hand it to core (core/calendar_sync.py,
core/crm_sync.py); open and renew the push subscriptions that say when to look.

    calendar_pull           Google: events changed since the stored cursor, page by page, the cursor saved
                            with each page's effects (a pull that dies after page 1 resumes at page 2; a
                            410 starts a full sync). Outlook: every upcoming booked event read by id.
    calendar_event_changed  one event a Graph notification named, read and applied
    crm_contact_changed     contact fields a CRM webhook carried (no vendor call: the event has the values)
    crm_pull                HubSpot: contacts modified since the stored cursor (search by lastmodifieddate,
                            the window moved before the 10,000-result cap), page by page like calendar_pull
    watch_calendars         Google channels and Graph subscriptions opened, renewed before they expire,
                            and stopped for calendars the tenant no longer books into; with a plain-http
                            TEXTBACK_PUBLIC_URL, which Google and Graph refuse to push to, one warning per
                            process and no more tries (the pulls on the timer carry the changes)
    watch_crm               the Clio contact webhook created (its handshake completes on /webhooks/clio)
                            and renewed before it expires (Clio allows 31 days); HubSpot's app webhooks
                            are set in the app's settings, not by API
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select

from core import calendar_sync, crm_sync
from core.calendar_sync import EventState
from core.config import Tenant
from core.jobs import CalendarEventJob, CalendarPullJob, ContactChangeJob, WatchJob
from connectors.base import Rejected
from core.outbox import Pending
from core.store import sync_state
from core.store.tables import Booking, SyncSubscription
from sync.runtime import Runtime

log = logging.getLogger(__name__)

GOOGLE_CHANNEL_TTL = timedelta(days=7)  # what Google grants events channels at most by default
CLIO_LIFETIME = timedelta(days=30)  # Clio allows at most 31 days
CLIO_CONTACT_FIELDS = "id,etag,updated_at,custom_field_values{id,field_name,value}"
GRAPH_LIFETIME = timedelta(days=3)  # Outlook event subscriptions live at most 10080 minutes
RENEW_BEFORE = timedelta(days=1)  # renew anything that would lapse within this
PROVIDERS = {"google": "google", "outlook": "microsoft"}
WEBHOOK_PATHS = {"google": "/webhooks/google", "microsoft": "/webhooks/microsoft"}
# Public URLs a vendor refused to push to (plain http) in this process: warned about once, not tried again.
_PUSH_REFUSED: set[tuple[str, str]] = set()


def provider_of(tenant: Tenant) -> str | None:
    config = tenant.connectors.get("calendar")
    return PROVIDERS.get(config.type) if config is not None else None


def pull_calendar(runtime: Runtime, tenant: Tenant, job: CalendarPullJob, pending: Pending) -> None:
    calendar, provider = runtime.calendar(tenant), provider_of(tenant)
    if calendar is None or provider is None:
        return
    if provider == "microsoft":
        for event_id in _booked_event_ids(runtime, tenant, job.calendar_id):
            state = calendar.event_state(calendar_id=job.calendar_id, external_id=event_id)
            _apply(runtime, tenant, [state], pending)
        return
    while True:
        with runtime.db.transaction() as session:
            cursor = sync_state.read_cursor(session, tenant_id=tenant.id, provider=provider, scope=job.calendar_id)
        items, cursor = calendar.changes_page(calendar_id=job.calendar_id, cursor=cursor)
        states = [state for item in items if (state := google_event_state(job.calendar_id, item)) is not None]
        _apply(runtime, tenant, states, pending, cursor=(provider, job.calendar_id, cursor))
        if "page" not in cursor:
            return


def event_changed(runtime: Runtime, tenant: Tenant, job: CalendarEventJob, pending: Pending) -> None:
    calendar = runtime.calendar(tenant)
    if calendar is None or provider_of(tenant) != "microsoft":
        return
    with runtime.db.transaction() as session:
        ours = session.scalar(select(Booking.id).where(
            Booking.tenant_id == tenant.id, Booking.calendar_id == job.calendar_id,
            Booking.external_event_id == job.event_id, Booking.status == "confirmed").limit(1))
    if ours is None:
        return  # a staff member's own event: free/busy reads it live, nothing to apply
    _apply(runtime, tenant, [calendar.event_state(calendar_id=job.calendar_id, external_id=job.event_id)], pending)


def contact_changed(runtime: Runtime, tenant: Tenant, job: ContactChangeJob, pending: Pending) -> None:
    crm = tenant.connectors.get("crm")
    if crm is None:
        return
    # One change of a contact at a time: two jobs reading the contact's applied times at once could each apply
    # its change, the older last (a batch of webhook events runs as several jobs; the full suite caught it).
    with runtime.locks.hold(f"crm:{tenant.id}:contact:{job.contact_id}"), runtime.db.transaction() as session:
        done = crm_sync.apply_contact_changes(session, tenant_id=tenant.id, crm=crm.type, contact_id=job.contact_id,
                                              changes=job.changes, now=runtime.now(),
                                              occurred_at=job.occurred_at)
    if done:
        log.info("tenant %s: CRM contact %s: %s", tenant.id, job.contact_id, ", ".join(done))


def pull_crm(runtime: Runtime, tenant: Tenant, job: WatchJob, pending: Pending) -> None:
    crm, config = runtime.crm(tenant), tenant.connectors.get("crm")
    if crm is None or not hasattr(crm, "contacts_changed"):
        return
    while True:
        with runtime.db.transaction() as session:
            cursor = sync_state.read_cursor(session, tenant_id=tenant.id, provider=config.type, scope="contacts")
        contacts, cursor, last_page = crm.contacts_changed(cursor=cursor)
        with runtime.db.transaction() as session:
            for contact_id, values in contacts:
                crm_sync.apply_contact_changes(session, tenant_id=tenant.id, crm=config.type, contact_id=contact_id,
                                               changes=values, now=runtime.now())
            sync_state.save_cursor(session, tenant_id=tenant.id, provider=config.type, scope="contacts",
                                   cursor=cursor, now=runtime.now())
        if last_page:
            return


def watch_calendars(runtime: Runtime, tenant: Tenant, job: WatchJob, pending: Pending) -> None:
    calendar, provider = runtime.calendar(tenant), provider_of(tenant)
    if calendar is None or provider is None:
        return
    now, wanted = runtime.now(), set(tenant.connectors["calendar"].calendars)
    public_url = runtime.settings.public_url
    address = public_url + WEBHOOK_PATHS[provider]
    if (provider, public_url) in _PUSH_REFUSED:
        return
    with runtime.db.transaction() as session:
        held = [(s.id, s.resource, s.external_id, s.resource_id, s.expires_at)
                for s in sync_state.live_subscriptions(session, tenant_id=tenant.id, provider=provider)]
    fresh = {resource for _, resource, _, _, expires in held
             if resource in wanted and expires is not None and expires > now + RENEW_BEFORE}
    for calendar_id in sorted(wanted - fresh):
        try:
            if provider == "google":
                _open_google_channel(runtime, tenant, calendar, calendar_id, address)
            else:
                renewable = next((h for h in held if h[1] == calendar_id), None)
                _subscribe_graph(runtime, tenant, calendar, calendar_id, address, renewable)
        except Rejected as exc:
            if exc.status != 400 or not public_url.startswith("http://"):
                raise
            _PUSH_REFUSED.add((provider, public_url))
            log.warning("%s refuses push notifications to %s (%s): push needs an https TEXTBACK_PUBLIC_URL; "
                        "calendar changes are pulled on the timer instead (two_way.pull_minutes)",
                        provider, public_url, exc)
            return
    for row_id, resource, external_id, resource_id, expires in held:
        superseded = provider == "google" and resource in wanted - fresh
        if resource not in wanted or superseded:
            # Google channels are not renewed: a new one is open now, so the old one stops.
            if provider == "google":
                calendar.unwatch(channel_id=external_id, resource_id=resource_id)
            else:
                calendar.unsubscribe(subscription_id=external_id)
            _mark(runtime, row_id, "stopped")


def watch_crm(runtime: Runtime, tenant: Tenant, job: WatchJob, pending: Pending) -> None:
    config, crm = tenant.connectors.get("crm"), runtime.crm(tenant)
    if config is None or config.type != "clio" or crm is None:
        return
    now = runtime.now()
    with runtime.db.transaction() as session:
        held = [(s.id, s.external_id, s.status, s.expires_at)
                for s in sync_state.live_subscriptions(session, tenant_id=tenant.id, provider="clio")]
    active = [h for h in held if h[2] == "active" and not h[1].startswith("pending:")]
    if any(expires is None or expires > now + RENEW_BEFORE for _, _, _, expires in active):
        return
    if active:
        row_id, webhook_id, _, _ = active[0]
        granted = crm.renew_webhook(webhook_id=webhook_id, expires_at=now + CLIO_LIFETIME)
        with runtime.db.transaction() as session:
            session.get(SyncSubscription, row_id).expires_at = granted
        return
    for row_id, webhook_id, _, _ in held:  # a handshake that never came: start again
        if not webhook_id.startswith("pending:"):
            crm.delete_webhook(webhook_id=webhook_id)
        _mark(runtime, row_id, "stopped")
    token = secrets.token_urlsafe(24)
    # The row exists before Clio is asked, as Clio may send the handshake before it answers the create.
    with runtime.db.transaction() as session:
        row = SyncSubscription(tenant_id=tenant.id, provider="clio", resource="contact", external_id=f"pending:{token}",
                               path_token=token, status="pending")
        session.add(row)
        session.flush()
        row_id = row.id
    made = crm.create_webhook(url=f"{runtime.settings.public_url}/webhooks/clio/{token}", model="contact",
                              fields=CLIO_CONTACT_FIELDS, events=["updated"])
    with runtime.db.transaction() as session:
        row = session.get(SyncSubscription, row_id)
        row.external_id, row.expires_at = made["webhook_id"], made["expires_at"]


def _open_google_channel(runtime: Runtime, tenant: Tenant, calendar, calendar_id: str, address: str) -> None:
    token = secrets.token_urlsafe(32)
    channel = calendar.watch(calendar_id=calendar_id, address=address, token=token,
                             ttl_seconds=int(GOOGLE_CHANNEL_TTL.total_seconds()))
    with runtime.db.transaction() as session:
        session.add(SyncSubscription(tenant_id=tenant.id, provider="google", resource=calendar_id,
                                     external_id=channel["channel_id"], resource_id=channel["resource_id"],
                                     secret_sha256=sync_state.digest(token), status="active",
                                     expires_at=channel["expires_at"]))


def _subscribe_graph(runtime: Runtime, tenant: Tenant, calendar, calendar_id: str, address: str,
                     renewable: tuple | None) -> None:
    expires = runtime.now() + GRAPH_LIFETIME
    if renewable is not None:
        row_id, _, subscription_id, _, _ = renewable
        granted = calendar.renew(subscription_id=subscription_id, expires_at=expires)
        with runtime.db.transaction() as session:
            session.get(SyncSubscription, row_id).expires_at = granted
        return
    client_state = secrets.token_urlsafe(32)  # Graph allows 128 characters
    made = calendar.subscribe(calendar_id=calendar_id, notification_url=address, client_state=client_state,
                              expires_at=expires)
    with runtime.db.transaction() as session:
        session.add(SyncSubscription(tenant_id=tenant.id, provider="microsoft", resource=calendar_id,
                                     external_id=made["subscription_id"],
                                     secret_sha256=sync_state.digest(client_state), status="active",
                                     expires_at=made["expires_at"]))


def _mark(runtime: Runtime, row_id: int, status: str) -> None:
    with runtime.db.transaction() as session:
        session.get(SyncSubscription, row_id).status = status


def google_event_state(calendar_id: str, item: dict) -> EventState | None:
    """A Google event as core needs it; None for what cannot be a booking (all-day events)."""
    declined = any(a.get("self") and a.get("responseStatus") == "declined" for a in item.get("attendees", []))
    if item.get("status") == "cancelled" or declined:
        return EventState(calendar_id=calendar_id, event_id=item["id"], cancelled=True)
    start, end = (item.get("start") or {}).get("dateTime"), (item.get("end") or {}).get("dateTime")
    if not start or not end:
        return None
    return EventState(calendar_id=calendar_id, event_id=item["id"], cancelled=False,
                      start=datetime.fromisoformat(start), end=datetime.fromisoformat(end))


def _apply(runtime: Runtime, tenant: Tenant, states: list[EventState], pending: Pending,
           cursor: tuple[str, str, dict] | None = None) -> None:
    """The effects of one page and the cursor past it, in one transaction: neither is kept without the other."""
    with runtime.db.transaction() as session:
        for state in states:
            outcome = calendar_sync.apply_event(session, tenant=tenant, event=state, now=runtime.now(),
                                                pending=pending)
            if outcome in ("moved", "cancelled"):
                log.info("tenant %s: event %s %s in the calendar", tenant.id, state.event_id, outcome)
        if cursor is not None:
            provider, scope, value = cursor
            sync_state.save_cursor(session, tenant_id=tenant.id, provider=provider, scope=scope, cursor=value,
                                   now=runtime.now())


def _booked_event_ids(runtime: Runtime, tenant: Tenant, calendar_id: str) -> list[str]:
    with runtime.db.transaction() as session:
        return list(session.scalars(select(Booking.external_event_id).where(
            Booking.tenant_id == tenant.id, Booking.calendar_id == calendar_id, Booking.status == "confirmed",
            Booking.end_at > runtime.now() - timedelta(days=1), Booking.external_event_id.is_not(None))))
