"""confluent-kafka producer and admin helpers for Trio.

:class:`KafkaProducer` wraps one thread-safe confluent ``Producer``: ``publish`` enqueues from the
Trio thread (never blocking while librdkafka's local queue has room) and returns only when the
broker acknowledged the record.  Delivery reports are served by a dedicated polling thread and
handed back to Trio with ``TrioToken.run_sync_soon``.  Consumers live in :mod:`etrans.pipeline`,
one thread each.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import trio

from etrans.errors import UpstreamUnavailable

if TYPE_CHECKING:
    from etrans.settings import KafkaSettings

Headers = Sequence[tuple[str, bytes | str]] | Mapping[str, bytes | str]


class DeliveryFailed(UpstreamUnavailable):
    """The broker did not acknowledge a record (librdkafka delivery report with an error)."""


# Delivery errors that say nothing against the record itself: the broker or the cluster is
# unavailable, or the topic is missing or forbidden (librdkafka already retried until
# message.timeout.ms).  Any other error the broker answers counts against the record.
_NOT_THE_RECORDS_FAULT = frozenset({
    "_MSG_TIMED_OUT", "_TIMED_OUT", "_TRANSPORT", "_ALL_BROKERS_DOWN", "_RESOLVE", "_DESTROY",
    "_UNKNOWN_TOPIC", "_UNKNOWN_PARTITION", "UNKNOWN_TOPIC_OR_PART", "TOPIC_EXCEPTION",
    "_PURGE_QUEUE",
    "_PURGE_INFLIGHT", "_AUTHENTICATION", "_SSL", "SASL_AUTHENTICATION_FAILED",
    "TOPIC_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED", "NOT_ENOUGH_REPLICAS",
    "NOT_ENOUGH_REPLICAS_AFTER_APPEND", "REQUEST_TIMED_OUT", "NOT_LEADER_FOR_PARTITION",
    "LEADER_NOT_AVAILABLE", "_FENCED", "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH",
    "OUT_OF_ORDER_SEQUENCE_NUMBER", "UNKNOWN_PRODUCER_ID", "_FATAL", "_NODE_UPDATE",
})


@dataclass(frozen=True)
class PublishFailure:
    """Why one record of :meth:`KafkaProducer.publish_many` was not acknowledged.

    ``refused``: the producer refused it at once (too large for ``message.max.bytes``, an
    invalid topic name): it can never be published as it is.  ``unreachable``: the brokers
    could not be reached or the topic is unavailable: nothing against the record, retry.
    ``answered``: the broker answered with an error about this record (e.g. larger than the
    topic's ``max.message.bytes``, a failed validation): retry, but not forever.
    """

    kind: Literal["refused", "unreachable", "answered"]
    error: str

    def __str__(self) -> str:
        return self.error

    @staticmethod
    def _not_the_records_fault(err: Any) -> bool:
        name = err.name() if hasattr(err, "name") else ""
        return (name in _NOT_THE_RECORDS_FAULT or bool(getattr(err, "retriable", bool)())
                or bool(getattr(err, "fatal", bool)()))

    @classmethod
    def of_delivery_error(cls, err: Any) -> PublishFailure:
        """From the ``KafkaError`` of a delivery report."""
        if cls._not_the_records_fault(err):
            return cls("unreachable", str(err))
        return cls("answered", str(err))

    @classmethod
    def of_produce_error(cls, exc: Exception) -> PublishFailure:
        """From what ``Producer.produce`` raised: ``refused``, unless it says the topic is
        unknown or the client unusable (``_UNKNOWN_TOPIC`` when the cluster lacks KAFKA_TOPIC:
        a configuration problem, which must not fail every email)."""
        err = exc.args[0] if exc.args else None
        if err is not None and hasattr(err, "name") and cls._not_the_records_fault(err):
            return cls("unreachable", repr(exc))
        return cls("refused", repr(exc))


class KafkaAdmin:
    """The one admin question etrans asks: a topic's size limit, checked at start."""

    def __init__(self, settings: KafkaSettings, *, timeout: float = 3.0) -> None:
        from confluent_kafka.admin import AdminClient

        self._admin = AdminClient({**settings.librdkafka("admin")})
        self._timeout = timeout

    def topic_max_message_bytes(self, topic: str) -> int | None:
        """The topic's ``max.message.bytes`` (DescribeConfigs; blocking, up to the timeout), or
        None when the broker does not report it.  Raises ``KafkaException`` when the broker
        cannot be asked or the topic does not exist."""
        from confluent_kafka.admin import ConfigResource

        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        futures = self._admin.describe_configs([resource], request_timeout=self._timeout)
        entries = next(iter(futures.values())).result(timeout=self._timeout + 1)
        entry = entries.get("max.message.bytes")
        if entry is None or entry.value is None or not str(entry.value).isdigit():
            return None
        return int(entry.value)


# Producer defaults: acknowledged by all in-sync replicas, idempotent (no duplicates on retry).
DEFAULT_PRODUCER_CONFIG: dict[str, str | int | bool] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
}


