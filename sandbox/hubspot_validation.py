"""Request bodies checked against the request models of hubspot-api-client, as HubSpot checks them.

HubSpot reads JSON with Jackson: a field the model does not have, a value of the wrong JSON
type, a missing required attribute or an enumeration value outside the model's list answers
400 `{status: "error", message: "Invalid input JSON on line L, column C: ...", correlationId}`
(no category, as in the answers users have posted; the sandbox names the position of the
offending key as best it can). The models' `openapi_types`, `attribute_map` and their
validating setters are the schema, so the sandbox accepts what the vendor's own SDK may send.

Two documented deviations from the generated types are honoured: search `sorts` take
`{propertyName, direction}` objects as well as strings, and property values may be JSON
numbers or booleans (Jackson turns scalars into strings).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from hubspot.crm.associations.v4 import models as association_models
from hubspot.crm.associations.v4.configuration import Configuration as AssociationsConfiguration
from hubspot.crm.objects import models as object_models
from hubspot.crm.objects.configuration import Configuration as ObjectsConfiguration
from hubspot.crm.properties import models as property_models
from hubspot.crm.properties.configuration import Configuration as PropertiesConfiguration

from sandbox.hubspot_properties import HubSpotError

_SCALARS = (str, int, float, bool)
_OVERRIDES = {("PublicObjectSearchRequest", "sorts"): "list[object]"}
_JAVA = {"str": "java.lang.String", "int": "int", "bool": "boolean", "float": "double",
         "datetime": "java.time.Instant"}


@dataclass(frozen=True)
class RequestModel:
    """One generated request model, with the package its nested model names resolve in."""

    cls: type
    package: ModuleType
    configuration: Any

    @property
    def name(self) -> str:
        return self.cls.__name__


def _model(package: ModuleType, configuration_class: type, name: str) -> RequestModel:
    configuration = configuration_class()
    configuration.client_side_validation = True
    return RequestModel(getattr(package, name), package, configuration)


OBJECT_CREATE = _model(object_models, ObjectsConfiguration, "SimplePublicObjectInputForCreate")
OBJECT_UPDATE = _model(object_models, ObjectsConfiguration, "SimplePublicObjectInput")
SEARCH = _model(object_models, ObjectsConfiguration, "PublicObjectSearchRequest")
BATCHES = {"create": _model(object_models, ObjectsConfiguration, "BatchInputSimplePublicObjectBatchInputForCreate"),
           "update": _model(object_models, ObjectsConfiguration, "BatchInputSimplePublicObjectBatchInput"),
           "upsert": _model(object_models, ObjectsConfiguration, "BatchInputSimplePublicObjectBatchInputUpsert"),
           "read": _model(object_models, ObjectsConfiguration, "BatchReadInputSimplePublicObjectId"),
           "archive": _model(object_models, ObjectsConfiguration, "BatchInputSimplePublicObjectId")}
PROPERTY_CREATE = _model(property_models, PropertiesConfiguration, "PropertyCreate")
GROUP_CREATE = _model(property_models, PropertiesConfiguration, "PropertyGroupCreate")
ASSOCIATE_DEFAULT = _model(association_models, AssociationsConfiguration, "BatchInputPublicDefaultAssociationMultiPost")
ASSOCIATIONS_READ = _model(association_models, AssociationsConfiguration, "BatchInputPublicFetchAssociationsBatchRequest")


class _Invalid(Exception):
    def __init__(self, detail: str, near: str | None) -> None:
        super().__init__(detail)
        self.near = near


def parse_body(raw: bytes, model: RequestModel) -> dict:
    """The JSON object sent, once it fits `model`; HubSpot's 400 VALIDATION_ERROR otherwise."""
    text = raw.decode("utf-8", errors="replace")
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _error((exc.lineno, exc.colno), f"Unexpected character or end of input ({exc.msg})") from None
    try:
        _checked(body, model.name, model)
    except _Invalid as invalid:
        raise _error(_position(text, invalid.near), str(invalid)) from None
    return body


