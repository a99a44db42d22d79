"""Graph's dateTimeTimeZone: which zone names it accepts, how it reads and writes wall-clock times.

Graph takes Windows time zone ids ("Pacific Standard Time") and a fixed list of IANA names
(the dateTimeTimeZone resource page lists them); anything else is refused with
TimeZoneNotSupportedException. The sandbox knows the Windows ids in `WINDOWS_ZONES`, not all
of Windows' ~140. Responses carry times in UTC unless `Prefer: outlook.timezone="..."` asks
for another zone, and write them with seven fractional digits.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

WINDOWS_ZONES = {
    "UTC": "UTC", "Dateline Standard Time": "Etc/GMT+12", "Hawaiian Standard Time": "Pacific/Honolulu",
    "Alaskan Standard Time": "America/Anchorage", "Pacific Standard Time": "America/Los_Angeles",
    "US Mountain Standard Time": "America/Phoenix", "Mountain Standard Time": "America/Denver",
    "Central Standard Time": "America/Chicago", "Central Standard Time (Mexico)": "America/Mexico_City",
    "Canada Central Standard Time": "America/Regina", "SA Pacific Standard Time": "America/Bogota",
    "Eastern Standard Time": "America/New_York", "US Eastern Standard Time": "America/Indiana/Indianapolis",
    "Atlantic Standard Time": "America/Halifax", "Newfoundland Standard Time": "America/St_Johns",
    "E. South America Standard Time": "America/Sao_Paulo", "Argentina Standard Time": "America/Argentina/Buenos_Aires",
    "GMT Standard Time": "Europe/London", "Greenwich Standard Time": "Atlantic/Reykjavik",
    "W. Europe Standard Time": "Europe/Berlin", "Central Europe Standard Time": "Europe/Budapest",
    "Romance Standard Time": "Europe/Paris", "Central European Standard Time": "Europe/Warsaw",
    "W. Central Africa Standard Time": "Africa/Lagos", "GTB Standard Time": "Europe/Bucharest",
    "FLE Standard Time": "Europe/Kiev", "Egypt Standard Time": "Africa/Cairo",
    "South Africa Standard Time": "Africa/Johannesburg", "Israel Standard Time": "Asia/Jerusalem",
    "Turkey Standard Time": "Europe/Istanbul", "Arab Standard Time": "Asia/Riyadh",
    "Russian Standard Time": "Europe/Moscow", "E. Africa Standard Time": "Africa/Nairobi",
    "Arabian Standard Time": "Asia/Dubai", "Pakistan Standard Time": "Asia/Karachi",
    "India Standard Time": "Asia/Kolkata", "Bangladesh Standard Time": "Asia/Dhaka",
    "SE Asia Standard Time": "Asia/Bangkok", "China Standard Time": "Asia/Shanghai",
    "Singapore Standard Time": "Asia/Singapore", "W. Australia Standard Time": "Australia/Perth",
    "Taipei Standard Time": "Asia/Taipei", "Tokyo Standard Time": "Asia/Tokyo", "Korea Standard Time": "Asia/Seoul",
    "Cen. Australia Standard Time": "Australia/Adelaide", "AUS Central Standard Time": "Australia/Darwin",
    "E. Australia Standard Time": "Australia/Brisbane", "AUS Eastern Standard Time": "Australia/Sydney",
    "Tasmania Standard Time": "Australia/Hobart", "New Zealand Standard Time": "Pacific/Auckland",
}
# The IANA names the dateTimeTimeZone page lists ("Europe/Kyiv (Kiev)" counts as both spellings).
IANA_ZONES = frozenset("""
Etc/GMT+12 Etc/GMT+11 Pacific/Honolulu America/Anchorage America/Santa_Isabel America/Los_Angeles America/Phoenix
America/Chihuahua America/Denver America/Guatemala America/Chicago America/Mexico_City America/Regina America/Bogota
America/New_York America/Indiana/Indianapolis America/Caracas America/Asuncion America/Halifax America/Cuiaba
America/La_Paz America/Santiago America/St_Johns America/Sao_Paulo America/Argentina/Buenos_Aires America/Cayenne
America/Godthab America/Montevideo America/Bahia Etc/GMT+2 Atlantic/Azores Atlantic/Cape_Verde Africa/Casablanca
Etc/GMT Europe/London Atlantic/Reykjavik Europe/Berlin Europe/Budapest Europe/Paris Europe/Warsaw Africa/Lagos
Africa/Windhoek Europe/Bucharest Asia/Beirut Africa/Cairo Asia/Damascus Africa/Johannesburg Europe/Kyiv Europe/Kiev
Europe/Istanbul Asia/Jerusalem Asia/Amman Asia/Baghdad Europe/Kaliningrad Asia/Riyadh Africa/Nairobi Asia/Tehran
Asia/Dubai Asia/Baku Europe/Moscow Indian/Mauritius Asia/Tbilisi Asia/Yerevan Asia/Kabul Asia/Karachi Asia/Tashkent
Asia/Kolkata Asia/Colombo Asia/Kathmandu Asia/Almaty Asia/Dhaka Asia/Yekaterinburg Asia/Yangon Asia/Rangoon
Asia/Bangkok Asia/Novosibirsk Asia/Shanghai Asia/Krasnoyarsk Asia/Singapore Australia/Perth Asia/Taipei
Asia/Ulaanbaatar Asia/Irkutsk Asia/Tokyo Asia/Seoul Australia/Adelaide Australia/Darwin Australia/Brisbane
Australia/Sydney Pacific/Port_Moresby Australia/Hobart Asia/Yakutsk Pacific/Guadalcanal Asia/Vladivostok
Pacific/Auckland Etc/GMT-12 Pacific/Fiji Asia/Magadan Pacific/Tongatapu Pacific/Apia Pacific/Kiritimati
""".split())
_PREFERENCE = re.compile(r'\s*([\w.-]+)\s*(?:=\s*("(?:[^"]*)"|[^,]*))?\s*(?:,|$)')


class UnsupportedZone(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def zone(name: str) -> ZoneInfo:
    """The zone behind a name Graph accepts; UnsupportedZone otherwise."""
    if name in WINDOWS_ZONES:
        return ZoneInfo(WINDOWS_ZONES[name])
    if name in IANA_ZONES:
        return ZoneInfo(name)
    raise UnsupportedZone(name)


def read(value: dict, default_zone: str = "UTC") -> tuple[datetime, str]:
    """A dateTimeTimeZone as (aware UTC instant, the zone name given); ValueError or UnsupportedZone if bad."""
    name = value.get("timeZone") or default_zone
    local = datetime.fromisoformat(str(value["dateTime"]))
    moment = local.astimezone(zone(name)) if local.tzinfo else local.replace(tzinfo=zone(name))
    return moment.astimezone(timezone.utc), name


def write(moment: datetime, name: str) -> dict:
    """A dateTimeTimeZone for an instant, as wall-clock time in zone `name`."""
    return {"dateTime": moment.astimezone(zone(name)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0", "timeZone": name}


def parse_instant(text: str) -> datetime:
    """A query-string time (startDateTime, expirationDateTime): its own offset, or UTC when it has none."""
    moment = datetime.fromisoformat(text.strip())
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def preferences(headers: list[str]) -> dict[str, str]:
    """The `Prefer` headers as {name: value} (quotes removed); several may come in one header, comma-separated."""
    found: dict[str, str] = {}
    for header in headers:
        for match in _PREFERENCE.finditer(header):
            if match.group(1):
                found[match.group(1).lower()] = (match.group(2) or "").strip().strip('"')
    return found


def iso_utc(moment: datetime) -> str:
    """A DateTimeOffset as Graph writes it (createdDateTime, expirationDateTime): UTC with a Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
