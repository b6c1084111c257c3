"""Every operation of ``/openapi.json`` declares its answers: each success with its JSON schema
(204: no body) and its errors as ``{"detail": ...}``, so a client generated from the document
is typed.  A route declared without its answer's schema fails when the app is built.  (That the
schemas describe what the routes really answer: tests/e2e/test_openapi_client.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from etrans.api import openapi
from etrans.api.app import ApiDependencies, create_app
from etrans.api.routing import Api, ApiServices
from etrans.app.bus import MessageBus
from etrans.domain.api_keys import Permission
from tests.unit.fakes_sending import FakeIdempotencyStore


def _document() -> dict[str, Any]:
    services = ApiServices(bus=MessageBus(), idempotency=FakeIdempotencyStore(),
                           testing_routes=True)
    app = create_app(ApiDependencies(services=services))
    api = app.extensions["etrans_api"]
    assert isinstance(api, Api)
    return openapi.build(api)


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, methods in document["paths"].items()
            for method, op in methods.items()]


def test_every_operation_declares_its_answers():
    document = _document()
    operations = _operations(document)
    # The spec's 24 operations and etrans's additions (batch, suppressions, webhooks, healthz,
    # templates, an email's schedule).
    assert len(operations) == 43
    untyped = []
    for method, path, op in operations:
        responses = op["responses"]
        successes = [code for code in responses if code.startswith("2")]
        assert successes, (method, path)
        for code in successes:
            if code == "204":
                assert "content" not in responses[code], (method, path)
            elif "schema" not in responses[code].get("content", {}).get("application/json", {}):
                untyped.append((method, path, code))
        errors = [code for code in responses if code[0] in "45"]
        if "security" in op:
            assert {"401", "403"} <= set(errors), (method, path)
        for code in errors:
            schema = responses[code]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, code)
    assert untyped == []


def test_the_answers_are_named_components():
    """Named components are what a client generator turns into model classes."""
    document = _document()
    schemas = document["components"]["schemas"]
    for method, path, op in _operations(document):
        for code, answer in op["responses"].items():
            if code.startswith("2") and code != "204":
                schema = answer["content"]["application/json"]["schema"]
                assert set(schema) == {"$ref"}, (method, path, code)
                assert schema["$ref"].removeprefix("#/components/schemas/") in schemas


def test_healthz_is_in_the_document():
    operation = _document()["paths"]["/healthz"]["get"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Health"}
    assert "security" not in operation


def test_a_route_without_its_answer_schema_is_refused():
    app = create_app(ApiDependencies(routers=[]))
    api = app.extensions["etrans_api"]
    with pytest.raises(TypeError, match="response="):
        api.route("GET", "/things", permission=Permission.read_only, summary="Things",
                  tag="Things")
    api.route("DELETE", "/things/{id}", permission=Permission.full_access, summary="Delete",
              tag="Things", success=(204,))  # no body: nothing to declare
