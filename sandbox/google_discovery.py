"""Requests to the Calendar emulator checked against Google's own description of the API.

google-api-python-client ships the Calendar v3 discovery document (calendar.v3.json): every
method's HTTP method, path template, parameters (location, type, enum, bounds, repeated,
required) and request schema. `add_request_validation(app)` finds the method each request under
`/calendar/v3/` calls and answers 400 in Google's shape for what does not fit it, before any
route runs, so a connector that builds a request wrongly fails here as it would at Google:

- a query parameter the method does not take (system parameters such as `alt` and `fields` are
  taken by every method): `Invalid JSON payload received. Unknown name "x": Cannot bind query
  parameter. ...`, reason `invalid`;
- a required parameter left out: `Required parameter: text`, reason `required`;
- a value of the wrong type, outside its bounds or its enum, or repeated where the parameter
  is not: `Invalid Value`, reason `invalid`;
- in a JSON body, a field its schema does not have, at any depth: `Invalid JSON payload
  received. Unknown name "x" at 'resource.start': Cannot find field.`, and a value of the
  wrong JSON type: `Invalid value at 'resource.summary' (TYPE_STRING), 5`.

A request whose method and path match no method is left to the routes (404 or 405).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qsl, unquote

from fastapi import FastAPI, Request, Response

from sandbox.google_oauth import GoogleApiError

_BODY = "resource"  # the name calendar.v3.json gives every request body (`request.parameterName`)
_PROTO_TYPES = {("string", None): "TYPE_STRING", ("string", "date"): "TYPE_STRING",
                ("string", "date-time"): "TYPE_STRING", ("string", "int64"): "TYPE_INT64",
                ("integer", "int32"): "TYPE_INT32", ("boolean", None): "TYPE_BOOL"}


@dataclass(frozen=True)
class Method:
    id: str
    http_method: str
    segments: tuple[str, ...]
    parameters: dict[str, dict]
    request: str | None

    def match(self, segments: list[str]) -> dict[str, str] | None:
        """The path parameters, if `segments` fit this method's template."""
        if len(segments) != len(self.segments):
            return None
        values = {}
        for template, segment in zip(self.segments, segments):
            if template.startswith("{"):
                if not segment:
                    return None
                values[template.strip("{}")] = segment
            elif template != segment:
                return None
        return values

    @property
    def literal_segments(self) -> int:
        return sum(not segment.startswith("{") for segment in self.segments)


