"""The routes' dependencies are one typed object: an app whose routers need it and lack it fails
when it is built, instead of serving without those routes (a silent 404)."""

from __future__ import annotations

import pytest

from etrans.api.app import ApiDependencies, create_app
from etrans.api.routing import ApiServices
from etrans.app.bus import MessageBus
from tests.unit.fakes_sending import FakeIdempotencyStore


def _paths(app: object) -> set[str]:
    return {rule.rule for rule in app.url_map.iter_rules()}  # type: ignore[attr-defined]


def test_routers_without_their_services_fail_when_the_app_is_built():
    with pytest.raises(TypeError, match="ApiServices"):
        create_app(ApiDependencies())  # every router, no services


def test_an_app_without_routers_needs_no_services():
    assert "/healthz" in _paths(create_app(ApiDependencies(routers=[])))


def test_every_route_is_there_with_the_services_and_testing_routes_only_when_asked():
    services = ApiServices(bus=MessageBus(), idempotency=FakeIdempotencyStore())
    paths = _paths(create_app(ApiDependencies(services=services)))
    assert {"/emails", "/logs", "/domains", "/api-keys", "/senders"} <= paths
    assert "/testing/set-pack" not in paths
    testing = ApiServices(bus=MessageBus(), idempotency=FakeIdempotencyStore(),
                          testing_routes=True)
    assert "/testing/set-pack" in _paths(create_app(ApiDependencies(services=testing)))
