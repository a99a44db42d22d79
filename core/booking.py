"""Slot finding over live free/busy: business hours, notice, buffer, length, spread."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from core.config import BookingSettings, OpeningHours
from core.models import BusyInterval, Slot

# Offered slots are spread out so the caller gets a real choice, not 9:00, 9:30, 10:00.
MIN_GAP_BETWEEN_OFFERS = timedelta(hours=2)


def find_slots(
    *,
    busy: dict[str, list[BusyInterval]],
    calendars: list[str],
    hours: OpeningHours,
    zone: ZoneInfo,
    settings: BookingSettings,
    now: datetime,
    count: int | None = None,
) -> list[Slot]:
    """Up to `count` free slots, earliest first, at least MIN_GAP_BETWEEN_OFFERS apart."""
    count = count or settings.slots_offered
    earliest = now + timedelta(minutes=settings.min_notice_minutes)
    chosen: list[Slot] = []
    for start in candidate_starts(hours=hours, zone=zone, settings=settings, earliest=earliest):
        if chosen and start - chosen[-1].start < MIN_GAP_BETWEEN_OFFERS:
            continue
        end = start + timedelta(minutes=settings.duration_minutes)
        calendar = next((c for c in calendars if is_free(busy.get(c, []), start, end, settings.buffer_minutes)), None)
        if calendar is not None:
            chosen.append(Slot(calendar_id=calendar, start=start, end=end))
            if len(chosen) == count:
                break
    return chosen


def candidate_starts(*, hours: OpeningHours, zone: ZoneInfo, settings: BookingSettings, earliest: datetime):
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


def _at(day: date, at, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, at, tzinfo=zone)
