"""Dates and times in a caller's words, relative to their time zone: "tomorrow afternoon", "Tuesday at 3", "March 5th".

Relative days, weekdays, parts of the day and clock times are read here (they
are most of what callers type, and this is fast). Calendar dates ("March 5",
"3/12", "5th of April") go to `dateparser`, a maintained parser, and only when
the text holds one, since it costs about a millisecond per call.

Hours without am/pm are read as business hours: 1-6 are afternoon, 7-11 morning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

from core.engine.interpreters.base import Window

_WEEKDAYS = {"mon": 0, "monday": 0, "tue": 1, "tues": 1, "tuesday": 1, "wed": 2, "weds": 2, "wednesday": 2,
             "thu": 3, "thur": 3, "thurs": 3, "thursday": 3, "fri": 4, "friday": 4, "sat": 5, "saturday": 5,
             "sun": 6, "sunday": 6}
_PARTS = {"morning": (time(8), time(12)), "afternoon": (time(12), time(17)), "evening": (time(17), time(20)),
          "night": (time(17), time(21)), "tonight": (time(17), time(21)), "lunch": (time(11, 30), time(13, 30)),
          "lunchtime": (time(11, 30), time(13, 30)), "midday": (time(11, 30), time(13, 30)),
          "noon": (time(12), time(13))}
_DAY = re.compile(r"\b(today|tonight|tomorrow|tmrw|tmr|tomorow|tommorow|tommorrow|day after tomorrow|"
                  r"(?:this|next|coming)?\s*(?:" + "|".join(sorted(_WEEKDAYS, key=len, reverse=True)) + r")s?|"
                  r"this week|next week|(?:this|next)?\s*weekend|in (\d+|a|one|two|three) (day|days|week|weeks))\b")
_PART = re.compile(r"\b(early |late )?(morning|afternoon|evening|night|tonight|lunchtime|lunch|midday|noon)s?\b")
_CLOCK = re.compile(r"(?:\b(at|@|around|by|after|before|from|between|till|until|to|and|-)\s*)?"
                    r"\b(\d{1,2})(?::(\d{2}))?\s*(am|pm|a\.m\.|p\.m\.|a|p|o'?clock)?(?![\d/])")
_MONTHS = ("jan|january|feb|february|mar|march|apr|april|may|jun|june|jul|july|aug|august|sep|sept|september|"
           "oct|october|nov|november|dec|december")
_CALENDAR = re.compile(rf"\b(?:(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?"
                       rf"(?:{_MONTHS})|\d{{1,2}}/\d{{1,2}}(?:/\d{{2,4}})?)\b")
_NTH = re.compile(r"\bthe (\d{1,2})(?:st|nd|rd|th)\b(?! one| option| time| slot)")
_RANGE = re.compile(r"\b(?:(between|from)\s+)?(\d{1,2})(?::(\d{2}))?\s*(am|pm)?\s*(?:-|to|and|till|until)\s*"
                    r"(\d{1,2})(?::(\d{2}))?\s*(am|pm)?(?![\d/])")
_ANYTIME = re.compile(r"\b(any ?time|whenever|anyday|any day|flexible|doesn'?t matter|does not matter|"
                      r"either (?:is|works)|all (?:work|good|fine)|any of (?:them|those))\b|^any[.!]?$")
_ASAP = re.compile(r"\b(asap|a\.s\.a\.p|as soon as possible|soonest|earliest|right away|first available|"
                   r"next available|as early as)\b")
_NUMBERS = {"a": 1, "one": 1, "two": 2, "three": 3}


def anytime(text: str) -> bool:
    return bool(_ANYTIME.search(text))


def asap(text: str) -> bool:
    return bool(_ASAP.search(text))


def mentions_time(text: str) -> bool:
    """Cheap test: does the text talk about a day or a time (so "3" in it may be a clock time, not a pick)?"""
    return bool(_DAY.search(text) or _PART.search(text) or _CALENDAR.search(text) or _NTH.search(text)
                or any(_is_clock(m) for m in _CLOCK.finditer(text)))


def read_window(text: str, now: datetime) -> Window | None:
    """The window a (normalised) text states, in `now`'s zone, or None when it states none."""
    days = _days(text, now)
    band = _band(text)
    if days is None and band is None:
        return None
    zone = now.tzinfo
    if days is None:
        first, last = _next_day_for(band, now), None
        day_stated = False
    else:
        first, last = days
        day_stated = True
    last = last or first
    start_t, end_t = band if band else (time(0), time(0))
    start = datetime.combine(first, start_t, tzinfo=zone)
    end = datetime.combine(last + timedelta(days=1) if end_t == time(0) else last, end_t, tzinfo=zone)
    if end <= now:
        return None
    label = _label(first, last, band, text) if day_stated else _band_label(band, text)
    return Window(start=max(start, now), end=end, label=label, day_stated=day_stated)


