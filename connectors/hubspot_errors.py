"""HubSpot's failures, as the connector error tree: the SDK's API exceptions and urllib3's transport errors."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import urllib3
from hubspot.crm.associations.v4 import ApiException as AssociationsApiException
from hubspot.crm.objects import ApiException
from hubspot.crm.properties import ApiException as PropertiesApiException

from connectors.base import ConnectorError, RateLimited, Transient, error_for_status, parse_retry_after


@contextlib.contextmanager
def vendor_errors(action: str) -> Iterator[None]:
    """Translate the SDK's and urllib3's failures into the connector error tree."""
    try:
        yield
    except (ApiException, PropertiesApiException, AssociationsApiException) as exc:
        raise error_for(exc, action) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise Transient(f"HubSpot {action} failed: {exc}") from exc


def error_for(exc: ApiException | PropertiesApiException | AssociationsApiException, action: str) -> ConnectorError:
    message = f"HubSpot {action} failed with {exc.status}: {_vendor_message(exc.body) or exc.reason}"
    if not exc.status:  # the SDK reports TLS failures with status 0
        return Transient(message)
    return error_for_status(exc.status, message, retry_after=parse_retry_after((exc.headers or {}).get("Retry-After")))


def policy_name(exc: RateLimited) -> str | None:
    """The limit a 429 names (`policyName`: TEN_SECONDLY_ROLLING, SECONDLY, DAILY), when it names one."""
    try:
        return str(json.loads(exc.__cause__.body)["policyName"])
    except (AttributeError, TypeError, ValueError, KeyError):
        return None


def _vendor_message(body: bytes | str | None) -> str | None:
    if not body:
        return None
    try:
        return str(json.loads(body).get("message"))
    except (ValueError, AttributeError):
        return (body.decode(errors="replace") if isinstance(body, bytes) else body)[:300]
