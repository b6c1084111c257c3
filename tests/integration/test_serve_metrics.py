"""``etrans serve``'s metrics (issue 17): GET /metrics on the API's port, or on
ETRANS_METRICS_BIND instead; counts move by exactly the requests made, under route templates."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.servers import free_port
from tests.integration.test_serve import serving


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def requests(scraped: dict, route: str, status: str, method: str = "GET") -> float:
    key = frozenset({("method", method), ("route", route), ("status", status)})
    return scraped.get(("etrans_http_requests_total", key), 0.0)


def test_metrics_count_requests_by_route_template_and_status(etrans_env):
    with serving(etrans_env()) as served:
        before = samples(served.get("/metrics").text)
        for _ in range(3):
            assert served.get("/healthz").status_code == 200
        for email_id in ("zq9xk1", "wv7kp2"):  # unauthenticated: 401, under the template
            assert served.get(f"/emails/{email_id}").status_code == 401
        assert served.get("/no/such/path/42").status_code == 404
        page = served.get("/metrics")
        assert page.headers["content-type"].startswith("text/plain")
        after = samples(page.text)
    assert requests(after, "/healthz", "200") - requests(before, "/healthz", "200") == 3
    assert requests(after, "/emails/<message_id>", "401") - requests(
        before, "/emails/<message_id>", "401") == 2
    assert requests(after, "unmatched", "404") - requests(before, "unmatched", "404") == 1
    # The latency histogram counts the same requests; no raw path in any label.
    key = frozenset({("method", "GET"), ("route", "/healthz"), ("status", "200")})
    assert after[("etrans_http_request_duration_seconds_count", key)] - before.get(
        ("etrans_http_request_duration_seconds_count", key), 0.0) == 3
    assert "zq9xk1" not in page.text
    assert "/no/such" not in page.text
    # The outbox relay's backlog, read at the scrape: nothing waits here
    # (tests/integration/test_outbox_backlog.py makes rows wait).
    assert after[("etrans_outbox_backlog", frozenset())] == 0
    assert after[("etrans_outbox_oldest_age_seconds", frozenset())] == 0


def test_metrics_bind_moves_metrics_off_the_api_port(etrans_env):
    port = free_port()
    env = etrans_env()
    env["ETRANS_METRICS_BIND"] = f"127.0.0.1:{port}"
    with serving(env) as served:
        assert served.get("/metrics").status_code == 404
        assert served.get("/healthz").status_code == 200
        page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
        assert page.status_code == 200
        scraped = samples(page.text)
        assert requests(scraped, "/healthz", "200") >= 1
        assert httpx.get(f"http://127.0.0.1:{port}/other", timeout=30).status_code == 404
