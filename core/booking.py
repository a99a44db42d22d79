"""Slot finding over live free/busy: routing, business hours, notice, buffer, length, spread, the caller's window.

Two conversation answers steer it (both optional):

- `preferred_window`: the caller's stated window, `{"start": ISO-8601, "end": ISO-8601}` with a UTC
  offset (a time without one is read in the tenant's zone). Slots are offered inside it; when none fit
  there, the ones nearest to it are offered and the caller is told so.
- `owner_id`: the CRM owner of the lead. The two-way sync sets it from the CRM (`Lead.crm_owner_id`,
  which wins over an answer); `booking.owner_calendars` maps it to that person's calendar.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from core.config import BookingSettings, OpeningHours
from core.models import BusyInterval, Slot

log = logging.getLogger(__name__)

# Offered slots are spread out so the caller gets a real choice, not 9:00, 9:30, 10:00.
MIN_GAP_BETWEEN_OFFERS = timedelta(hours=2)

Window = tuple[datetime, datetime]


def find_slots(
    *,
    busy: dict[str, list[BusyInterval]],
    calendars: list[str],
    hours: OpeningHours,
    zone: ZoneInfo,
    settings: BookingSettings,
    now: datetime,
    window: Window | None = None,
    count: int | None = None,
) -> list[Slot]:
    """Up to `count` free slots, earliest first and spread out; inside `window` when anything fits there,
    otherwise (see `fits`) the free slots nearest to it."""
    count = count or settings.slots_offered
    earliest = now + timedelta(minutes=settings.min_notice_minutes)
    free = [slot for start in candidate_starts(hours=hours, zone=zone, settings=settings, earliest=earliest)
            if (slot := _free_slot(start, busy, calendars, settings)) is not None]
    if window is None:
        return _spread(free, count, MIN_GAP_BETWEEN_OFFERS)
    inside = [slot for slot in free if fits(slot, window)]
    if inside:
        # A narrow window ("tomorrow at 3") still deserves more than one choice.
        share = (window[1] - window[0]) / count
        gap = max(timedelta(minutes=settings.step_minutes), min(MIN_GAP_BETWEEN_OFFERS, share))
        return _spread(inside, count, gap)
    nearest = sorted(free, key=lambda slot: _distance(slot, window))
    return sorted(_spread(nearest, count, MIN_GAP_BETWEEN_OFFERS), key=lambda slot: slot.start)


def fits(slot: Slot, window: Window) -> bool:
    return window[0] <= slot.start and slot.end <= window[1]


def candidate_starts(*, hours: OpeningHours, zone: ZoneInfo, settings: BookingSettings,
                     earliest: datetime) -> Iterator[datetime]:
    """Slot starts on the step grid inside opening hours, from `earliest` to the horizon."""
    local_earliest = earliest.astimezone(zone)
    step = timedelta(minutes=settings.step_minutes)
    length = timedelta(minutes=settings.duration_minutes)
    first_day = local_earliest.date()
    for offset in range(settings.horizon_days + 1):
        day = first_day + timedelta(days=offset)
        for opens, closes in hours.ranges(day.weekday()):
            start = _at(day, opens, zone)
            close = _at(day, closes, zone)
            while start + length <= close:
                if start >= earliest:
                    yield start
                start = start + step


def is_free(busy: list[BusyInterval], start: datetime, end: datetime, buffer_minutes: int = 0) -> bool:
    pad = timedelta(minutes=buffer_minutes)
    return not any(b.overlaps(start - pad, end + pad) for b in busy)


def label(slot_start: datetime, zone: ZoneInfo) -> str:
    """'Tue Dec 1, 10:00 AM' in the tenant's time zone."""
    local = slot_start.astimezone(zone)
    return local.strftime("%a %b %-d, %-I:%M %p")


def calendars_for(*, settings: BookingSettings, answers: Mapping[str, Any], configured: list[str]) -> list[str]:
    """The calendars to offer from: the CRM owner's when mapped, else the first route the answers match,
    else every calendar the connector is configured with.

    Routed calendars the connector does not list are dropped: it was not set up to read or book them.
    """
    owner = answers.get("owner_id")
    if owner is not None and str(owner) in settings.owner_calendars:
        chosen = [settings.owner_calendars[str(owner)]]
    else:
        chosen = next((by_value[str(answers[answer])] for answer, by_value in settings.routes.items()
                       if answer in answers and str(answers[answer]) in by_value), configured)
    known = [calendar for calendar in chosen if calendar in configured]
    if len(known) < len(chosen):
        log.warning("booking routes name calendars the calendar connector does not list: %s",
                    sorted(set(chosen) - set(known)))
    return known or configured


def preferred_window(answers: Mapping[str, Any], zone: ZoneInfo) -> Window | None:
    """The caller's stated window from the answers, or None when there is none or it cannot be read."""
    raw = answers.get("preferred_window")
    if not isinstance(raw, Mapping):
        return None
    try:
        start, end = (datetime.fromisoformat(str(raw[key])) for key in ("start", "end"))
    except (KeyError, ValueError):
        log.warning("ignoring an unreadable preferred_window %r", raw)
        return None
    start, end = (moment if moment.tzinfo else moment.replace(tzinfo=zone) for moment in (start, end))
    return (start, end) if end > start else None


def _free_slot(start: datetime, busy: dict[str, list[BusyInterval]], calendars: list[str],
               settings: BookingSettings) -> Slot | None:
    end = start + timedelta(minutes=settings.duration_minutes)
    calendar = next((c for c in calendars if is_free(busy.get(c, []), start, end, settings.buffer_minutes)), None)
    return Slot(calendar_id=calendar, start=start, end=end) if calendar is not None else None


def _spread(slots: list[Slot], count: int, gap: timedelta) -> list[Slot]:
    """The first `count` slots, in the given order, that are at least `gap` from every one already taken."""
    chosen: list[Slot] = []
    for slot in slots:
        if all(abs(slot.start - taken.start) >= gap for taken in chosen):
            chosen.append(slot)
            if len(chosen) == count:
                break
    return chosen


def _distance(slot: Slot, window: Window) -> timedelta:
    if slot.end <= window[0]:
        return window[0] - slot.end
    return max(timedelta(0), slot.start - window[1])


def _at(day: date, at: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, at, tzinfo=zone)