class Discovery:
    """One discovery document: its methods, system parameters and schemas."""

    def __init__(self, document: dict) -> None:
        self.root = "/" + document["servicePath"].strip("/")
        self.system_parameters: dict[str, dict] = document["parameters"]
        self.schemas: dict[str, dict] = document["schemas"]
        self.methods = list(_methods(document["resources"]))

    @classmethod
    @functools.cache
    def calendar(cls) -> "Discovery":
        """The Calendar v3 document bundled with the google-api-python-client the connector uses."""
        path = files("googleapiclient") / "discovery_cache" / "documents" / "calendar.v3.json"
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def method_for(self, http_method: str, raw_path: str) -> Method | None:
        if not raw_path.startswith(self.root + "/"):
            return None
        segments = [unquote(part) for part in raw_path[len(self.root) + 1:].split("/")]
        fitting = [m for m in self.methods if m.http_method == http_method and m.match(segments) is not None]
        return max(fitting, key=lambda m: m.literal_segments, default=None)

    def check(self, method: Method, query: list[tuple[str, str]], body: bytes) -> None:
        """GoogleApiError (400) for the first thing in the query or body `method` does not take."""
        self._check_query(method, query)
        if method.request and body.strip():
            try:
                resource = json.loads(body)
            except ValueError:
                return  # the route answers Google's parseError
            self._check_value(resource, {"$ref": method.request}, _BODY)

    def _check_query(self, method: Method, query: list[tuple[str, str]]) -> None:
        known = method.parameters | self.system_parameters
        for name, _ in query:
            if name not in known or known[name]["location"] != "query":
                raise GoogleApiError(400, "invalid", f'Invalid JSON payload received. Unknown name "{name}": Cannot '
                                     f"bind query parameter. Field '{name}' could not be found in request message.",
                                     location=name)
        given = {name for name, _ in query}
        for name, spec in method.parameters.items():
            if spec.get("required") and spec["location"] == "query" and name not in given:
                raise GoogleApiError(400, "required", f"Required parameter: {name}", location=name)
        for name in given:
            values = [value for key, value in query if key == name]
            if (len(values) > 1 and not known[name].get("repeated")) or not all(
                    _fits(value, known[name]) for value in values):
                raise GoogleApiError(400, "invalid", "Invalid Value", location=name)

    def _check_value(self, value: Any, schema: dict, where: str) -> None:
        if value is None:
            return  # JSON null leaves a field unset
        if "$ref" in schema:
            schema = self.schemas[schema["$ref"]]
        kind = schema.get("type")
        if kind == "object":
            if not isinstance(value, dict):
                raise _invalid_value(where, "TYPE_MESSAGE", value)
            properties, extra = schema.get("properties", {}), schema.get("additionalProperties")
            for name, item in value.items():
                if name in properties:
                    self._check_value(item, properties[name], f"{where}.{name}")
                elif extra is not None:
                    self._check_value(item, extra, f"{where}[{name}]")
                else:
                    raise GoogleApiError(400, "invalid", f'Invalid JSON payload received. Unknown name "{name}" at '
                                         f"'{where}': Cannot find field.")
        elif kind == "array":
            if not isinstance(value, list):
                raise _invalid_value(where, "TYPE_LIST", value)
            for index, item in enumerate(value):
                self._check_value(item, schema["items"], f"{where}[{index}]")
        elif kind in ("string", "integer", "boolean") and not _json_fits(value, kind, schema.get("format")):
            raise _invalid_value(where, _PROTO_TYPES.get((kind, schema.get("format")), "TYPE_STRING"), value)


def add_request_validation(app: FastAPI, discovery: Discovery | None = None) -> None:
    """Refuse, in Google's shape, every request under the API's root that its discovery document refuses."""
    document = discovery or Discovery.calendar()

    @app.middleware("http")
    async def checked_against_discovery(request: Request, call_next: Callable) -> Response:
        raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        method = document.method_for(request.method, raw_path)
        if method is not None:
            query = parse_qsl(request.scope["query_string"].decode("latin-1"), keep_blank_values=True)
            try:
                document.check(method, query, await request.body())
            except GoogleApiError as exc:
                return exc.response()
        return await call_next(request)


def _methods(resources: dict) -> Iterator[Method]:
    for resource in resources.values():
        for spec in resource.get("methods", {}).values():
            yield Method(spec["id"], spec["httpMethod"], tuple(spec["path"].split("/")), spec.get("parameters", {}),
                         spec.get("request", {}).get("$ref"))
        yield from _methods(resource.get("resources", {}))


def _fits(value: str, spec: dict) -> bool:
    """Whether a query-string value is one the parameter takes."""
    if "enum" in spec:
        return value in spec["enum"]
    if spec["type"] == "boolean":
        return value.lower() in ("true", "false")
    if spec["type"] == "integer":
        try:
            number = int(value)
        except ValueError:
            return False
        return int(spec.get("minimum", number)) <= number <= int(spec.get("maximum", number))
    if spec.get("format") == "date-time":
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return False
    return True


def _json_fits(value: Any, kind: str, fmt: str | None) -> bool:
    """Whether a JSON value is one proto3's JSON mapping reads into a field of this type."""
    if kind == "boolean":
        return isinstance(value, bool)
    numeric = kind == "integer" or fmt == "int64"
    if numeric:
        if isinstance(value, int) and not isinstance(value, bool):
            return True
        return isinstance(value, str) and value.lstrip("-").isdigit()
    return isinstance(value, str)


def _invalid_value(where: str, proto_type: str, value: Any) -> GoogleApiError:
    return GoogleApiError(400, "invalid", f"Invalid value at '{where}' ({proto_type}), {json.dumps(value)}")
