"""schemathesis against ``/openapi.json`` of a real ``etrans serve``: every part-1 operation
(emails, logs) gets positive and negative generated requests with a valid full_access token;
none may answer 5xx.  At least 500 requests in all (the count is asserted)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.e2e.send_support import JWT_SECRET, ServeProcess, bearer, seed_sender
from tests.harness.databases import BillingSeeder

PART1_PATHS = ("/emails", "/emails/batch", "/emails/{message_id}", "/logs")
EXAMPLES_PER_OPERATION_AND_MODE = 70


def _exercise(strategy: Any, base_url: str, headers: dict[str, str], label: str,
              calls: list[tuple[str, int]], examples: int, *, anonymous: bool) -> None:
    @given(case=strategy)
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def exercise(case: Any) -> None:
        response = case.call(base_url=base_url, headers=dict(headers), timeout=30)
        calls.append((label, response.status_code))
        if anonymous:
            assert response.status_code == 401, (label, response.text[:300])
        assert response.status_code < 500, (label, response.status_code, response.text[:500],
                                            case.body, case.query, case.path_parameters)

    exercise()


@pytest.mark.slow
def test_no_server_errors(etrans_env: Any, billing_db: Any) -> None:
    import schemathesis
    from schemathesis import GenerationMode

    env = etrans_env(DB_URI=billing_db.readonly_url, BILLING_V4_URI="http://127.0.0.1:9/",
                     JWT_SECRET=JWT_SECRET, ETRANS_REDIS_PREFIX=f"st:{uuid.uuid4().hex[:10]}:",
                     ETRANS_LOG_LEVEL="WARNING")
    user, _ = seed_sender(BillingSeeder(billing_db.owner_url), daily=100000, hourly=10000)
    serve = ServeProcess(env).start()
    headers = bearer(user)
    calls: list[tuple[str, int]] = []
    try:
        schema = schemathesis.openapi.from_url(serve.base_url + "/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        ours = [op for op in operations if op.path in PART1_PATHS]
        assert len(ours) == 5, [op.label for op in operations]
        for operation in ours:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _exercise(operation.as_strategy(generation_mode=mode), serve.base_url, headers,
                          f"{operation.label} {mode.value}", calls,
                          EXAMPLES_PER_OPERATION_AND_MODE, anonymous=False)
        # Unauthenticated requests too: 401 for every operation, never 5xx.
        for operation in ours:
            _exercise(operation.as_strategy(), serve.base_url, {}, f"{operation.label} anonymous",
                      calls, 5, anonymous=True)
    finally:
        serve.stop()
    statuses = sorted({status for _, status in calls})
    print(f"schemathesis: {len(calls)} requests, statuses {statuses}")
    assert len(calls) >= 500
    assert all(status < 500 for _, status in calls)
    assert 200 in statuses  # generated requests also got through, not only refusals
