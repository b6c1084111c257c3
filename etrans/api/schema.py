"""A small schema layer: one declaration validates a request and produces its JSON Schema.

Why not pydantic: the API needs (1) FastAPI-compatible error items ``{"loc", "msg", "type"}``
with the spec's 400, (2) checks pydantic has no vocabulary for (header injection, the address
grammar of :mod:`etrans.domain.addresses`) shown in the OpenAPI document as patterns, and (3) the
OpenAPI document to say *exactly* what the validator accepts, so that schemathesis can hold us to
it.  A few hundred lines of plain code do all three with no dependency.

Specs are immutable dataclasses: :class:`String`, :class:`Integer`, :class:`Boolean`,
:class:`Array`, :class:`Object` (with :class:`Prop`), :class:`MapOf`, :class:`AnyJson`.
``spec.validate(value)`` returns the value (strings/ints as given, objects as plain dicts with
absent optional fields left out) or raises :class:`SchemaError` listing *every* problem.
``spec.json_schema()`` is the JSON Schema (OpenAPI 3.1 dialect).  :class:`QueryParam` declares
a query string argument (values are text; integers are parsed).

Every string a spec accepts is free of C0 control characters (U+0000..U+001F; TAB, CR and LF
only where text is free: ``String(text=True)``); the bounds every request is held to before its
route sees it (JSON size and depth, path parameters, query strings) are in
:mod:`etrans.api.request_input`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from etrans.domain.timestamps import parse_timestamp

Loc = tuple[str | int, ...]
# A check beyond the JSON Schema keywords: returns an error message or None.
Check = Callable[[Any], str | None]

NO_LINE_BREAKS = r"^[^\r\n]*$"

_CONTROL = re.compile(r"[\x00-\x1f]")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # TAB, LF, CR allowed


def control_character(value: str, *, text: bool = False) -> str | None:
    """The error message when ``value`` holds a C0 control character (TAB, CR and LF are
    allowed when ``text``), else None."""
    found = (_CONTROL_IN_TEXT if text else _CONTROL).search(value)
    if found is None:
        return None
    return f"must not contain control characters (U+{ord(found.group()):04X} found)"


class SchemaError(ValueError):
    """Validation failed: ``errors`` is a list of ``{"loc": [...], "msg": str, "type": str}``."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))