def _header_kwargs(headers: Sequence[Headers | None] | None, index: int) -> dict[str, Any]:
    given = headers[index] if headers is not None else None
    if not given:
        return {}
    return {"headers": list(given.items() if isinstance(given, Mapping) else given)}


class KafkaProducer:
    """A thread-safe producer whose ``publish`` waits for the broker's acknowledgement.

    One instance may be shared by any number of Trio tasks (and Trio runs, e.g. in tests).
    ``close`` flushes what is queued and stops the polling thread.
    """

    name = "kafka"

    def __init__(
        self, config: Mapping[str, str | int | bool], *, poll_timeout: float = 0.1
    ) -> None:
        from confluent_kafka import Producer

        conf: dict[str, Any] = dict(DEFAULT_PRODUCER_CONFIG)
        conf.update(config)
        self._producer = Producer(conf)
        self._poll_timeout = poll_timeout
        self._probe_limiter = trio.CapacityLimiter(1)  # /readyz: one list_topics at a time
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._serve_delivery_reports,
                                        name="kafka-producer-poll", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: KafkaSettings, **overrides: str | int | bool) -> KafkaProducer:
        return cls(settings.librdkafka("producer", **overrides))

    def _serve_delivery_reports(self) -> None:
        # Delivery callbacks run here, inside poll().
        while not self._closing.is_set():
            self._producer.poll(self._poll_timeout)

    async def publish(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers | None = None,
        *,
        partition: int | None = None,
    ) -> None:
        """Produce one record and wait until the broker acknowledged it.

        Raises :class:`DeliveryFailed` when librdkafka reports a delivery error (after its own
        retries, bounded by ``message.timeout.ms``).  If the caller is cancelled while waiting,
        the record may still be delivered.
        """
        if self._closing.is_set():
            raise RuntimeError("KafkaProducer is closed")
        token = trio.lowlevel.current_trio_token()
        delivered = trio.Event()
        outcome: list[Any] = []

        def finish(err: Any) -> None:
            outcome.append(err)
            delivered.set()

        def on_delivery(err: Any, _msg: Any) -> None:  # runs on the polling thread
            # If the Trio run that asked is gone, nobody is waiting.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(finish, err)

        kwargs: dict[str, Any] = {"value": value, "key": key, "on_delivery": on_delivery}
        if headers:
            pairs = headers.items() if isinstance(headers, Mapping) else headers
            kwargs["headers"] = list(pairs)
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                break
            except BufferError:
                # librdkafka's local queue is full: let the polling thread drain it.
                await trio.sleep(0.01)
        await delivered.wait()
        err = outcome[0]
        if err is not None:
            raise DeliveryFailed(f"kafka delivery to {topic!r} failed: {err}")

    async def publish_many(
        self, records: Sequence[tuple[str, bytes | None, bytes | None]],
        headers: Sequence[Headers | None] | None = None,
    ) -> list[PublishFailure | None]:
        """Produce ``(topic, value, key)`` records (``headers[i]`` with ``records[i]``) and wait
        until the broker answered for all of them: one :class:`PublishFailure` per record, None
        where it was acknowledged.

        Cheaper than one :meth:`publish` per record (one wake-up of Trio for the whole batch,
        no task per record); used by the outbox relay.
        """
        if self._closing.is_set():
            raise RuntimeError("KafkaProducer is closed")
        if not records:
            return []
        token = trio.lowlevel.current_trio_token()
        all_answered = trio.Event()
        errors: list[PublishFailure | None] = [None] * len(records)
        # Records not answered yet; decremented by the polling thread (delivery reports) and by
        # this task (records librdkafka refused at once), hence the lock.
        waiting = [len(records)]
        lock = threading.Lock()

        def answered() -> bool:
            with lock:
                waiting[0] -= 1
                return waiting[0] == 0

        def on_delivery_of(index: int) -> Any:
            def on_delivery(err: Any, _msg: Any) -> None:  # runs on the polling thread
                if err is not None:
                    errors[index] = PublishFailure.of_delivery_error(err)
                if answered():
                    with contextlib.suppress(trio.RunFinishedError):
                        token.run_sync_soon(all_answered.set)
            return on_delivery

        for index, (topic, value, key) in enumerate(records):
            extra: dict[str, Any] = {}
            given = headers[index] if headers is not None else None
            if given:
                extra["headers"] = list(given.items() if isinstance(given, Mapping) else given)
            while True:
                try:
                    self._producer.produce(topic, value=value, key=key,
                                           on_delivery=on_delivery_of(index), **extra)
                    break
                except BufferError:
                    await trio.sleep(0.01)  # local queue full: let the polling thread drain it
                except Exception as exc:  # refused at once (too large, an invalid topic name):
                    # only this record fails, the others go on
                    errors[index] = PublishFailure.of_produce_error(exc)
                    if answered():
                        all_answered.set()
                    break
        await all_answered.wait()
        return errors

    async def publish_chained(
        self, records: Sequence[tuple[str, bytes | None, bytes | None]],
        then: Sequence[tuple[str, bytes | None, bytes | None] | None],
        headers: Sequence[Headers | None] | None = None,
    ) -> tuple[list[PublishFailure | None], list[PublishFailure | None]]:
        """As :meth:`publish_many`, and ``then[i]`` (None: nothing) is produced, with
        ``headers[i]``, by the polling thread as soon as ``records[i]`` is acknowledged, never
        before nor if it fails: one wait for both (the outbox relay's send requests and their
        ``email.queued`` events).  The failures of ``records``, then of ``then``."""
        if self._closing.is_set():
            raise RuntimeError("KafkaProducer is closed")
        token = trio.lowlevel.current_trio_token()
        all_answered = trio.Event()
        errors: list[PublishFailure | None] = [None] * len(records)
        then_errors: list[PublishFailure | None] = [None] * len(records)
        waiting = [len(records) + sum(1 for each in then if each is not None)]
        lock = threading.Lock()

        def answered(index: int, both: bool) -> None:  # polling thread or this task
            with lock:
                waiting[0] -= 2 if both and then[index] is not None else 1
                done = waiting[0] == 0
            if done:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(all_answered.set)

        def on_delivery_of(index: int, first: bool = True) -> Any:
            def on_delivery(err: Any, _msg: Any) -> None:  # runs on the polling thread
                follow = then[index] if first else None
                if err is not None:
                    (errors if first else then_errors)[index] = (
                        PublishFailure.of_delivery_error(err))
                elif follow is not None:
                    try:
                        self._producer.produce(follow[0], value=follow[1], key=follow[2],
                                               on_delivery=on_delivery_of(index, False),
                                               **_header_kwargs(headers, index))
                    except Exception as exc:  # BufferError too: no waiting on this thread
                        then_errors[index] = PublishFailure("unreachable", repr(exc))
                    else:
                        return answered(index, False)  # the follow-up answers for itself
                answered(index, first)
            return on_delivery

        for index, (topic, value, key) in enumerate(records):
            while True:
                try:
                    self._producer.produce(topic, value=value, key=key,
                                           on_delivery=on_delivery_of(index),
                                           **_header_kwargs(headers, index))
                    break
                except BufferError:
                    await trio.sleep(0.01)  # local queue full: let the polling thread drain it
                except Exception as exc:  # refused at once: this record and its follow-up
                    errors[index] = PublishFailure.of_produce_error(exc)
                    answered(index, True)
                    break
        if records:
            await all_answered.wait()
        return errors, then_errors

    def close(self, timeout: float = 10.0) -> int:
        """Flush (blocking, up to ``timeout``), then stop the polling thread."""
        remaining = self._producer.flush(timeout)
        self._closing.set()
        self._thread.join(timeout=max(1.0, self._poll_timeout * 10))
        return remaining

    async def check(self) -> None:
        await trio.to_thread.run_sync(self._list_topics, limiter=self._probe_limiter,
                                      abandon_on_cancel=True)

    def _list_topics(self) -> None:
        self._producer.list_topics(timeout=3.0)


def topic_exists(conf: Mapping[str, str | int | bool], topic: str, timeout: float = 10.0) -> bool:
    """Whether the broker of ``conf`` (an admin client's librdkafka configuration) knows
    ``topic``; asks for the metadata of every topic, so none is auto-created by asking."""
    from confluent_kafka.admin import AdminClient

    return topic in AdminClient(dict(conf)).list_topics(timeout=timeout).topics
