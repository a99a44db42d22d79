"""The HTTP side of the Graph emulator: paths, bearer tokens, Prefer headers, faults and errors.

Every mailbox path is served twice, under `/v1.0/me` and `/v1.0/users/{id|UPN}`; which mailbox
that means, and whether the token may touch it, is GraphSandbox's business.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from sandbox import graph_time
from sandbox.common import inject_faults
from sandbox.graph_events import GraphError, parse_select
from sandbox.microsoft_identity import AccessGrant

if TYPE_CHECKING:
    from sandbox.graph import GraphSandbox

MAILBOX_ROOTS = ("/v1.0/me", "/v1.0/users/{user}")
_FAULTS = {401: ("InvalidAuthenticationToken", "Access token has expired or is not yet valid."),
           429: ("ApplicationThrottled", "Application is over its MailboxConcurrency limit."),
           500: ("ErrorInternalServerError", "An internal server error occurred. The operation failed."),
           503: ("ServiceUnavailable", "The service is temporarily unavailable."),
           504: ("GatewayTimeout", "The operation timed out.")}
_WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/'
                                         'common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'}
_UNREADABLE = ("Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of "
               "valid JSON format.")


def _fault(fault: dict) -> JSONResponse:
    code, message = _FAULTS.get(fault["status"], ("BadRequest", "The request failed."))
    headers = _WWW_AUTHENTICATE if fault["status"] == 401 else {}
    if fault["retry_after"] is not None:
        headers = headers | {"Retry-After": str(fault["retry_after"])}
    return GraphError(fault["status"], code, message, headers=headers).response()


def add_routes(app: FastAPI, graph: GraphSandbox) -> None:
    inject_faults(app, graph.faults, respond=_fault)

    @app.exception_handler(GraphError)
    async def graph_error(request: Request, exc: GraphError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return GraphError(400, "BadRequest", "Invalid request.").response()

    def caller(request: Request) -> AccessGrant:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.", headers=_WWW_AUTHENTICATE)
        grant = graph.identity.grant_for(token.strip())
        if grant is None:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.",
                             headers=_WWW_AUTHENTICATE)
        return grant

    def mailbox_route(path: str, endpoint, *, methods: list[str], status_code: int = 200) -> None:
        for root in MAILBOX_ROOTS:
            app.add_api_route(root + path, endpoint, methods=methods, status_code=status_code)

    async def get_schedule(request: Request, body: Any = Depends(_json_body), grant: AccessGrant = Depends(caller)):
        return graph.get_schedule(grant, _user(request), body, zone=_zone(request))

    async def calendar_view(request: Request, grant: AccessGrant = Depends(caller)):
        return graph.calendar_view(grant, _user(request), request.path_params.get("calendar"),
                                   dict(request.query_params), zone=_zone(request), link=_link(request))

    async def calendar_view_delta(request: Request, grant: AccessGrant = Depends(caller)):
        prefs = _prefer(request)
        try:
            page_size = max(1, int(prefs.get("odata.maxpagesize", 10)))
        except ValueError as exc:
            raise GraphError(400, "BadRequest", "odata.maxpagesize must be a number.") from exc
        return graph.calendar_view_delta(grant, _user(request), dict(request.query_params), zone=_zone(request),
                                         page_size=page_size, link=_link(request))

    async def create_event(request: Request, body: Any = Depends(_json_body), grant: AccessGrant = Depends(caller)):
        event = graph.create_event(grant, _user(request), request.path_params.get("calendar"), body)
        return JSONResponse(event.render(_zone(request)), status_code=201)

    async def get_event(request: Request, grant: AccessGrant = Depends(caller)):
        event = graph.get_event(grant, _user(request), request.path_params.get("calendar"), request.path_params["event"])
        return event.render(_zone(request), select=parse_select(request.query_params.get("$select")))

    async def update_event(request: Request, body: Any = Depends(_json_body), grant: AccessGrant = Depends(caller)):
        event = graph.update_event(grant, _user(request), request.path_params.get("calendar"),
                                   request.path_params["event"], body)
        return event.render(_zone(request))

    async def delete_event(request: Request, grant: AccessGrant = Depends(caller)) -> Response:
        graph.delete_event(grant, _user(request), request.path_params.get("calendar"), request.path_params["event"])
        return Response(status_code=204)

    mailbox_route("/calendar/getSchedule", get_schedule, methods=["POST"])
    mailbox_route("/calendarView/delta", calendar_view_delta, methods=["GET"])
    for calendar in ("", "/calendar", "/calendars/{calendar}"):
        mailbox_route(f"{calendar}/calendarView", calendar_view, methods=["GET"])
        mailbox_route(f"{calendar}/events", create_event, methods=["POST"], status_code=201)
        mailbox_route(f"{calendar}/events/{{event}}", get_event, methods=["GET"])
        mailbox_route(f"{calendar}/events/{{event}}", update_event, methods=["PATCH"])
        mailbox_route(f"{calendar}/events/{{event}}", delete_event, methods=["DELETE"], status_code=204)

    # Creating a subscription blocks on the validation handshake, so it runs in the thread pool (a plain def).
    @app.post("/v1.0/subscriptions", status_code=201)
    def create_subscription(body: Any = Depends(_json_body), grant: AccessGrant = Depends(caller)) -> JSONResponse:
        return JSONResponse(graph.create_subscription(grant, body), status_code=201)

    @app.get("/v1.0/subscriptions")
    def list_subscriptions(grant: AccessGrant = Depends(caller)) -> dict:
        return {"value": graph.subscriptions.list(client_id=grant.client_id)}

    @app.get("/v1.0/subscriptions/{subscription_id}")
    def get_subscription(subscription_id: str, grant: AccessGrant = Depends(caller)) -> dict:
        return graph.subscriptions.get(subscription_id, client_id=grant.client_id)

    @app.patch("/v1.0/subscriptions/{subscription_id}")
    def renew_subscription(subscription_id: str, body: Any = Depends(_json_body),
                           grant: AccessGrant = Depends(caller)) -> dict:
        return graph.subscriptions.update(subscription_id, body, client_id=grant.client_id)

    @app.delete("/v1.0/subscriptions/{subscription_id}", status_code=204)
    def delete_subscription(subscription_id: str, grant: AccessGrant = Depends(caller)) -> Response:
        graph.subscriptions.delete(subscription_id, client_id=grant.client_id)
        return Response(status_code=204)


async def _json_body(request: Request) -> Any:
    try:
        body = await request.json()
    except ValueError as exc:
        raise GraphError(400, "BadRequest", _UNREADABLE) from exc
    if not isinstance(body, dict):
        raise GraphError(400, "BadRequest", _UNREADABLE)
    return body


def _user(request: Request) -> str | None:
    return request.path_params.get("user")


def _prefer(request: Request) -> dict[str, str]:
    return graph_time.preferences(request.headers.getlist("Prefer"))


def _zone(request: Request) -> str:
    name = _prefer(request).get("outlook.timezone") or "UTC"
    try:
        graph_time.zone(name)
    except graph_time.UnsupportedZone as exc:
        raise GraphError(400, "TimeZoneNotSupportedException", "A valid TimeZone value must be specified. The "
                         f"following TimeZone value is not supported: '{name}'.") from exc
    return name


def _link(request: Request) -> str:
    return str(request.url.replace(query=""))
