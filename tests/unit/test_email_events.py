"""The email events format (docs/wire-formats.md, "Email events"): encode/decode round trip,
ids, and every malformed record refused with InvalidEmailEvent."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from etrans.domain.events import (
    MAX_EVENT_BYTES,
    EmailEvent,
    EventType,
    InvalidEmailEvent,
    decode_event,
    derived_event_id,
    encode_event,
    random_event_id,
    webhook_payload,
)

MOMENT = datetime(2026, 12, 6, 6, 50, 0, 123456, tzinfo=UTC)


def _event(**data: object) -> EmailEvent:
    return EmailEvent(id=derived_event_id("log-1", "email.bounced"), type=EventType.BOUNCED,
                      timestamp=MOMENT, user_id=42,
                      data={"message_id": "msg_ab@example.com", "recipient": "a@example.org",
                            "bounce_class": "hard", **data})


def test_an_event_round_trips_and_is_keyed_by_its_message_id() -> None:
    event = _event(response="550 5.1.1 unknown ✉")
    key, value = encode_event(event)
    assert key == b"msg_ab@example.com"
    document = json.loads(value)
    assert document == {"id": event.id, "user_id": "42", "type": "email.bounced",
                        "timestamp": "2026-12-06T06:50:00.123456Z", "data": event.data}
    assert b" " not in value.split(b'"data"')[0]  # compact separators
    assert decode_event(value) == event


def test_the_webhook_body_is_type_timestamp_and_data_only() -> None:
    assert set(webhook_payload(_event())) == {"type", "timestamp", "data"}


def test_an_event_without_a_message_id_is_keyed_by_its_own_id() -> None:
    event = EmailEvent(id=random_event_id(), type=EventType.WEBHOOK_DISABLED, timestamp=MOMENT,
                       user_id=7, data={"webhook_id": "wh_1", "url": "https://x.test/h"})
    key, _ = encode_event(event)
    assert key == event.id.encode()


def test_derived_ids_are_stable_and_distinct_random_ids_are_unique() -> None:
    assert derived_event_id("a", "b") == derived_event_id("a", "b")
    assert derived_event_id("a", "b") != derived_event_id("ab", "")
    assert derived_event_id("a", "b").startswith("evt_")
    assert len(derived_event_id("x")) == 36
    assert len({random_event_id() for _ in range(1000)}) == 1000


def test_an_offset_timestamp_is_read_as_utc() -> None:
    event = _event()
    _, value = encode_event(event)
    document = json.loads(value)
    document["timestamp"] = "2026-12-06T08:50:00.123456+02:00"
    decoded = decode_event(json.dumps(document).encode())
    assert decoded.timestamp == MOMENT
    assert decoded.timestamp.tzinfo == UTC
    assert MOMENT.astimezone(timezone(timedelta(hours=2))) == decoded.timestamp


def test_an_oversized_event_is_refused_when_encoded() -> None:
    with pytest.raises(ValueError, match="more than"):
        encode_event(_event(response="x" * MAX_EVENT_BYTES))


@pytest.mark.parametrize("raw", [
    None, b"", b"\xff\xfe", b"not json", b"[]", b'"x"',
    b'{"user_id":"1","type":"email.sent","timestamp":"2026-12-06T00:00:00Z","data":{}}',
    b'{"id":"x","user_id":"1","type":"email.sent","timestamp":"2026-12-06T00:00:00Z","data":{}}',
    b'{"id":"evt_1","user_id":1,"type":"email.sent","timestamp":"2026-12-06T00:00:00Z","data":{}}',
    b'{"id":"evt_1","user_id":"-1","type":"email.sent","timestamp":"2026-12-06T00:00:00Z",'
    b'"data":{}}',
    b'{"id":"evt_1","user_id":"1","type":"email.nope","timestamp":"2026-12-06T00:00:00Z",'
    b'"data":{}}',
    b'{"id":"evt_1","user_id":"1","type":"email.sent","timestamp":"yesterday","data":{}}',
    b'{"id":"evt_1","user_id":"1","type":"email.sent","timestamp":"2026-12-06T00:00:00",'
    b'"data":{}}',
    b'{"id":"evt_1","user_id":"1","type":"email.sent","timestamp":"2026-12-06T00:00:00Z",'
    b'"data":[]}',
])
def test_malformed_records_are_refused(raw: bytes | None) -> None:
    with pytest.raises(InvalidEmailEvent):
        decode_event(raw)