def _error(position: tuple[int, int], detail: str) -> HubSpotError:
    line, column = position
    return HubSpotError(400, f"Invalid input JSON on line {line}, column {column}: {detail}", None)


def _position(text: str, near: str | None) -> tuple[int, int]:
    offset = text.find(json.dumps(near)) if near is not None else -1
    offset = max(offset, 0)
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _checked(value: Any, type_name: str, model: RequestModel, key: str | None = None) -> None:
    if type_name == "object":
        return
    if type_name.startswith("list["):
        if not isinstance(value, list):
            raise _mismatch(type_name, value, model, key)
        for item in value:
            _checked(item, type_name[5:-1], model, key)
    elif type_name.startswith(("dict(", "dict[")):
        if not isinstance(value, dict) or not all(v is None or isinstance(v, _SCALARS) for v in value.values()):
            raise _mismatch(type_name, value, model, key)
    elif type_name in _JAVA:
        if not _scalar_fits(value, type_name):
            raise _mismatch(type_name, value, model, key)
    else:
        _checked_model(value, getattr(model.package, type_name), model, key)


def _checked_model(value: Any, cls: type, model: RequestModel, key: str | None) -> None:
    if not isinstance(value, dict):
        raise _mismatch(cls.__name__, value, model, key)
    fields = {json_name: attribute for attribute, json_name in cls.attribute_map.items()}
    present = {}
    for name, item in value.items():
        attribute = fields.get(name)
        if attribute is None:
            raise _Invalid(f'Unrecognized field "{name}" (class {cls.__name__}), not marked as ignorable', name)
        if item is not None:
            _checked(item, _OVERRIDES.get((cls.__name__, name), cls.openapi_types[attribute]), model, name)
            present[attribute] = item
    try:
        cls(**present, local_vars_configuration=model.configuration)
    except ValueError as exc:
        raise _refusal(cls, str(exc), value, key) from None


def _refusal(cls: type, message: str, value: dict, key: str | None) -> _Invalid:
    attribute = message.split("`")[1] if "`" in message else "?"
    json_name = cls.attribute_map.get(attribute, attribute)
    allowed = re.search(r"must be one of (\[.*\])", message)
    if allowed and value.get(json_name) is not None:
        values = ", ".join(json.loads(allowed.group(1).replace("'", '"')))
        return _Invalid(f"Cannot deserialize value of type `{cls.__name__}.{json_name}` from String "
                        f"\"{value[json_name]}\": not one of the values accepted for Enum class: [{values}]", json_name)
    return _Invalid(f"Cannot build {cls.__name__}, some of required attributes are not set [{json_name}]", key)


def _scalar_fits(value: Any, type_name: str) -> bool:
    if type_name == "bool":
        return isinstance(value, bool) or value in ("true", "false")
    if type_name == "int":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and value.lstrip("-").isdigit())
    if type_name == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _SCALARS)


def _mismatch(type_name: str, value: Any, model: RequestModel, key: str | None) -> _Invalid:
    found, token = {dict: ("Object", "START_OBJECT"), list: ("Array", "START_ARRAY"), str: ("String", "VALUE_STRING"),
                    bool: ("Boolean", "VALUE_TRUE" if value is True else "VALUE_FALSE"),
                    float: ("Floating-point", "VALUE_NUMBER_FLOAT")}.get(type(value), ("Integer", "VALUE_NUMBER_INT"))
    if type_name.startswith("list["):
        wanted = f"java.util.List<{_java(type_name[5:-1])}>"
    elif type_name.startswith(("dict(", "dict[")):
        wanted = "java.util.LinkedHashMap<java.lang.String,java.lang.String>"
    else:
        wanted = _java(type_name)
    return _Invalid(f"Cannot deserialize value of type `{wanted}` from {found} value (token `JsonToken.{token}`)", key)


def _java(type_name: str) -> str:
    return _JAVA.get(type_name, type_name)
