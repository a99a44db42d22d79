"""When the business is open, and when the caller may be texted (quiet hours in the caller's own time zone)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as number_zones

from core.config import OpeningHours, QuietHours

# A number mapped to more zones than this (toll-free, nationwide mobile ranges) says nothing
# useful about where the caller is: the tenant's zone is used instead.
MAX_ZONES_FOR_A_NUMBER = 3


def is_open(hours: OpeningHours, zone: ZoneInfo, at: datetime) -> bool:
    local = at.astimezone(zone)
    return any(opens <= local.time() < closes for opens, closes in hours.ranges(local.weekday()))


def next_opening(hours: OpeningHours, zone: ZoneInfo, after: datetime) -> datetime | None:
    local = after.astimezone(zone)
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        for opens, _ in sorted(hours.ranges(day.weekday())):
            start = datetime.combine(day, opens, tzinfo=zone)
            if start > after:
                return start
    return None


def caller_zones(phone: str, fallback: ZoneInfo) -> list[ZoneInfo]:
    """The caller's likely time zones from the number (phonenumbers' data), else the tenant's."""
    try:
        names = number_zones.time_zones_for_number(phonenumbers.parse(phone))
    except phonenumbers.NumberParseException:
        return [fallback]
    names = [n for n in names if n != "Etc/Unknown"]
    if not names or len(names) > MAX_ZONES_FOR_A_NUMBER:
        return [fallback]
    return [ZoneInfo(n) for n in names]


def textable(quiet: QuietHours, zones: list[ZoneInfo], at: datetime) -> bool:
    """Inside the texting window in every zone the caller may be in."""
    return all(quiet.start <= at.astimezone(z).time() < quiet.end for z in zones)


def next_textable(quiet: QuietHours, zones: list[ZoneInfo], after: datetime) -> datetime:
    """The earliest moment at or after `after` inside the window in every candidate zone."""
    if textable(quiet, zones, after):
        return after
    candidates = sorted(
        datetime.combine(after.astimezone(z).date() + timedelta(days=d), quiet.start, tzinfo=z)
        for z in zones for d in range(3)
    )
    for candidate in candidates:
        if candidate >= after and textable(quiet, zones, candidate):
            return candidate
    first = zones[0]
    return datetime.combine(after.astimezone(first).date() + timedelta(days=1), quiet.start, tzinfo=first)


def label_opening(at: datetime, zone: ZoneInfo, now: datetime) -> str:
    """'today at 9:00 AM', 'tomorrow at 9:00 AM' or 'Mon at 9:00 AM' in the business's zone."""
    local, today = at.astimezone(zone), now.astimezone(zone).date()
    day = "today" if local.date() == today else "tomorrow" if local.date() == today + timedelta(days=1) \
        else local.strftime("%a")
    return f"{day} at {local.strftime('%-I:%M %p')}"