class ErrorList:
    """The problems found in one value, in the order met (a spec's ``check`` adds to it)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, loc: Loc, msg: str, kind: str) -> None:
        self.items.append({"loc": list(loc), "msg": msg, "type": kind})


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


class Spec:
    description: str | None = None

    def json_schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def check(self, value: Any, loc: Loc, errors: ErrorList) -> Any:
        raise NotImplementedError

    def validate(self, value: Any, loc: Loc = ()) -> Any:
        errors = ErrorList()
        result = self.check(value, loc, errors)
        if errors.items:
            raise SchemaError(errors.items)
        return result

    def _described(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self.description:
            schema["description"] = self.description
        return schema


@dataclass(frozen=True)
class String(Spec):
    min_length: int = 0
    max_length: int | None = None
    pattern: str | None = None  # a JSON-Schema-compatible regular expression (searched)
    enum: tuple[str, ...] | None = None
    format: str | None = None
    checks: tuple[Check, ...] = ()
    pattern_message: str = "has an invalid format"
    description: str | None = None
    example: str | None = None
    text: bool = False  # free text: TAB, CR and LF allowed (other control characters never)

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string"}
        if self.min_length:
            schema["minLength"] = self.min_length
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        if self.pattern:
            schema["pattern"] = self.pattern
        if self.enum:
            schema["enum"] = list(self.enum)
        if self.format:
            schema["format"] = self.format
        if self.example is not None:
            schema["example"] = self.example
        return self._described(schema)

    def check(self, value: Any, loc: Loc, errors: ErrorList) -> Any:
        if not isinstance(value, str):
            errors.add(loc, f"must be a string, got {_type_name(value)}", "string_type")
            return None
        problem = control_character(value, text=self.text)
        if problem:
            errors.add(loc, problem, "value_error")
            return None
        if len(value) < self.min_length:
            msg = "must not be empty" if self.min_length == 1 else \
                f"must be at least {self.min_length} characters"
            errors.add(loc, msg, "string_too_short")
            return None
        if self.max_length is not None and len(value) > self.max_length:
            errors.add(loc, f"must be at most {self.max_length} characters", "string_too_long")
            return None
        if self.enum and value not in self.enum:
            errors.add(loc, f"must be one of {', '.join(self.enum)}", "enum")
            return None
        for check in self.checks:
            problem = check(value)
            if problem:
                errors.add(loc, problem, "value_error")
                return None
        if self.pattern and re.search(self.pattern, value) is None:
            errors.add(loc, self.pattern_message, "string_pattern_mismatch")
            return None
        return value


@dataclass(frozen=True)
class Integer(Spec):
    minimum: int | None = None
    maximum: int | None = None
    description: str | None = None

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer"}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return self._described(schema)

    def check(self, value: Any, loc: Loc, errors: ErrorList) -> Any:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            errors.add(loc, f"must be an integer, got {_type_name(value)}", "int_type")
            return None
        if self.minimum is not None and value < self.minimum:
            errors.add(loc, f"must be at least {self.minimum}", "greater_than_equal")
            return None
        if self.maximum is not None and value > self.maximum:
            errors.add(loc, f"must be at most {self.maximum}", "less_than_equal")
            return None
        return value


@dataclass(frozen=True)
class Boolean(Spec):
    description: str | None = None

    def json_schema(self) -> dict[str, Any]:
        return self._described({"type": "boolean"})

    def check(self, value: Any, loc: Loc, errors: ErrorList) -> Any:
        if not isinstance(value, bool):
            errors.add(loc, f"must be a boolean, got {_type_name(value)}", "bool_type")
            return None
        return value


@dataclass(frozen=True)
class AnyJson(Spec):
    """Any JSON value; its strings and keys, at any depth, hold no control characters (TAB, CR
    and LF allowed in strings when ``text``; not checked when ``checked`` is False: the value is
    validated later by another spec).  Depth is bounded by :func:`decode_json`."""

    description: str | None = None
    text: bool = False
    checked: bool = True

    def json_schema(self) -> dict[str, Any]:
        return self._described({})

    def check(self, value: Any, loc: Loc, errors: ErrorList) -> Any:
        if not self.checked:
            return value
        if isinstance(value, str):
            problem = control_character(value, text=self.text)
            if problem:
                errors.add(loc, problem, "value_error")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.check(item, (*loc, index), errors)
        elif isinstance(value, dict):
            for key, item in value.items():
                problem = control_character(key)
                if problem:
                    errors.add((*loc, key), f"key {problem}", "value_error")
                self.check(item, (*loc, key), errors)
        return value


@dataclass(frozen=True)
class Array(Spec):
    items: Spec
    min_items: int = 0
    max_items: int | None = None
    description: str | None = None

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "array", "items": self.items.json_schema()}
        if self.min_items:
            schema["minItems"] = self.min_items
        if self.max_items is not None:
            schema["maxItems"] = self.max_items
        return self._described(schema)

    def check(self, value: Any, loc: Loc, errors: ErrorList) -> Any:
        if not isinstance(value, list):
            errors.add(loc, f"must be an array, got {_type_name(value)}", "list_type")
            return None
        if len(value) < self.min_items:
            msg = "must not be empty" if self.min_items == 1 else \
                f"must have at least {self.min_items} items"
            errors.add(loc, msg, "too_short")
            return None
        if self.max_items is not None and len(value) > self.max_items:
            errors.add(loc, f"must have at most {self.max_items} items", "too_long")
            return None
        return [self.items.check(item, (*loc, i), errors) for i, item in enumerate(value)]


@dataclass(frozen=True)
class Prop:
    spec: Spec
    required: bool = False
    nullable: bool = False  # null is accepted and means "absent"


@dataclass(frozen=True)
class Object(Spec):
    properties: Mapping[str, Prop]
    name: str | None = None  # the components/schemas name in the OpenAPI document
    description: str | None = None
    max_properties: int | None = None

    def json_schema(self) -> dict[str, Any]:
        props: dict[str, Any] = {}
        for key, prop in self.properties.items():
            sub = prop.spec.json_schema()
            if prop.nullable:
                sub = {"anyOf": [sub, {"type": "null"}]}
            props[key] = sub
        schema: dict[str, Any] = {"type": "object", "properties": props,
                                  "additionalProperties": False}
        required = [k for k, p in self.properties.items() if p.required]
        if required:
            schema["required"] = required
        if self.name:
            schema["title"] = self.name
        return self._described(schema)

    def check(self, value: Any, loc: Loc, errors: ErrorList) -> Any:
        if not isinstance(value, dict):
            errors.add(loc, f"must be an object, got {_type_name(value)}", "dict_type")
            return None
        result: dict[str, Any] = {}
        for key, prop in self.properties.items():
            if key not in value or (value[key] is None and prop.nullable):
                if prop.required:
                    errors.add((*loc, key), "field required", "missing")
                continue
            result[key] = prop.spec.check(value[key], (*loc, key), errors)
        for key in value:
            if key not in self.properties:
                errors.add((*loc, key), "unknown field", "extra_forbidden")
        return result


@dataclass(frozen=True)
class MapOf(Spec):
    """An object with free keys (matching ``key``) and values of one spec."""

    values: Spec
    key: String = field(default_factory=String)
    max_properties: int | None = None
    description: str | None = None

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "object",
                                  "additionalProperties": self.values.json_schema()}
        key_schema = self.key.json_schema()
        if len(key_schema) > 1:
            schema["propertyNames"] = key_schema
        if self.max_properties is not None:
            schema["maxProperties"] = self.max_properties
        return self._described(schema)

    def check(self, value: Any, loc: Loc, errors: ErrorList) -> Any:
        if not isinstance(value, dict):
            errors.add(loc, f"must be an object, got {_type_name(value)}", "dict_type")
            return None
        if self.max_properties is not None and len(value) > self.max_properties:
            errors.add(loc, f"must have at most {self.max_properties} entries", "too_long")
            return None
        result: dict[str, Any] = {}
        for key, item in value.items():
            before = len(errors.items)
            self.key.check(key, (*loc, key), errors)
            if len(errors.items) == before:
                result[key] = self.values.check(item, (*loc, key), errors)
        return result


# -- query strings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryParam:
    spec: String | Integer
    default: Any = None
    description: str | None = None

    def openapi(self, name: str) -> dict[str, Any]:
        schema = self.spec.json_schema()
        if self.default is not None:
            schema["default"] = self.default
        param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
        if self.description:
            param["description"] = self.description
        return param


def _timestamp(value: str) -> str | None:
    if not value:
        return None  # an empty filter is no filter
    try:
        parse_timestamp(value)
    except ValueError as exc:
        return str(exc)
    return None


# ISO-8601, no offset = UTC; parsed and range-checked here (an offset that moves the moment out
# of datetime's range raised OverflowError in the use case: a 500).  The value stays text.
TIMESTAMP = String(max_length=64, checks=(_timestamp,), format="date-time",
                   pattern_message="must be an ISO-8601 timestamp")


def first_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """One readable line for an error list: ``"to.0: invalid email address 'x'"``."""
    first = errors[0]
    loc = [str(part) for part in first["loc"] if part not in ("body", "query")]
    where = ".".join(loc)
    return f"{where}: {first['msg']}" if where else str(first["msg"])
