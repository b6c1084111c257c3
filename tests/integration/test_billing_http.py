"""The ``http`` billing gateway against a billing service inside the tests.

``FakeBillingService`` is a real HTTP server on loopback implementing ``docs/billing-gateway.md``
the way the billing system would: it writes the Billing DB (owner URL) and etrans reads it through
the SELECT-only role.  It can be told to fail (status) or hang (timeout) for the next calls.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from etrans.adapters.crypto.dkim_keys import generate_dkim_key_pair
from etrans.adapters.http.billing_gateway import BillingBadGateway, HttpBillingGateway
from etrans.adapters.sql import Database, make_engine
from etrans.adapters.sql.domains_repo import BillingTables
from etrans.adapters.sql.usend import DomainSubscriptionStatus
from etrans.errors import Forbidden, InvalidInput, NotFound, UpstreamUnavailable
from tests.integration.account_api import new_domain_name, open_api


class FakeBillingService:
    def __init__(self, owner_url: str) -> None:
        self.owner_url = owner_url
        self.requests: list[tuple[str, str, Any]] = []
        self.fail_status: int | None = None
        self.hang_seconds = 0.0
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: Any = None) -> None:
                data = json.dumps(body if body is not None else {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                service.requests.append((self.command, self.path, body))
                if service.hang_seconds:
                    time.sleep(service.hang_seconds)
                if service.fail_status is not None:
                    return self._reply(service.fail_status, {"detail": "billing says no"})
                status, answer = service.route(self.command, self.path, body)
                self._reply(status, answer)

            do_GET = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v4"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def sql(self, statement: str, *params: Any) -> Any:
        with psycopg.connect(self.owner_url, autocommit=True) as conn:
            return conn.execute(statement, params).fetchone()

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        path = path.split("?")[0].removeprefix("/v4")
        if method == "POST" and path == "/domains":
            row = self.sql("INSERT INTO domain (user_id, name, status) VALUES (%s, %s, 'pending')"
                           " RETURNING id", body["user_id"], body["domain"])
            self.sql("INSERT INTO dkim (domain_id, selector, public_key) VALUES (%s, %s, %s)"
                     " RETURNING id", row[0], body["dkim"]["selector"], body["dkim"]["public_key"])
            return 201, {"id": row[0]}
        if method == "POST" and path.endswith("/verified"):
            domain_id = int(path.split("/")[2])
            self.sql("UPDATE domain SET status='verified', verified_at=now() WHERE id=%s"
                     " RETURNING id", domain_id)
            return 200, {}
        if method == "DELETE" and path.startswith("/domains/"):
            self.sql("UPDATE domain SET deleted_at=now() WHERE id=%s RETURNING id",
                     int(path.split("/")[2]))
            return 200, {}
        if method == "POST" and path == "/subscriptions":
            user = self.sql("SELECT balance, is_owner FROM users WHERE id=%s", body["user_id"])
            if user is None or not user[1]:
                return 403, {"detail": "Only the account owner can subscribe"}
            if user[0] < Decimal(500000):
                return 403, {"detail": "Insufficient balance"}
            return 200, {"id": "sub-1"}
        if path.startswith("/payg/subscriptions"):
            return 200, {"id": "payg-1"}
        return 404, {"detail": "unknown"}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def billing_service(billing_db):
    service = FakeBillingService(billing_db.owner_url)
    yield service
    service.close()


@pytest.fixture
async def http_api(usend_db_url, redis_url, dns_server, billing_db, billing_service):
    reader = Database(make_engine(billing_db.readonly_url, pool_size=3, read_only=True),
                      name="billing_db")
    gateway = HttpBillingGateway(billing_service.url, timeout_seconds=0.5)
    async with open_api(usend_db_url=usend_db_url, redis_url=redis_url,
                        dns_address=dns_server.address, billing=gateway, reader_db=reader,
                        tables=BillingTables.external()) as built:
        yield built
    reader.dispose()


async def test_gateway_contract_and_error_mapping(billing_service, billing_seed):
    gateway = HttpBillingGateway(billing_service.url, timeout_seconds=0.3)
    user = billing_seed.user()
    domain_id = await gateway.create_domain(user_id=user, name="a.example", dkim_selector="dkim",
                                            dkim_public_key="PUB", dkim_private_key_pem=b"PEM")
    method, path, body = billing_service.requests[-1]
    assert (method, path) == ("POST", "/v4/domains")
    assert body == {"user_id": user, "domain": "a.example",
                    "dkim": {"selector": "dkim", "public_key": "PUB", "private_key_pem": "PEM"}}
    assert domain_id > 0
    await gateway.mark_domain_verified(user_id=user, domain_id=domain_id,
                                       verified_at=datetime(2026, 3, 10, tzinfo=UTC))
    assert billing_service.requests[-1][1:] == (
        f"/v4/domains/{domain_id}/verified",
        {"user_id": user, "verified_at": "2026-03-10T00:00:00+00:00"})
    with pytest.raises(Forbidden, match="Insufficient balance"):
        await gateway.create_subscription(user_id=user, domain_id=domain_id, pack_code="X",
                                          pack_name="X", price=1.0)
    for status, error, code in ((400, InvalidInput, 400), (409, InvalidInput, 400),
                                (403, Forbidden, 403), (404, NotFound, 404),
                                (500, BillingBadGateway, 502), (503, BillingBadGateway, 502),
                                (401, BillingBadGateway, 502)):
        billing_service.fail_status = status
        with pytest.raises(error) as caught:
            await gateway.cancel_payg_subscription(user_id=user, domain_id=domain_id)
        assert caught.value.status_code == code
    billing_service.fail_status = None
    billing_service.hang_seconds = 1.0
    with pytest.raises(UpstreamUnavailable, match="timeout") as caught:
        await gateway.delete_domain(user_id=user, domain_id=domain_id)
    assert caught.value.status_code == 503
    billing_service.hang_seconds = 0
    unreachable = HttpBillingGateway("http://127.0.0.1:9/v4", timeout_seconds=0.5)
    with pytest.raises(UpstreamUnavailable) as caught:
        await unreachable.delete_domain(user_id=user, domain_id=domain_id)
    assert caught.value.status_code == 503
    await gateway.aclose()


async def test_http_mode_end_to_end_reads_the_billing_db(http_api, billing_service,
                                                         billing_seed, dns_server):
    user = billing_seed.user(balance=600000)
    name = new_domain_name()
    status, created = await http_api.call("POST", "/domains", user, json={"domain": name})
    assert status == 200, created
    status, got = await http_api.call("GET", f"/domains/{created['id']}", user)
    assert status == 200
    assert got["dns_records"] == created["dns_records"]
    spf, mx, dkim = created["dns_records"]
    dns_server.set_records(name, "TXT", [f'"{spf["value"]}"'])
    dns_server.set_records(name, "MX", [f'5 {mx["value"]}.'])
    value = dkim["value"]
    dns_server.set_records(f"dkim._domainkey.{name}", "TXT",
                           [" ".join(f'"{value[i:i + 200]}"' for i in range(0, len(value), 200))])
    status, verified = await http_api.call("POST", f"/domains/{created['id']}/verify", user)
    assert status == 200, verified
    assert (await http_api.call("GET", "/domains", user))[1]["total_verified"] == 1
    domain_id = int(created["id"][4:])
    status, sub = await http_api.call("POST", "/billing/subscription/subs", user,
                                      json={"pack_code": "DEDICATED_100K",
                                            "domain_id": domain_id})
    assert status == 200, sub
    status, _ = await http_api.call("DELETE", f"/domains/{created['id']}", user)
    assert status == 200
    assert (await http_api.call("GET", f"/domains/{created['id']}", user))[0] == 404


async def test_http_mode_failures_answer_502_503_and_leave_nothing(http_api, billing_service,
                                                                  billing_seed):
    user = billing_seed.user(balance=600000)
    name = new_domain_name()
    billing_service.fail_status = 500
    status, err = await http_api.call("POST", "/domains", user, json={"domain": name})
    assert (status, err) == (502, {"detail": "Billing service error (HTTP 500)"})
    billing_service.fail_status = None
    billing_service.hang_seconds = 1.0
    status, err = await http_api.call("POST", "/domains", user, json={"domain": name})
    assert status == 503
    assert "unavailable" in err["detail"]
    billing_service.hang_seconds = 0
    # the (slow) billing service may have written its own row after we gave up; nothing of ours
    assert (await http_api.call("GET", "/domains", user))[1]["total"] in (0, 1)

    domain_id = billing_seed.domain(user, new_domain_name())
    for status_code, expected in ((500, 502), (503, 502)):
        billing_service.fail_status = status_code
        status, _ = await http_api.call("POST", "/billing/subscription/subs", user,
                                        json={"pack_code": "DEDICATED_100K",
                                              "domain_id": domain_id})
        assert status == expected
        status, _ = await http_api.call("POST", "/billing/payg/subscriptions", user,
                                        json={"domain_id": domain_id})
        assert status == expected
    billing_service.fail_status = None
    with Session(http_api.usend.engine) as session:
        count = session.scalar(select(func.count()).select_from(DomainSubscriptionStatus)
                               .where(DomainSubscriptionStatus.domain_id == domain_id,
                                      DomainSubscriptionStatus.user_id == user))
    assert count == 0


async def test_verify_is_409_while_another_user_holds_the_name_verified(
        http_api, billing_service, billing_seed, dns_server):
    """GET /logs shows a verified domain's events, so one name is verified by one user at a time
    (the billing system may hold the same name twice: etrans checks before it marks)."""
    holder, claimant = billing_seed.user(), billing_seed.user(balance=600000)
    name = new_domain_name()
    held = billing_seed.domain(holder, name, status="verified")
    status, _ = await http_api.call("POST", "/domains", claimant, json={"domain": name})
    assert status == 400  # a live name is refused at creation already
    # ...but a billing system whose ``domain`` lacks our test schema's unique index on live names
    # can hold the second row itself.
    drop_unique = "DROP INDEX domain_name_live"
    restore_unique = ("CREATE UNIQUE INDEX domain_name_live ON domain (name)"
                      " WHERE deleted_at IS NULL")
    _ddl(billing_service.owner_url, drop_unique)
    try:
        pending = billing_seed.domain(claimant, name, status="pending")
        billing_seed.dkim(pending, generate_dkim_key_pair().record.public_key_b64)
        status, got = await http_api.call("GET", f"/domains/dom_{pending}", claimant)
        assert status == 200, got
        spf, mx, dkim = got["dns_records"]
        dns_server.set_records(name, "TXT", [f'"{spf["value"]}"'])
        dns_server.set_records(name, "MX", [f'5 {mx["value"]}.'])
        value = dkim["value"]
        dns_server.set_records(
            f"dkim._domainkey.{name}", "TXT",
            [" ".join(f'"{value[i:i + 200]}"' for i in range(0, len(value), 200))])
        status, answer = await http_api.call("POST", f"/domains/dom_{pending}/verify", claimant)
        assert status == 409, answer
        assert "verified by another account" in answer["detail"]
        assert (await http_api.call("GET", f"/domains/dom_{pending}", claimant))[1]["status"] \
            == "pending"
    finally:
        billing_service.sql("UPDATE domain SET deleted_at=now() WHERE id=%s RETURNING id", held)
        _ddl(billing_service.owner_url, restore_unique)
    status, answer = await http_api.call("POST", f"/domains/dom_{pending}/verify", claimant)
    assert status == 200, answer


def _ddl(owner_url: str, statement: str) -> None:
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(statement)
