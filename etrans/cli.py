"""The ``etrans`` command line.  Heavy libraries are imported inside commands, so that
``etrans --help`` stays fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from etrans import __version__

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from etrans.runtime import ServiceMain
    from etrans.settings import Settings

S = TypeVar("S", bound="Settings")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class _Context:
    def __init__(self, env_file: Path | None, log_level: str | None,
                 process_index: int | None = None) -> None:
        self.env_file = env_file
        self.log_level = log_level  # None: ETRANS_LOG_LEVEL of the environment or env file
        # Set in a child of `--processes N` / `serve --workers N` (etrans.bootstrap.processes).
        self.process_index = process_index

    def environment(self) -> dict[str, str]:
        """The process environment over the env file: a variable set in both keeps its env value."""
        from etrans.settings import read_env_file

        values: dict[str, str] = {}
        if self.env_file is not None:
            values.update(read_env_file(self.env_file))
        values.update(os.environ)
        return values

    def settings(self, command: str, kind: type[S]) -> S:
        """Validated settings for ``command``; on any problem print them all and exit 2."""
        from etrans import settings
        from etrans.errors import ConfigError

        try:
            loaded = settings.for_command(command, self.environment())
        except ConfigError as exc:
            click.echo(f"etrans {command}: {exc.render()}", err=True)
            sys.exit(2)
        assert isinstance(loaded, kind)
        return loaded

    def start_logging(self, service: str) -> None:
        from etrans import observability

        level = self.log_level or self.environment().get("ETRANS_LOG_LEVEL") or "INFO"
        if level.upper() not in _LOG_LEVELS:
            click.echo(f"etrans {service}: invalid configuration:\n  - ETRANS_LOG_LEVEL must be"
                       f" one of {', '.join(_LOG_LEVELS)}, got {level!r}", err=True)
            sys.exit(2)
        observability.configure(service, level=level, process=self.process_index)
        from etrans.bootstrap.tracing import start_tracing  # spans when OTLP is configured
        start_tracing(service, self.environment())

    def start_error_reporting(self, service: str, settings: Settings) -> None:
        """SENTRY_DSN: error lines with an exception go to Sentry (every subcommand; fetchlog
        also reports its retried failures itself, see its bootstrap)."""
        if settings.sentry_dsn is None:
            return
        from etrans import observability
        from etrans.adapters.http.sentry_reporter import ErrorReporter

        reporter = ErrorReporter.start(settings.sentry_dsn.get(), service=service,
                                       release=__version__)
        if reporter.enabled:
            observability.forward_errors(reporter.capture)

    def run(self, main: ServiceMain, drain_seconds: float) -> NoReturn:
        """Run one process of ``main`` (a child of ``--processes`` also stops on stdin's end)."""
        from etrans import runtime

        parent_pipe = 0 if self.process_index is not None else None
        sys.exit(runtime.run(main, drain_seconds, parent_pipe=parent_pipe))

    def processes(self, option: int | None, settings: Settings) -> int:
        """The option, else ETRANS_PROCESSES/ETRANS_SERVE_WORKERS; 1 in a child (it inherits)."""
        return 1 if self.process_index is not None else (option or settings.processes)

    def run_consumers(self, count: int, settings: Any, command: Sequence[str]) -> NoReturn:
        """A worker's ``count`` processes, each a member of the group with an id of its own."""
        from etrans.bootstrap.processes import consumer_environment

        self.run_processes(count, settings, command, lambda i: consumer_environment(
            i, settings.metrics_bind, settings.consumer.instance_id))

    def run_processes(self, count: int, settings: Settings, command: Sequence[str],
                      environment: Callable[[int], Mapping[str, str]],
                      pass_fds: Sequence[int] = ()) -> NoReturn:
        """``etrans <command>`` as ``count`` child processes of this one, with its options."""
        from etrans.bootstrap.processes import run_subcommand

        options = {"ETRANS_ENV_FILE": str(self.env_file.resolve()) if self.env_file else None,
                   "ETRANS_LOG_LEVEL": self.log_level}
        sys.exit(run_subcommand(command, count, settings.drain_seconds, environment, pass_fds,
                                options={k: v for k, v in options.items() if v is not None}))


def _processes(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--processes", type=click.IntRange(min=1, max=64), default=None,
        help="Run N consumers of the group, as N processes under this one [env ETRANS_PROCESSES,"
             " default 1] (docs/operations.md, 'Using every core').")(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="etrans")
@click.option("--env-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="ETRANS_ENV_FILE",
              help="Read variables from this KEY=VALUE file (the environment wins over it).")
@click.option("--log-level", default=None, envvar="ETRANS_LOG_LEVEL",
              type=click.Choice(_LOG_LEVELS, case_sensitive=False),
              help="[env ETRANS_LOG_LEVEL, also read from the env file; default: INFO]")
@click.option("--process-index", type=int, default=None, hidden=True)
@click.pass_context
def cli(ctx: click.Context, env_file: Path | None, log_level: str | None,
        process_index: int | None) -> None:
    """etrans: transactional email - HTTP API, SMTP sender and delivery-log ingester."""
    ctx.obj = _Context(env_file, log_level, process_index)


@cli.command()
@click.option("--bind", default=None,
              help="HOST:PORT to listen on [env ETRANS_BIND, default 0.0.0.0:8000].")
@click.option("--workers", type=click.IntRange(min=1, max=64), default=None,
              help="Serve from N processes sharing the listening socket [env"
                   " ETRANS_SERVE_WORKERS, default 1] (docs/operations.md,"
                   " 'Using every core').")
@click.pass_obj
def serve(obj: _Context, bind: str | None, workers: int | None) -> None:
    """Run the HTTP API."""
    if bind is not None:
        os.environ["ETRANS_BIND"] = bind
    from etrans.settings import ServeSettings

    settings = obj.settings("serve", ServeSettings)
    obj.start_logging("serve")
    obj.start_error_reporting("serve", settings)
    from etrans.bootstrap import serve as wiring
    from etrans.errors import ConfigError

    if obj.process_index is None:  # once, in the parent of --workers
        try:
            wiring.check_kafka_topic(settings)
        except ConfigError as exc:
            click.echo(f"etrans serve: {exc.render()}", err=True)
            sys.exit(2)
    if obj.processes(workers, settings) > 1:
        from etrans.bootstrap.processes import child_environment

        sockets = wiring.listening_sockets(settings)  # open in this process until it exits
        fds = [sock.fileno() for sock in sockets]
        obj.run_processes(obj.processes(workers, settings), settings, ["serve"], lambda i: {
            "ETRANS_BIND": f"fd://{fds[0]}",
            **child_environment(i, settings.metrics_bind)}, pass_fds=fds)
    obj.run(wiring.build(settings), settings.drain_seconds)


def _set_metrics_bind(_ctx: click.Context, _param: click.Parameter, bind: str | None) -> None:
    if bind is not None:
        os.environ["ETRANS_METRICS_BIND"] = bind


_metrics_bind = click.option(
    "--metrics-bind", default=None, metavar="HOST:PORT", expose_value=False,
    callback=_set_metrics_bind,
    help="Serve GET /metrics (Prometheus) there [env ETRANS_METRICS_BIND; default: none].")


@cli.command()
@_metrics_bind
@_processes
@click.pass_obj
def sendmail(obj: _Context, processes: int | None) -> None:
    """Consume send requests from KAFKA_TOPIC and deliver them over SMTP."""
    from etrans.settings import SendmailSettings

    settings = obj.settings("sendmail", SendmailSettings)
    obj.start_logging("sendmail")
    obj.start_error_reporting("sendmail", settings)
    if obj.processes(processes, settings) > 1:
        obj.run_consumers(obj.processes(processes, settings), settings, ["sendmail"])
    from etrans.bootstrap import sendmail as wiring

    obj.run(wiring.build(settings), settings.drain_seconds)


@cli.command()
@click.option("--from-earliest", is_flag=True,
              help="Reprocess LOG_TOPIC from the beginning, whatever the group has committed.")
@click.option("--stop-at-end", is_flag=True, help="Exit 0 once every partition is caught up.")
@_metrics_bind
@_processes
@click.pass_obj
def fetchlog(obj: _Context, from_earliest: bool, stop_at_end: bool,
             processes: int | None) -> None:
    """Consume delivery-log events from LOG_TOPIC into MongoDB."""
    from etrans.settings import FetchlogSettings

    settings = obj.settings("fetchlog", FetchlogSettings)
    obj.start_logging("fetchlog")
    if obj.processes(processes, settings) > 1:
        flags = [f for f, on in (("--from-earliest", from_earliest),
                                 ("--stop-at-end", stop_at_end)) if on]
        obj.run_consumers(obj.processes(processes, settings), settings, ["fetchlog", *flags])
    from etrans.bootstrap import fetchlog as wiring

    obj.run(wiring.build(settings, from_earliest=from_earliest, stop_at_end=stop_at_end),
            settings.drain_seconds)


@cli.command()
@_metrics_bind
@_processes
@click.pass_obj
def webhooks(obj: _Context, processes: int | None) -> None:
    """Deliver the events of KAFKA_EVENTS_TOPIC to the subscribed webhook endpoints."""
    from etrans.settings import WebhooksSettings

    settings = obj.settings("webhooks", WebhooksSettings)
    obj.start_logging("webhooks")
    obj.start_error_reporting("webhooks", settings)
    if obj.processes(processes, settings) > 1:
        obj.run_consumers(obj.processes(processes, settings), settings, ["webhooks"])
    from etrans.bootstrap import webhooks as wiring

    obj.run(wiring.build(settings), settings.drain_seconds)


@cli.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              envvar="ETRANS_DATA_DIR",
              help="Where etrans dev keeps its data [env ETRANS_DATA_DIR; default"
                   " $XDG_DATA_HOME/etrans, else ~/.local/share/etrans].")