def offered_in(window: Window, offered: Sequence[Mapping[str, Any]], zone) -> list[int]:
    """Indices of the offered slots that start inside the window (by clock only when no day was stated)."""
    hits = []
    for i, slot in enumerate(offered):
        start = datetime.fromisoformat(slot["start"]).astimezone(zone)
        if window.day_stated:
            inside = window.start <= start < window.end
        else:
            lo, hi = window.start.astimezone(zone).time(), window.end.astimezone(zone).time()
            inside = lo <= start.time() < hi if hi > lo else start.time() >= lo
        if inside:
            hits.append(i)
    return hits


def _days(text: str, now: datetime) -> tuple[date, date | None] | None:
    today = now.date()
    match = _DAY.search(text)
    if match:
        said = " ".join(match.group(1).split())
        if said in ("today", "tonight"):
            return today, None
        if said == "day after tomorrow":
            return today + timedelta(days=2), None
        if said.startswith(("tomorrow", "tmr", "tom")):
            return today + timedelta(days=1), None
        if said == "this week":
            return today, today + timedelta(days=6 - today.weekday())
        if said == "next week":
            monday = today + timedelta(days=7 - today.weekday())
            return monday, monday + timedelta(days=6)
        if said.endswith("weekend"):
            saturday = today + timedelta(days=(5 - today.weekday()) % 7)
            if said.startswith("next") and saturday - today < timedelta(days=6):
                saturday += timedelta(days=7)
            return saturday, saturday + timedelta(days=1)
        if said.startswith("in "):
            count = int(match.group(2)) if match.group(2).isdigit() else _NUMBERS[match.group(2)]
            return today + timedelta(days=count * (7 if match.group(3).startswith("week") else 1)), None
        return _weekday(said, now), None
    calendar = _CALENDAR.search(text)
    if calendar:
        parsed = _dateparser(calendar.group(0), now)
        return (parsed, None) if parsed else None
    nth = _NTH.search(text)
    if nth and 1 <= int(nth.group(1)) <= 31:
        return _day_of_month(int(nth.group(1)), today), None
    return None


def _weekday(said: str, now: datetime) -> date:
    words = said.split()
    name = words[-1].rstrip("s") if words[-1].rstrip("s") in _WEEKDAYS else words[-1]
    target = _WEEKDAYS[name]
    today = now.date()
    ahead = (target - today.weekday()) % 7
    if ahead == 0 and now.hour >= 17:
        ahead = 7
    if words[0] == "next" and (ahead == 0 or today.weekday() + ahead <= 6):
        ahead += 7  # "next Friday" said on a Tuesday is the Friday of next week
    return today + timedelta(days=ahead)


def _day_of_month(day: int, today: date) -> date:
    year, month = today.year, today.month
    for _ in range(3):
        try:
            candidate = date(year, month, day)
        except ValueError:
            candidate = None
        if candidate and candidate >= today:
            return candidate
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return today


