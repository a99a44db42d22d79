"""How a phone staff typed into HubSpot is matched to a caller's E.164 number (phonenumbers)."""

from __future__ import annotations

import phonenumbers

from connectors.base import Rejected


def national_digits(phone: str) -> str:
    """HubSpot's calculated phone search key for an E.164 number: the national number's digits."""
    try:
        parsed = phonenumbers.parse(phone)
    except phonenumbers.NumberParseException as exc:
        raise Rejected(f"contact phone {phone!r} is not an E.164 number") from exc
    return phonenumbers.national_significant_number(parsed).lstrip("0")


def as_e164(stored: str | None, regions: set[str]) -> set[str]:
    """A phone as staff typed it, read in each of the regions it may be from."""
    numbers = set()
    for region in regions if stored else ():
        try:
            parsed = phonenumbers.parse(stored, region)
        except phonenumbers.NumberParseException:
            continue
        numbers.add(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))
    return numbers


def same_number(stored: str | None, e164: str) -> bool:
    """Whether a phone as staff typed it is the E.164 number, read in that number's country."""
    if not stored:
        return False
    region = phonenumbers.region_code_for_country_code(phonenumbers.parse(e164).country_code)
    try:
        parsed = phonenumbers.parse(stored, region)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) == e164
