"""The account routes (domains, API keys, senders, billing) through a real ``etrans serve`` (local
billing mode, DNS_NAMESERVERS pointing at the loopback DNS server): domain -> DNS verification ->
sender -> POST /emails -> the quota of GET /domains/{id}/quota counts it; API key revocation; and
schemathesis over the WHOLE ``/openapi.json`` (parts 1 and 2) with no 5xx in at least 1,000
requests."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.send_support import JWT_SECRET, ServeProcess, bearer


@pytest.fixture
def serve(etrans_env: Any, dns_server: Any):
    env = etrans_env(JWT_SECRET=JWT_SECRET, BILLING_V4_URI=None,
                     DNS_NAMESERVERS=dns_server.address, ETRANS_ENABLE_TESTING_ROUTES="true",
                     ETRANS_REDIS_PREFIX=f"a2:{uuid.uuid4().hex[:10]}:",
                     DEFAULT_SPF_VALUE="v=spf1 include:_spf.e2e.test ~all",
                     DEFAULT_MX_HOST="mx.e2e.test", ETRANS_LOG_LEVEL="WARNING")
    process = ServeProcess(env).start()
    yield process
    process.stop()


def _user() -> int:
    return int(uuid.uuid4().int % 2**40) + 10**7


def test_domain_sender_send_and_quota_through_serve(serve: ServeProcess, dns_server: Any):
    user = _user()
    with httpx.Client(base_url=serve.base_url, headers=bearer(user), timeout=30) as client:
        name = f"d{uuid.uuid4().hex[:12]}.example"
        created = client.post("/domains", json={"domain": name})
        assert created.status_code == 200, created.text
        body = created.json()
        spf, mx, dkim = body["dns_records"]
        assert spf["value"] == "v=spf1 include:_spf.e2e.test ~all"
        assert mx["value"] == "mx.e2e.test"
        dns_server.set_records(name, "TXT", [f'"{spf["value"]}"'])
        dns_server.set_records(name, "MX", [f'{mx["priority"]} {mx["value"]}.'])
        value = dkim["value"]
        dns_server.set_records(f"dkim._domainkey.{name}", "TXT",
                               [" ".join(f'"{value[i:i + 200]}"'
                                         for i in range(0, len(value), 200))])
        verified = client.post(f"/domains/{body['id']}/verify")
        assert verified.status_code == 200, verified.text
        assert verified.json()["status"] == "verified"
        sender = client.post("/senders", json={"account": f"hello@{name}", "domain": name,
                                               "password": "e2e-password"})
        assert sender.status_code == 200, sender.text
        sent = client.post("/emails", json={"from": f"Hello <hello@{name}>",
                                            "to": ["someone@example.org"], "subject": "hi",
                                            "text": "hello"})
        assert sent.status_code == 200, sent.text
        quota = client.get(f"/domains/{body['id']}/quota").json()
        assert (quota["daily_used"], quota["hourly_used"], quota["monthly_used"]) == (1, 1, 1)
        assert (quota["pack_code"], quota["daily_limit"]) == ("FREE", 100)

        key = client.post("/api-keys", json={"name": "e2e", "permission": "read_only"}).json()
        with_key = {"X-API-KEY": key["key"]}
        assert client.get("/domains", headers=with_key).status_code == 200
        assert client.post("/domains", headers=with_key,
                           json={"domain": "x.example"}).status_code == 403
        assert client.delete(f"/api-keys/{key['id']}").status_code == 200
        assert client.get("/domains", headers=with_key).status_code == 401

        assert client.post("/testing/set-pack",
                           json={"pack_code": "DEDICATED_100K"}).json()["domains_updated"] == 1

        # Deleted: the next send from it is refused at once (not after the 5 s domain cache).
        assert client.delete(f"/domains/{body['id']}").status_code == 200
        refused = client.post("/emails", json={"from": f"hello@{name}", "to": ["a@example.org"],
                                               "subject": "after delete", "text": "no"})
        assert (refused.status_code, refused.json()) == (400, {"detail": "Domain not verified"})


@pytest.mark.slow
def test_schemathesis_whole_openapi(serve: ServeProcess, tmp_path: Path):
    spec = httpx.get(serve.base_url + "/openapi.json", timeout=30).json()
    assert {"/emails", "/logs", "/domains", "/api-keys", "/senders",
            "/billing/subscription/subs", "/testing/set-pack", "/suppressions",
            "/suppressions/{address}"} <= set(spec["paths"])
    har = tmp_path / "run.har"
    # One schemathesis worker: with two, its case generation crashed twice on this document
    # (Python 3.11, threads generating at once: "AST constructor recursion depth mismatch", and
    # hypothesis "Inconsistent results" in the coverage phase of POST /emails/batch), a failure
    # of the tool, not of etrans; the same cases are sent either way.
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "run",
        f"{serve.base_url}/openapi.json",
        "--checks", "not_a_server_error", "--max-examples", "40",
        "--header", f"Authorization: {bearer(_user())['Authorization']}",
        "--seed", "7", "--workers", "1", "--request-timeout", "30",
        "--report", "har", "--report-har-path", str(har), "--suppress-health-check", "all",
        "--generation-codec", "utf-8",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    statuses = [e["response"]["status"] for e in entries]
    summary = result.stdout[:5000] + "\n...\n" + result.stdout[-3000:] + "\n" + serve.tail(40)
    assert result.returncode == 0, summary
    assert not [s for s in statuses if s >= 500 or s == 0], summary
    assert len(entries) >= 1000, f"only {len(entries)} requests\n{summary}"
    print(f"schemathesis (whole /openapi.json): {len(entries)} requests, "
          f"statuses {sorted(set(statuses))}")