@click.option("--bind", default=None,
              help="HOST:PORT of the API [env ETRANS_BIND, default 127.0.0.1:8000].")
@click.pass_obj
def dev(obj: _Context, data_dir: Path | None, bind: str | None) -> None:
    """Run the API, sendmail, fetchlog and webhooks in one process, on embedded stand-ins.

    SQLite, in-process topics and a local SMTP server that keeps every message as an .eml file
    replace PostgreSQL, Kafka, Redis, MongoDB and the SMTP server; any of them given in the
    environment (KAFKA_BOOTSTRAP_SERVERS, REDIS_URI or REDIS_HOST, USEND_DB_URI, MONGODB_URI,
    SMTP_HOST) is used instead of its stand-in.  Creates a demo user, domain and API key and
    prints a curl example.
    """
    if bind is not None:
        os.environ["ETRANS_BIND"] = bind
    from etrans.settings import DevSettings

    settings = obj.settings("dev", DevSettings)
    obj.start_logging("dev")
    obj.start_error_reporting("dev", settings)
    from etrans import runtime
    from etrans.bootstrap import dev as wiring

    if data_dir is None:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        data_dir = Path(base) / "etrans"
    sys.exit(runtime.run(wiring.build(settings, data_dir=data_dir.resolve()),
                         settings.drain_seconds))


