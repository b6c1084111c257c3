"""SENTRY_DSN is read by every subcommand (README), not only fetchlog: each one starts the
reporter, and any error line that carries an exception (the API's "unhandled error", a worker's
task-boundary failure) reaches a real local Sentry ingestion endpoint."""

from __future__ import annotations

import json

import structlog

from etrans import observability
from etrans.adapters.http.sentry_reporter import ErrorReporter
from tests.integration.test_cli import start, stop, wait_until_running
from tests.integration.test_fetchlog_sentry import ingest  # noqa: F401 - the fixture
from tests.integration.test_serve import serving


def test_error_lines_with_an_exception_reach_sentry(ingest) -> None:  # noqa: F811
    import sentry_sdk

    dsn, received = ingest
    reporter = ErrorReporter.start(dsn, service="serve", release="test")
    observability.configure("serve", level="INFO", json=True)
    observability.forward_errors(reporter.capture)
    try:
        try:
            raise ValueError("boom from a route")
        except ValueError as exc:
            observability.get_logger("etrans.api.app").error("unhandled error", exc_info=exc,
                                                             path="/emails")
        observability.get_logger("x").info("not an error")
        reporter.flush(5)
    finally:
        observability._error_sinks.clear()
        structlog.reset_defaults()
        sentry_sdk.get_client().close()
    bodies = [body for path, body in received if path.startswith("/api/42/")]
    assert len(bodies) == 1, received
    assert b"boom from a route" in bodies[0]
    event = json.loads(bodies[0].splitlines()[-1])
    assert event["extra"]["path"] == "/emails"
    assert event["extra"]["event"] == "unhandled error"


def test_serve_and_sendmail_start_error_reporting(etrans_env, ingest) -> None:  # noqa: F811
    dsn, _received = ingest
    env = etrans_env(SENTRY_DSN=dsn)
    with serving(env) as served:
        assert served.get("/healthz").status_code == 200
    serve_records = [json.loads(line) for line in served.out.splitlines() if line.strip()]
    assert {"event": "sentry enabled", "service": "serve"}.items() <= next(
        r for r in serve_records if r["event"] == "sentry enabled").items()

    process = start(["sendmail"], env)
    try:
        lines = wait_until_running(process)
        _took, out, err = stop(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    records = [json.loads(line) for line in [*lines, *out.splitlines()] if line.strip()]
    assert any(r["event"] == "sentry enabled" and r["service"] == "sendmail" for r in records)
