"""What a change staff made to a contact in the CRM does here (the CRM owns the contact's fields).

    do_not_text set      no more texts to the lead: open conversations close, queued texts are suppressed,
                         the change is kept as an opt-out event with source `crm`
    do_not_text cleared  texts may go again (a caller's own STOP still stands: only START lifts that)
    owner_id             the lead's CRM owner: bookings go to `booking.owner_calendars[owner]` and
                         handoffs to `two_way.owner_phones[owner]`

Changes arrive as vendor-neutral keys (`do_not_text`: "true"/"false", `owner_id`: id or None); the
webhook routes and the pulls translate each CRM's property names into them. Setting what is already
set changes nothing, so an echo of textback's own write is a no-op.

A webhook's change carries the time staff made it (`occurred_at`): each field keeps the time of the newest
change applied to it (a sync cursor per contact), and an older change arriving later (a retried or reordered
delivery) is dropped, so the CRM's last word stands whatever order its events come in.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.optout import stop_texting
from core.store import sync_state
from core.store.tables import ExternalId, Lead, OptOutEvent

TRUE_VALUES = frozenset({"true", "yes", "1", "on", "checked"})


def lead_for_contact(session: Session, *, tenant_id: str, crm: str, contact_id: str) -> Lead | None:
    """The lead textback pushed as this CRM contact (contacts textback never pushed are not ours to change)."""
    lead_id = session.scalar(select(ExternalId.local_id).where(
        ExternalId.tenant_id == tenant_id, ExternalId.connector == crm, ExternalId.local_kind == "lead",
        ExternalId.external_id == contact_id))
    return session.get(Lead, lead_id) if lead_id is not None else None


def apply_contact_changes(session: Session, *, tenant_id: str, crm: str, contact_id: str,
                          changes: dict[str, str | None], now: datetime,
                          occurred_at: datetime | None = None) -> list[str]:
    """Apply the CRM's values; returns what changed (empty when nothing did, or the contact is not a lead)."""
    lead = lead_for_contact(session, tenant_id=tenant_id, crm=crm, contact_id=contact_id)
    if lead is None:
        return []
    if occurred_at is not None:
        changes = _newer_than_applied(session, tenant_id=tenant_id, crm=crm, contact_id=contact_id,
                                      changes=changes, occurred_at=occurred_at, now=now)
    done = []
    if "do_not_text" in changes:
        wanted = (changes["do_not_text"] or "").strip().lower() in TRUE_VALUES
        if wanted != lead.do_not_text:
            _set_do_not_text(session, lead, wanted, now=now, detail=f"{crm} contact {contact_id}")
            done.append("do_not_text set" if wanted else "do_not_text cleared")
    if "owner_id" in changes:
        owner = (changes["owner_id"] or "").strip() or None
        if owner != lead.crm_owner_id:
            lead.crm_owner_id = owner
            done.append(f"owner {owner}")
    return done


def _set_do_not_text(session: Session, lead: Lead, wanted: bool, *, now: datetime, detail: str) -> None:
    lead.do_not_text = wanted
    session.add(OptOutEvent(tenant_id=lead.tenant_id, lead_id=lead.id, action="opt_out" if wanted else "opt_in",
                            source="crm", detail=detail))
    if wanted:
        stop_texting(session, lead, state="closed", outcome="do_not_text", now=now)


def _newer_than_applied(session: Session, *, tenant_id: str, crm: str, contact_id: str,
                        changes: dict[str, str | None], occurred_at: datetime, now: datetime) -> dict[str, str | None]:
    """The changes no newer change to the same field has been applied before; their time is noted."""
    scope = f"contact:{contact_id}"
    applied = sync_state.read_cursor(session, tenant_id=tenant_id, provider=crm, scope=scope) or {}
    when = occurred_at.isoformat()
    newer = {name: value for name, value in changes.items()
             if name not in applied or datetime.fromisoformat(applied[name]) <= occurred_at}
    if newer:
        sync_state.save_cursor(session, tenant_id=tenant_id, provider=crm, scope=scope,
                               cursor=applied | {name: when for name in newer}, now=now)
    return newer