@cli.group()
def db() -> None:
    """Database administration (the USEND DB only; the Billing DB is never touched)."""


@db.command()
@click.option("--revision", default="head", show_default=True, help="Alembic revision to reach.")
@click.pass_obj
def upgrade(obj: _Context, revision: str) -> None:
    """Apply the USEND DB migrations (Alembic)."""
    from etrans.settings import DbSettings

    settings = obj.settings("db", DbSettings)
    obj.start_logging("db")
    obj.start_error_reporting("db", settings)
    from etrans.adapters.sql import migrations

    try:
        migrations.upgrade(settings.usend_uri.get(), revision)
    except migrations.MigrationError as exc:
        click.echo(f"etrans db upgrade: {exc}", err=True)
        sys.exit(1)


def _moment(_ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    from datetime import UTC, datetime

    from etrans.domain.dead_letters import parse_moment

    try:
        return parse_moment(value, datetime.now(UTC))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from None


def _dead_letter_filters(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--error", "error", default=None, metavar="TEXT",
                      help="Only errors containing TEXT (error or error type, any case).")(fn)
    fn = click.option("--until", default=None, callback=_moment, metavar="TIME",
                      help="Dead-lettered before TIME (as --since).")(fn)
    fn = click.option("--since", default=None, callback=_moment, metavar="TIME",
                      help="Dead-lettered at or after TIME: ISO-8601 (UTC unless an offset is"
                           " given) or an age: 90s, 15m, 2h, 7d.")(fn)
    return click.option("--topic", default=None, metavar="TOPIC",
                        help="Only records dead-lettered from TOPIC.")(fn)


@cli.group()
def dlq() -> None:
    """The dead letters of KAFKA_DEAD_LETTER_TOPIC: list, show, replay to their source topic."""


@dlq.command("list")
@_dead_letter_filters
@click.pass_obj
def dlq_list(obj: _Context, /, **filters: Any) -> None:
    """One line per dead letter: PARTITION/OFFSET, time, source, message id, error."""
    from etrans.bootstrap import redrive
    from etrans.domain.dead_letters import DeadLetterFilter
    from etrans.settings import DlqSettings

    settings = obj.settings("dlq", DlqSettings)
    obj.start_logging("dlq")
    sys.exit(redrive.list_dead_letters(settings, DeadLetterFilter(**filters)))


@dlq.command("show")
@click.argument("where", metavar="[PARTITION/]OFFSET")
@click.pass_obj
def dlq_show(obj: _Context, where: str) -> None:
    """One dead letter: its error, source, headers and value."""
    from etrans.bootstrap import redrive
    from etrans.settings import DlqSettings

    settings = obj.settings("dlq", DlqSettings)
    obj.start_logging("dlq")
    sys.exit(redrive.show_dead_letter_at(settings, where))


@dlq.command("replay")
@_dead_letter_filters
@click.option("--dry-run", is_flag=True, help="Say what would be replayed; produce nothing.")
@click.pass_obj
def dlq_replay(obj: _Context, /, dry_run: bool, **filters: Any) -> None:
    """Produce each matching dead letter's original key, value and headers to its source topic.

    At least once: see docs/operations.md, "Re-drive", for what keeps a repeat harmless.
    """
    from etrans.bootstrap import redrive
    from etrans.domain.dead_letters import DeadLetterFilter
    from etrans.settings import DlqSettings

    settings = obj.settings("dlq", DlqSettings)
    obj.start_logging("dlq")
    sys.exit(redrive.replay(settings, DeadLetterFilter(**filters), dry_run=dry_run))


@cli.group()
def outbox() -> None:
    """The USEND DB's outbox (email_outbox): rows the relay gave up on."""


@outbox.command("retry-failed")
@click.option("--id", "ids", type=int, multiple=True, metavar="ID",
              help="Only this row (repeatable); default: every failed row.")
@click.option("--topic", default=None, metavar="TOPIC", help="Only rows for TOPIC.")
@click.option("--dry-run", is_flag=True, help="List the rows; change nothing.")
@click.pass_obj
def outbox_retry_failed(obj: _Context, ids: tuple[int, ...], topic: str | None,
                        dry_run: bool) -> None:
    """Put the failed outbox rows back in the relay's queue (their emails Queued again)."""
    from etrans.bootstrap import redrive
    from etrans.settings import DbSettings

    settings = obj.settings("db", DbSettings)
    obj.start_logging("outbox")
    sys.exit(redrive.retry_outbox(settings, ids, topic, dry_run=dry_run))


def main() -> None:
    cli(prog_name="etrans")
