"""Schemathesis over the account routes' /openapi.json (every route of domains, API keys, senders,
billing and testing), served by hypercorn on loopback: no 5xx, responses conform to the
documented status codes, at least 1,000 generated requests (counted from the HAR report)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.harness.http import served
from tests.integration.account_api import ApiUnderTest, new_user_id, open_api


@pytest.fixture
def served_api(usend_db_url, redis_url, dns_server):
    @asynccontextmanager
    async def open_app():
        async with open_api(usend_db_url=usend_db_url, redis_url=redis_url,
                            dns_address=dns_server.address) as built:
            yield built.app

    with served(open_app=open_app) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.mark.slow
def test_schemathesis_no_server_errors(served_api, tmp_path: Path):
    base = served_api
    user = new_user_id()
    har = tmp_path / "run.har"
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "run", f"{base}/openapi.json",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance",
        "--max-examples", os.environ.get("ETRANS_SCHEMATHESIS_EXAMPLES", "80"),
        "--header", f"Authorization: {ApiUnderTest.bearer(user)['Authorization']}",
        "--seed", "20261129", "--workers", "2", "--request-timeout", "20",
        "--report", "har", "--report-har-path", str(har), "--suppress-health-check", "all",
        "--generation-codec", "utf-8",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    statuses = [e["response"]["status"] for e in entries]
    summary = result.stdout[-4000:]
    summary = result.stdout[:6000] + "\n...\n" + result.stdout[-3000:]
    assert result.returncode == 0, summary
    assert not [s for s in statuses if s >= 500], summary
    assert len(entries) >= 1000, f"only {len(entries)} requests\n{summary}"
    print(f"schemathesis: {len(entries)} requests, statuses {sorted(set(statuses))}")
