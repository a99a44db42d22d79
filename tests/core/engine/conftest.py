"""Shared pieces for the engine tests: a fixed clock, the offered slots the booking side would send."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

NY = ZoneInfo("America/New_York")
NOW = datetime(2025, 3, 4, 10, 0, tzinfo=NY)  # a Tuesday, 10:00 AM
BUSINESS = "Smith & Lee"
OFFERED = [
    {"calendar_id": "staff@example.com", "start": "2025-03-05T10:00:00-05:00", "end": "2025-03-05T10:30:00-05:00",
     "label": "Wed Mar 5, 10:00 AM"},
    {"calendar_id": "staff@example.com", "start": "2025-03-05T14:00:00-05:00", "end": "2025-03-05T14:30:00-05:00",
     "label": "Wed Mar 5, 2:00 PM"},
    {"calendar_id": "staff@example.com", "start": "2025-03-06T15:00:00-05:00", "end": "2025-03-06T15:30:00-05:00",
     "label": "Thu Mar 6, 3:00 PM"},
]