def _dateparser(phrase: str, now: datetime) -> date | None:
    import dateparser  # loaded on first use: it takes ~0.1 s to import and most replies never need it

    parsed = dateparser.parse(phrase, languages=["en"], settings={
        "PREFER_DATES_FROM": "future", "DATE_ORDER": "MDY", "RELATIVE_BASE": now.replace(tzinfo=None)})
    return parsed.date() if parsed else None


def _band(text: str) -> tuple[time, time] | None:
    span = _RANGE.search(text)
    if span and (span.group(1) or span.group(3) or span.group(4) or span.group(6) or span.group(7)):
        shared = span.group(7) if int(span.group(2)) <= int(span.group(5)) else ""
        first = _to_time(int(span.group(2)), int(span.group(3) or 0), span.group(4) or shared or "")
        second = _to_time(int(span.group(5)), int(span.group(6) or 0), span.group(7) or "", after=first)
        if second > first:
            return first, second
    clocks = [m for m in _CLOCK.finditer(text) if _is_clock(m)]
    if clocks:
        at, lead = _clock(clocks[0]), clocks[0].group(1)
        if lead == "after":
            return at, max(time(20), at)
        if lead in ("before", "by", "till", "until"):
            return time(8), at
        end = (datetime.combine(date.today(), at) + timedelta(hours=1)).time()
        return at, end if end > at else time(23, 59)
    part = _PART.search(text)
    if part:
        start, end = _PARTS[part.group(2)]
        if part.group(1) == "early ":
            end = time(start.hour + 2)
        elif part.group(1) == "late ":
            start = time(end.hour - 2)
        return start, end
    return None


def _is_clock(match: re.Match[str]) -> bool:
    lead, hour, minutes, suffix = match.group(1), int(match.group(2)), match.group(3), match.group(4)
    if hour > 23 or (minutes and int(minutes) > 59):
        return False
    return bool(suffix or minutes or lead in ("at", "@", "around", "after", "before", "by", "from", "between"))


def _clock(match: re.Match[str]) -> time:
    return _to_time(int(match.group(2)), int(match.group(3) or 0), match.group(4) or "")


def _to_time(hour: int, minutes: int, suffix: str, *, after: time | None = None) -> time:
    suffix = suffix.replace(".", "")
    if hour > 23 or minutes > 59:
        return time(0)
    if suffix.startswith("p") and hour < 12:
        hour += 12
    elif suffix.startswith("a") and hour == 12:
        hour = 0
    elif not suffix.startswith(("a", "p")) and 1 <= hour <= 6:
        hour += 12
    if after is not None and hour <= after.hour and hour + 12 < 24 and not suffix.startswith("a"):
        hour += 12
    return time(hour, minutes)


def _next_day_for(band: tuple[time, time], now: datetime) -> date:
    """A time of day with no day means the next time it comes round (today if enough of it is left)."""
    end = datetime.combine(now.date(), band[1], tzinfo=now.tzinfo)
    return now.date() if end - now >= timedelta(hours=1) else now.date() + timedelta(days=1)


def _label(first: date, last: date, band: tuple[time, time] | None, text: str) -> str:
    days = f"{first:%a %b} {first.day}" + (f" to {last:%a %b} {last.day}" if last != first else "")
    return days if band is None else f"{days}, {_band_label(band, text)}"


def _band_label(band: tuple[time, time], text: str) -> str:
    part = _PART.search(text)
    if part and not any(_is_clock(m) for m in _CLOCK.finditer(text)):
        return part.group(0)
    return f"{_hm(band[0])}-{_hm(band[1])}"


def describe(start: datetime, end: datetime) -> str:
    """'Fri Mar 7, 8:00 AM-12:00 PM' for a window within one day, else both ends."""
    if start.date() == end.date():
        return f"{start:%a %b} {start.day}, {_hm(start.time())}-{_hm(end.time())}"
    return f"{start:%a %b} {start.day}, {_hm(start.time())} to {end:%a %b} {end.day}, {_hm(end.time())}"


def _hm(at: time) -> str:
    return f"{at.hour % 12 or 12}:{at.minute:02d} {'AM' if at.hour < 12 else 'PM'}"
