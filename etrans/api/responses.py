"""Building blocks of the response schemas of ``/openapi.json``: what a route answers, declared
next to the route with ``response=`` (:meth:`etrans.api.routing.Api.route`).

Responses are never validated by the server (the routes shape them from typed records); these
specs only describe them, and ``tests/e2e/test_openapi_client.py`` holds every route's real
answer to its schema, so the document cannot drift from the code.  In an answer every key is
always present: :func:`present` declares a key and its type, :func:`present_or_null` a key whose
value may be null (an unset timestamp, an optional name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from etrans.api.schema import (
    Array,
    Boolean,
    ErrorList,
    Integer,
    Loc,
    Object,
    Prop,
    Spec,
    String,
)

DATE_TIME = String(format="date-time", description="RFC 3339, UTC (`Z`)")
TEXT = String()
DELETED = Object(name="Deleted", properties={"id": Prop(TEXT, required=True),
                                              "deleted": Prop(Boolean(), required=True)})


def present(spec: Spec) -> Prop:
    """A key every answer holds, never null."""
    return Prop(spec, required=True)


def present_or_null(spec: Spec) -> Prop:
    """A key every answer holds, whose value may be null."""
    return Prop(spec, required=True, nullable=True)


@dataclass(frozen=True)
class Number(Spec):
    """A JSON number (a price)."""

    description: str | None = None

    def json_schema(self) -> dict[str, Any]:
        return self._described({"type": "number"})

    def check(self, value: Any, loc: Loc, errors: ErrorList) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors.add(loc, "must be a number", "float_type")
            return None
        return value


@dataclass(frozen=True)
class AnyOf(Spec):
    """One of several shapes (``anyOf``): the first that accepts the value."""

    choices: tuple[Spec, ...]
    description: str | None = None

    def json_schema(self) -> dict[str, Any]:
        return self._described({"anyOf": [choice.json_schema() for choice in self.choices]})

    def check(self, value: Any, loc: Loc, errors: ErrorList) -> Any:
        for choice in self.choices:
            attempt = ErrorList()
            result = choice.check(value, loc, attempt)
            if not attempt.items:
                return result
        errors.add(loc, "matches none of the allowed shapes", "union_tag_invalid")
        return None


EMPTY_OBJECT = Object(name="EmptyObject", properties={},
                      description="{} (nothing to show)")


def page_of(name: str, item: Spec, **extra: Prop) -> Object:
    """``{"data": [item, ...], "total", "page", "per_page"}``: a page of a list."""
    return Object(name=name, properties={
        "data": present(Array(item)), "total": present(Integer()), **extra,
        "page": present(Integer()), "per_page": present(Integer())})
