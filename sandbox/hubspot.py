"""An in-memory HubSpot portal (CRM objects and properties, associations, OAuth, webhooks), served by `create_app`.

    sandbox = HubSpotSandbox({"pat-na1-test"})
    with serve(create_app(sandbox)) as served:
        client = HubSpot(access_token="pat-na1-test", host=served.url)

What each part emulates, and how faithfully, is written at the top of its module:
sandbox.hubspot_records (objects, batches, search, associations), sandbox.hubspot_properties
(property rules and the properties API), sandbox.hubspot_access (private-app and OAuth tokens,
rate limits), sandbox.hubspot_webhooks (v3-signed change events) and sandbox.hubspot_validation
(request bodies checked against hubspot-api-client's request models). Search answers carry no
X-HubSpot-RateLimit-* headers, as HubSpot documents. `faults` scripts error answers (served
after authentication, in HubSpot's error shape), late answers and dropped connections.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from sandbox.common import Faults, inject_faults
from sandbox.hubspot_access import SEARCH_PER_SECOND, HubSpotAccess, Tier, rate_limited
from sandbox.hubspot_properties import HubSpotError, PropertyDef, PropertyKind, PropertyRegistry, bad_request
from sandbox.hubspot_records import HubSpotRecords
from sandbox.hubspot_validation import (
    ASSOCIATE_DEFAULT,
    ASSOCIATIONS_READ,
    BATCHES,
    GROUP_CREATE,
    OBJECT_CREATE,
    OBJECT_UPDATE,
    PROPERTY_CREATE,
    SEARCH,
    RequestModel,
    parse_body,
)
from sandbox.hubspot_webhooks import HubSpotWebhooks

_IDS = re.compile(r"/\d+(?=/|$)")  # record ids in a path, so that requests group by route

API_SOURCE = "INTEGRATION"


class HubSpotSandbox(HubSpotRecords):
    """One HubSpot portal: its records, property definitions, apps and tokens, webhooks and scripted faults.

    `tier` sets the private-app rate limits (starter: 100 requests per 10 s; professional and
    enterprise: 190); `burst_limit` and `daily_limit` override them; search is limited to
    `search_limit` requests per second (5; None for no limit). `unique_types` are the
    object types whose custom properties may require unique values.
    """

    def __init__(self, tokens: Iterable[str], *, tier: Tier = "enterprise", burst_limit: int | None = None,
                 daily_limit: int | None = None, search_limit: int | None = SEARCH_PER_SECOND,
                 search_lag: float = 0.0, default_region: str = "US",
                 unique_types: Iterable[str] = ("contacts", "deals"), portal_id: int = 62515) -> None:
        self.webhooks = HubSpotWebhooks(portal_id)
        super().__init__(PropertyRegistry(unique_types=unique_types), search_lag=search_lag,
                         default_region=default_region, on_change=self.webhooks.record_changed)
        self.access = HubSpotAccess(tokens, tier=tier, burst_limit=burst_limit, daily_limit=daily_limit,
                                    search_limit=search_limit)
        self.faults = Faults()

    @property
    def tokens(self) -> set[str]:
        """The private-app tokens the portal accepts (add to and discard from it)."""
        return self.access.tokens

    def define_property(self, object_type: str, name: str, *, kind: PropertyKind = "string",
                        options: Iterable[str] = (), unique: bool = False) -> None:
        """Add a custom property, as a portal admin would in HubSpot's settings."""
        self.properties.define(self.kind(object_type), name, PropertyDef(kind, tuple(options), unique=unique))

    def deliver_webhooks(self, http: httpx.Client) -> list[httpx.Response]:
        """POST the pending change events to the subscribed apps' target URLs; see sandbox.hubspot_webhooks."""
        return self.webhooks.deliver(http)


