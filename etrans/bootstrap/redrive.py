"""``etrans dlq`` (list, show, replay the dead letters) and ``etrans outbox retry-failed``: the
wiring and what they print.  Each call is one ``trio.run``; the use cases are
:mod:`etrans.app.redrive`."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click
import trio

from etrans.app.redrive import (
    replay_dead_letters,
    retry_failed_outbox,
    scan_dead_letters,
    show_dead_letter,
)
from etrans.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from etrans.adapters.kafka.dead_letters import KafkaDeadLetterLog
    from etrans.app.redrive import OutboxRetryReport, ReplayReport
    from etrans.domain.dead_letters import DeadLetter, DeadLetterFilter
    from etrans.settings import DbSettings, DlqSettings


def dead_letter_log(settings: DlqSettings) -> KafkaDeadLetterLog:
    from etrans.adapters.kafka.dead_letters import KafkaDeadLetterLog

    return KafkaDeadLetterLog(settings.kafka.librdkafka("consumer"),
                              settings.kafka.librdkafka("admin"), settings.dead_letter_topic)


def _run(command: str, fn: Callable[[], Any]) -> int:
    """``trio.run(fn)``: 0, or the error on stderr and 2 (bad input) or 1 (anything else)."""
    from confluent_kafka import KafkaException

    from etrans.adapters.kafka.dead_letters import DeadLetterReadError

    try:
        trio.run(fn)
    except InvalidInput as exc:
        click.echo(f"etrans {command}: {exc}", err=True)
        return 2
    except (NotFound, DeadLetterReadError, KafkaException) as exc:
        click.echo(f"etrans {command}: {exc}", err=True)
        return 1
    return 0


def summary_line(letter: DeadLetter) -> str:
    """One dead letter on one line: where, when, source, message id, error type: error."""
    moment = letter.time
    when = moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment is not None else "-"
    error = " ".join(f"{letter.error_type}: {letter.error}".split())
    return "  ".join([letter.where, when, str(letter.source or "-"),
                      letter.message_id or "-", error])


def list_dead_letters(settings: DlqSettings, wanted: DeadLetterFilter) -> int:
    from etrans.app.redrive import check_filter

    log = dead_letter_log(settings)
    counts: list[int] = []

    async def each(letter: DeadLetter) -> None:
        click.echo(summary_line(letter))

    async def main() -> None:
        await check_filter(log, wanted)
        counts.extend(await scan_dead_letters(log, wanted, each))

    status = _run("dlq list", main)
    if status == 0:
        matched, scanned = counts
        click.echo(f"{matched} of {scanned} dead letters in {settings.dead_letter_topic} match",
                   err=True)
    return status


def _where(text: str) -> tuple[int, int] | None:
    partition, _, offset = text.rpartition("/")
    if not offset.isdigit() or (partition and not partition.isdigit()):
        return None
    return int(partition or 0), int(offset)


def show_dead_letter_at(settings: DlqSettings, where: str) -> int:
    log = dead_letter_log(settings)
    found: list[DeadLetter] = []
    position = _where(where)
    if position is None:
        click.echo(f"etrans dlq show: {where!r} is not OFFSET or PARTITION/OFFSET", err=True)
        return 2

    async def main() -> None:
        if position[0] == 0 and "/" not in where:
            count = await log.partition_count(log.topic)
            if count is not None and count > 1:
                raise InvalidInput(f"{log.topic} has {count} partitions: give PARTITION/OFFSET")
        found.append(await show_dead_letter(log, *position))

    status = _run("dlq show", main)
    if status == 0:
        click.echo(render(found[0]), nl=False)
    return status


def render(letter: DeadLetter) -> str:
    """Every field, the headers and the value (as text when it is UTF-8, else hex)."""
    def text(raw: bytes | None) -> str:
        if raw is None:
            return "(none)"
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return "hex:" + raw.hex()

    moment = letter.time
    lines = [f"record      {letter.topic} {letter.where}",
             f"time        {moment.isoformat() if moment else '-'}",
             f"source      {letter.source or '-'}",
             f"message id  {letter.message_id or '-'}",
             f"error type  {letter.error_type or '-'}",
             f"error       {letter.error or '-'}",
             f"key         {text(letter.key)}",
             "headers"]
    lines += [f"  {name}: {text(value)}" for name, value in letter.headers]
    lines += ["value", text(letter.value)]
    return "\n".join(lines) + "\n"


def replay(settings: DlqSettings, wanted: DeadLetterFilter, *, dry_run: bool) -> int:
    from etrans.adapters.kafka.client import KafkaProducer

    log = dead_letter_log(settings)
    reports: list[ReplayReport] = []
    tty = sys.stdout.isatty()
    bar: Any = None

    def progress(total: int, advanced: int) -> None:
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=total, label="replaying", file=sys.stdout)
            bar.__enter__()
        bar.update(advanced)

    def replayed(letter: DeadLetter, problem: str | None) -> None:
        if problem is not None:
            click.echo(f"not replayed {letter.where}: {problem}", err=True)
        elif not tty:
            verb = "would replay" if dry_run else "replayed"
            click.echo(f"{verb} {letter.where} -> {letter.source}"
                       f" {letter.message_id or '-'}")

    async def main() -> None:
        producer = None if dry_run else KafkaProducer.from_settings(settings.kafka)
        try:
            reports.append(await replay_dead_letters(
                log, producer or _NoPublisher(), wanted, dry_run=dry_run,
                on_replayed=replayed, progress=progress if tty else None))
        finally:
            if producer is not None:
                await trio.to_thread.run_sync(producer.close)

    try:
        status = _run("dlq replay", main)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if status != 0:
        return status
    report = reports[0]
    click.echo(replay_summary(report))
    return 1 if report.failed else 0


class _NoPublisher:
    async def publish(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("a dry run publishes nothing")


def replay_summary(report: ReplayReport) -> str:
    verb = "would replay" if report.dry_run else "replayed"
    extra = []
    if report.duplicates:
        extra.append(f"{report.duplicates} duplicate{'s' if report.duplicates > 1 else ''}"
                     " of a replayed record skipped")
    if report.no_source:
        extra.append(f"{len(report.no_source)} without etrans-source")
    if report.failed:
        extra.append(f"{len(report.failed)} failed")
    return (f"{verb} {report.replayed} of {report.matched}"
            + (f" ({', '.join(extra)})" if extra else ""))


def retry_outbox(settings: DbSettings, ids: Sequence[int], topic: str | None, *,
                 dry_run: bool) -> int:
    from etrans.adapters.sql import usend_database
    from etrans.adapters.sql.outbox_failures import SqlFailedOutbox

    db = usend_database(settings.usend_uri.get(), pool_size=2)
    reports: list[OutboxRetryReport] = []

    async def main() -> None:
        reports.append(await retry_failed_outbox(SqlFailedOutbox(db), ids=ids, topic=topic,
                                                 dry_run=dry_run))

    try:
        status = _run("outbox retry-failed", main)
    finally:
        db.dispose()
    if status != 0:
        return status
    report = reports[0]
    for row in report.rows:
        when = row.failed_at.strftime("%Y-%m-%dT%H:%M:%SZ") if row.failed_at else "-"
        click.echo("  ".join([str(row.id), when, row.topic, row.message_id or "-",
                              " ".join((row.last_error or "-").split())]))
    verb = "would retry" if dry_run else "retried"
    click.echo(f"{verb} {report.retried if not dry_run else len(report.rows)} of "
               f"{len(report.rows)} failed outbox rows"
               + ("" if dry_run or not report.rows else
                  " (the outbox relay of etrans serve publishes them in its next pass)"))
    return 0
