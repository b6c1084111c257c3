"""Trace context of the API (issue 17 item 2), in-process against the real services: the
request's ``traceparent`` is the parent of the request's span, returned as ``traceresponse``
and bound as ``trace_id`` to the request's log lines; a malformed one starts a new trace (200,
never a 5xx) and never reaches a log line."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from etrans.domain.trace_context import parse_traceparent
from tests.integration.sending_api import email, open_sending_api

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture
async def api(etrans_env: Any, billing_db: Any) -> Any:
    async with open_sending_api(etrans_env, billing_db) as built:
        yield built


async def _send(api: Any, **headers: str) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    user, _, domain = api.sender()
    key, _ = api.api_key(user, "sending_access")
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        response = await api.client.post(
            "/emails", json=email(domain), headers={"X-API-KEY": key, **headers}
        )
    assert response.status_code == 200, await response.get_data()
    return response, await response.get_json(), logs


async def test_the_requests_traceparent_is_the_parent_of_its_span(api: Any) -> None:
    response, sent, logs = await _send(api, traceparent=f"00-{TRACE}-{PARENT}-01")
    answered = parse_traceparent(response.headers["traceresponse"])
    assert answered is not None
    assert answered.trace_id == TRACE
    assert answered.span_id != PARENT  # the request's own span
    assert answered.sampled
    queued = [line for line in logs if line.get("message_id") == sent["id"]]
    assert queued, logs
    assert {line.get("trace_id") for line in queued} == {TRACE}


async def test_an_unsampled_parent_stays_unsampled(api: Any) -> None:
    response, _, _ = await _send(api, traceparent=f"00-{TRACE}-{PARENT}-00")
    answered = parse_traceparent(response.headers["traceresponse"])
    assert answered is not None
    assert (answered.trace_id, answered.sampled) == (TRACE, False)


@pytest.mark.parametrize(
    "value",
    [
        f"00-{TRACE.upper()}-{PARENT}-01",
        f"00-{'0' * 32}-{PARENT}-01",
        f"00-{TRACE}-{PARENT}-01-injected",
        "00-trace_id=forged-01",
        "x" * 2000,
    ],
)
async def test_a_malformed_traceparent_starts_a_new_trace(api: Any, value: str) -> None:
    response, sent, logs = await _send(api, traceparent=value)
    answered = parse_traceparent(response.headers["traceresponse"])
    assert answered is not None
    assert answered.trace_id != TRACE
    queued = [line for line in logs if line.get("message_id") == sent["id"]]
    assert {line.get("trace_id") for line in queued} == {answered.trace_id}
    assert not [line for line in logs if value in repr(line)]


async def test_two_traceparent_headers_start_a_new_trace(api: Any) -> None:
    user, _, domain = api.sender()
    key, _ = api.api_key(user, "sending_access")
    response = await api.client.post(
        "/emails",
        json=email(domain),
        headers=[
            ("X-API-KEY", key),
            ("traceparent", f"00-{TRACE}-{PARENT}-01"),
            ("traceparent", f"00-{TRACE}-{PARENT}-01"),
        ],
    )
    assert response.status_code == 200
    answered = parse_traceparent(response.headers["traceresponse"])
    assert answered is not None
    assert answered.trace_id != TRACE


async def test_every_answer_has_a_traceresponse(api: Any) -> None:
    for path, status in (("/healthz", 200), ("/no-such-route", 404), ("/emails", 401)):
        response = await api.client.get(path)
        assert response.status_code == status
        assert parse_traceparent(response.headers["traceresponse"]) is not None


async def test_the_outbox_keeps_the_trace_and_the_relay_puts_it_in_the_kafka_header(
    etrans_env: Any, billing_db: Any, kafka_test_config: dict[str, Any]
) -> None:
    import trio
    from sqlalchemy import select

    from etrans.adapters.sql.usend import EmailMessage, EmailOutbox
    from tests.e2e.send_support import read_topic

    async with open_sending_api(etrans_env, billing_db, with_relay=True) as api:
        response, sent, _ = await _send(api, traceparent=f"00-{TRACE}-{PARENT}-01")
        request_span = parse_traceparent(response.headers["traceresponse"])
        assert request_span is not None
        outbox, emails = EmailOutbox.__table__, EmailMessage.__table__
        with api.usend.engine.connect() as conn:
            row = conn.execute(select(outbox).where(outbox.c.message_id == sent["id"])).one()
            stored = conn.execute(
                select(emails.c.traceparent).where(emails.c.message_id == sent["id"])
            ).scalar_one()
        # The request's span is the parent of what it queued.
        assert row.traceparent == stored == request_span.traceparent
        published_rows, failed_rows = await api.relay.relay_once()  # earlier tests' rows too
        assert published_rows >= 1
        assert failed_rows == 0
        records = await trio.to_thread.run_sync(
            lambda: read_topic(
                api.env["KAFKA_BOOTSTRAP_SERVERS"],
                api.settings.kafka.topic,
                want=1,
                overrides=kafka_test_config,
                raw=True,
            )
        )
    [record] = records
    assert record["value"] == bytes(row.payload)  # the wire contract is untouched
    [(name, value)] = record["headers"]
    published = parse_traceparent(value)
    assert name == "traceparent"
    assert published is not None
    assert published.trace_id == TRACE
    assert published.span_id not in (PARENT, request_span.span_id)  # the relay's own span