def create_app(sandbox: HubSpotSandbox) -> FastAPI:
    app = FastAPI(title="HubSpot sandbox")

    @app.exception_handler(HubSpotError)
    async def hubspot_error(request: Request, exc: HubSpotError) -> JSONResponse:
        return _error_response(exc)

    @app.middleware("http")
    async def gatekeeper(request: Request, call_next: Callable) -> Response:
        if request.url.path.startswith("/oauth/"):
            return await call_next(request)
        try:
            caller = sandbox.access.identify(request.headers.get("authorization", ""))
        except HubSpotError as refused:
            return _error_response(refused)
        fault = sandbox.faults.take(request.url.path)
        if fault is not None:
            extra = {"Retry-After": str(fault["retry_after"])} if fault["retry_after"] is not None else {}
            error = rate_limited("TEN_SECONDLY_ROLLING") if fault["status"] == 429 else HubSpotError(
                fault["status"], "internal error", None)
            return _error_response(error, extra)
        route = request.method + " " + _IDS.sub("/{id}", request.url.path)
        admission = sandbox.access.admit(caller, search=request.url.path.endswith("/search"), route=route)
        if admission.policy is not None:
            return _error_response(rate_limited(admission.policy),
                                   {**admission.headers, "Retry-After": str(admission.retry_after)})
        response = await call_next(request)
        response.headers.update(admission.headers)
        return response

    inject_faults(app, sandbox.faults)

    @app.get("/oauth/authorize")
    async def authorize(request: Request) -> RedirectResponse:
        return RedirectResponse(sandbox.access.authorize(request.query_params), status_code=302)

    @app.post("/oauth/v1/token")
    async def token(request: Request) -> JSONResponse:
        form = {key: str(value) for key, value in (await request.form()).items()}
        return JSONResponse(sandbox.access.exchange(form), headers={"Cache-Control": "no-store"})

    @app.get("/crm/v3/objects/{object_type}")
    async def list_objects(object_type: str, request: Request) -> dict:
        query = request.query_params
        return sandbox.page(object_type, limit=_whole(query.get("limit"), 10), after=query.get("after"),
                            properties=_names(query.getlist("properties")), archived=_flag(query.get("archived")),
                            link=lambda after: str(request.url.include_query_params(after=after)))

    @app.post("/crm/v3/objects/{object_type}", status_code=201)
    async def create_object(object_type: str, request: Request) -> dict:
        body = await _body(request, OBJECT_CREATE)
        return sandbox.create(object_type, body.get("properties"), body.get("associations") or [], source=API_SOURCE)

    @app.post("/crm/v3/objects/{object_type}/search")
    async def search_objects(object_type: str, request: Request) -> dict:
        return sandbox.search(object_type, await _body(request, SEARCH))

    @app.post("/crm/v3/objects/{object_type}/batch/{operation}")
    async def batch(object_type: str, operation: str, request: Request) -> Response:
        if operation not in BATCHES:
            raise HubSpotError(404, "resource not found", "OBJECT_NOT_FOUND")
        status, body = sandbox.batch(object_type, operation, await _body(request, BATCHES[operation]),
                                     source=API_SOURCE)
        return Response(status_code=204) if body is None else JSONResponse(body, status_code=status)

    @app.get("/crm/v3/objects/{object_type}/{object_id}")
    async def read_object(object_type: str, object_id: str, request: Request) -> dict:
        query = request.query_params
        return sandbox.read(object_type, object_id, properties=_names(query.getlist("properties")),
                            id_property=query.get("idProperty"), archived=_flag(query.get("archived")))

    @app.patch("/crm/v3/objects/{object_type}/{object_id}")
    async def update_object(object_type: str, object_id: str, request: Request) -> dict:
        body = await _body(request, OBJECT_UPDATE)
        return sandbox.update(object_type, object_id, body.get("properties"),
                              id_property=request.query_params.get("idProperty"), source=API_SOURCE)

    @app.delete("/crm/v3/objects/{object_type}/{object_id}", status_code=204)
    async def archive_object(object_type: str, object_id: str) -> Response:
        sandbox.archive(object_type, object_id, source=API_SOURCE)
        return Response(status_code=204)

    @app.get("/crm/v3/properties/{object_type}")
    async def list_properties(object_type: str) -> dict:
        return {"results": sandbox.properties.views(sandbox.kind(object_type))}

    @app.post("/crm/v3/properties/{object_type}", status_code=201)
    async def create_property(object_type: str, request: Request) -> dict:
        return sandbox.properties.create(sandbox.kind(object_type), await _body(request, PROPERTY_CREATE))

    @app.post("/crm/v3/properties/{object_type}/groups", status_code=201)
    async def create_group(object_type: str, request: Request) -> dict:
        return sandbox.properties.create_group(sandbox.kind(object_type), await _body(request, GROUP_CREATE))

    @app.get("/crm/v3/properties/{object_type}/{name}")
    async def read_property(object_type: str, name: str) -> dict:
        return sandbox.properties.view(sandbox.kind(object_type), name)

    @app.put("/crm/v4/objects/{from_type}/{from_id}/associations/default/{to_type}/{to_id}")
    async def associate(from_type: str, from_id: str, to_type: str, to_id: str) -> dict:
        return sandbox.associate_default(from_type, from_id, to_type, to_id)

    @app.post("/crm/v4/associations/{from_type}/{to_type}/batch/associate/default")
    async def associate_batch(from_type: str, to_type: str, request: Request) -> JSONResponse:
        status, body = sandbox.associate_default_batch(from_type, to_type,
                                                       (await _body(request, ASSOCIATE_DEFAULT))["inputs"])
        return JSONResponse(body, status_code=status)

    @app.post("/crm/v4/associations/{from_type}/{to_type}/batch/read")
    async def read_associations_batch(from_type: str, to_type: str, request: Request) -> JSONResponse:
        status, body = sandbox.association_batch_read(from_type, to_type,
                                                      (await _body(request, ASSOCIATIONS_READ))["inputs"])
        return JSONResponse(body, status_code=status)

    @app.get("/crm/v4/objects/{from_type}/{from_id}/associations/{to_type}")
    async def list_associations(from_type: str, from_id: str, to_type: str, request: Request) -> dict:
        query = request.query_params
        return sandbox.association_page(from_type, from_id, to_type, limit=_whole(query.get("limit"), 500),
                                        after=query.get("after"))

    return app


def _error_response(error: HubSpotError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.body, status_code=error.status,
                        headers={"X-HubSpot-Correlation-Id": error.body["correlationId"], **(headers or {})})


async def _body(request: Request, model: RequestModel) -> dict:
    return parse_body(await request.body(), model)


def _names(values: list[str]) -> list[str] | None:
    names = [name for value in values for name in value.split(",") if name]
    return names or None


def _flag(raw: str | None) -> bool:
    return (raw or "").lower() == "true"


def _whole(raw: str | None, default: int) -> int:
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f"{raw!r} is not a whole number") from None
