"""A database that stops answering (PostgreSQL restarting, a failover, max_connections) gives
every route 503 with Retry-After, never 500: in-process, wired as ``etrans serve`` wires it,
against real PostgreSQL whose databases this test closes to new connections and then reopens."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.integration.sending_api import SendingApi, email, open_sending_api


@pytest.fixture
async def api(etrans_env: Any, billing_db: Any) -> Any:
    async with open_sending_api(etrans_env, billing_db, all_routes=True) as built:
        yield built


def _databases(api: SendingApi) -> list[str]:
    return [api.usend.engine.url.database, api.billing.engine.url.database]


def _allow(admin: str, names: list[str], allowed: bool) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
            if not allowed:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))


async def test_every_route_answers_503_while_the_databases_refuse(
        api: SendingApi, postgres_admin_url: str) -> None:
    user, _, domain = api.sender()
    headers = api.bearer(user)
    sent = await api.client.post("/emails", json=email(domain), headers=headers)
    assert sent.status_code == 200
    message_id = (await sent.get_json())["id"]
    names = _databases(api)
    _allow(postgres_admin_url, names, False)
    try:
        answers = {}
        for method, path, body in [
            ("GET", "/emails", None), ("GET", f"/emails/{message_id}", None),
            ("GET", "/domains", None), ("GET", "/api-keys", None),
            ("GET", "/templates", None), ("GET", "/suppressions", None),
            ("GET", "/webhooks", None), ("POST", "/emails", email(domain)),
            ("POST", "/templates", {"name": "t", "subject": "s", "text": "x"}),
            ("DELETE", f"/emails/{message_id}/schedule", None),
        ]:
            response = await api.client.open(path, method=method, json=body, headers=headers)
            answer = await response.get_json()
            answers[f"{method} {path}"] = (response.status_code,
                                           response.headers.get("Retry-After"), answer)
        wrong = {k: v for k, v in answers.items() if v[0] != 503 or v[1] is None
                 or not isinstance(v[2], dict) or not v[2].get("detail")}
        assert not wrong, "\n".join(f"{k}: {v}" for k, v in wrong.items())
    finally:
        _allow(postgres_admin_url, names, True)
    again = await api.client.get(f"/emails/{message_id}", headers=headers)
    assert again.status_code == 200
