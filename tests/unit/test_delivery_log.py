"""Delivery-log rules: filter, skip pattern, event -> document (golden files), status rules."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etrans.domain.delivery_log import (
    DOCUMENT_FIELDS,
    STATUS_RANK,
    EventFilter,
    InvalidEvent,
    Verdict,
    add_bounce_class,
    bare_message_id,
    decode_event,
    event_id_of,
    parse_timestamp,
    recipient_outcomes,
    status_changes,
    status_for_event,
    to_document,
)

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "fetchlog"
CASES = sorted(p.name.removesuffix(".event.json") for p in GOLDEN.glob("*.event.json"))


def _as_extended_json(document: dict[str, object]) -> dict[str, object]:
    """BSON dates as MongoDB extended JSON ``{"$date": "...Z"}`` (millisecond precision)."""
    out: dict[str, object] = {}
    for key, value in document.items():
        if isinstance(value, datetime):
            assert value.tzinfo is not None, f"{key} must be timezone-aware"
            text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
                f"{value.microsecond // 1000:03d}Z"
            out[key] = {"$date": text}
        else:
            out[key] = value
    return out


def test_golden_cases_exist() -> None:
    assert len(CASES) >= 3, CASES


@pytest.mark.parametrize("case", CASES)
def test_golden_document(case: str) -> None:
    event = decode_event((GOLDEN / f"{case}.event.json").read_bytes())
    expected = json.loads((GOLDEN / f"{case}.document.json").read_text())
    document = to_document(event)
    assert list(document) == list(DOCUMENT_FIELDS)
    assert _as_extended_json(document) == expected


def test_document_has_exactly_the_spec_fields() -> None:
    assert set(DOCUMENT_FIELDS) == {
        "event", "timestamp", "action", "sender", "recipient", "response", "from_domain",
        "message_id", "to_domain", "event_id", "agent_type", "agent_name", "agent_hostname",
    }


def test_timestamp_is_a_utc_datetime_at_millisecond_precision() -> None:
    moment = parse_timestamp("2026-02-01T17:30:15.999999+07:00")
    assert moment == datetime(2026, 2, 1, 10, 30, 15, 999000, tzinfo=UTC)
    assert parse_timestamp("2026-02-01T10:30:15") == datetime(2026, 2, 1, 10, 30, 15, tzinfo=UTC)


@pytest.mark.parametrize("value", [None, "", 1700000000, "yesterday", "2026-13-01T00:00:00Z",
                                   # an offset that moves it out of datetime's range
                                   "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_unusable_timestamp_is_invalid(value: object) -> None:
    with pytest.raises(InvalidEvent):
        to_document({"Event": "Sender", "@timestamp": value, "Event_ID": "e"})


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b'"text"', b"\xff\xfe", None])
def test_undecodable_messages(raw: bytes | None) -> None:
    with pytest.raises(InvalidEvent):
        decode_event(raw)


def test_missing_event_id_gets_a_stable_content_id() -> None:
    event = {"Event": "Queue", "@timestamp": "2026-02-01T10:30:15Z", "message_id": "m1"}
    same = dict(reversed(list(event.items())))
    other = {**event, "message_id": "m2"}
    assert event_id_of(event) == event_id_of(same)
    assert event_id_of(event) != event_id_of(other)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", event_id_of(event))
    assert event_id_of({**event, "Event_ID": "evt_9"}) == "evt_9"


# -- filter and skip pattern ----------------------------------------------------------------------

def _event(kind: str, message_id: str = "msg_1") -> dict[str, str]:
    return {"Event": kind, "message_id": message_id, "@timestamp": "2026-02-01T10:30:15Z"}


@pytest.mark.parametrize("kind", ["Sender", "Queue", "Deferred", "Reject"])
def test_default_filter_stores_the_four_event_types(kind: str) -> None:
    assert EventFilter().verdict(_event(kind)) is Verdict.STORE


@pytest.mark.parametrize("kind", ["Connect", "Disconnect", "sender", "", "Bounce"])
def test_default_filter_drops_other_events(kind: str) -> None:
    assert EventFilter().verdict(_event(kind)) is Verdict.FILTERED
    assert EventFilter().verdict({"message_id": "x"}) is Verdict.FILTERED


@pytest.mark.parametrize("message_id", ["abc@bizfly.vn", "<123.bizfly.vn>", "bizflyXvn-1"])
def test_default_skip_pattern(message_id: str) -> None:
    # The pattern is a regular expression searched anywhere in the id ('.' matches any char).
    assert EventFilter().verdict(_event("Sender", message_id)) is Verdict.SKIPPED


def test_configured_filter_and_pattern() -> None:
    event_filter = EventFilter.from_settings(["Sender", "Bounce"], r"^internal-")
    assert event_filter.verdict(_event("Bounce", "m")) is Verdict.STORE
    assert event_filter.verdict(_event("Queue", "m")) is Verdict.FILTERED
    assert event_filter.verdict(_event("Sender", "internal-42")) is Verdict.SKIPPED
    assert event_filter.verdict(_event("Sender", "x@bizfly.vn")) is Verdict.STORE
    # A filtered event is reported as filtered even when its id would also be skipped.
    assert event_filter.verdict(_event("Queue", "internal-42")) is Verdict.FILTERED


def test_empty_skip_pattern_skips_nothing() -> None:
    assert EventFilter.from_settings(["Sender"], "").verdict(_event("Sender", "")) is Verdict.STORE


# -- status transitions ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("event", "action", "status"),
    [
        ("Sender", "delivered", "delivered"),
        ("Sender", "Delivery", "delivered"),
        ("Sender", "", "sent"),
        ("Sender", "sent", "sent"),
        ("Sender", "deferred", "deferred"),
        ("Sender", "bounced", "bounced"),
        ("Queue", "", "sent"),
        ("Queue", "queued", "sent"),
        ("Deferred", "deferred", "deferred"),
        ("Deferred", "", "deferred"),
        ("Reject", "rejected", "bounced"),
        ("Reject", "", "bounced"),
        ("Connect", "delivered", None),
    ],
)
def test_status_for_event(event: str, action: str, status: str | None) -> None:
    assert status_for_event(event, action) == status


def test_rank_order() -> None:
    r = STATUS_RANK
    assert r["queued"] < r["sent"] < r["deferred"] < r["delivered"] == r["bounced"]


T0 = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)


def _doc(kind: str, action: str, message_id: str, seconds: int) -> dict[str, object]:
    return {"event": kind, "action": action, "message_id": message_id, "response": "r",
            "timestamp": T0 + timedelta(seconds=seconds)}


def test_status_changes_take_the_furthest_status_per_message() -> None:
    docs = [
        _doc("Sender", "delivered", "<a@x>", 30),  # angle brackets are stripped for the DB
        _doc("Deferred", "deferred", "a@x", 40),  # late deferral: ignored
        _doc("Queue", "", "b", 5),
        _doc("Deferred", "deferred", "b", 10),
        _doc("Reject", "rejected", "c", 50),
        _doc("Sender", "delivered", "c", 60),  # both final: the earliest (the reject) wins
        _doc("Connect", "", "d", 1),
        _doc("Sender", "delivered", "", 1),
    ]
    changes = {c.message_id: c for c in status_changes(docs)}
    assert set(changes) == {"a@x", "b", "c"}
    assert (changes["a@x"].status, changes["a@x"].at) == ("delivered", T0 + timedelta(seconds=30))
    assert changes["b"].status == "deferred"
    assert (changes["c"].status, changes["c"].event) == ("bounced", "Reject")


_kinds = st.sampled_from([("Queue", ""), ("Sender", ""), ("Deferred", "deferred"),
                          ("Sender", "delivered"), ("Reject", "rejected")])


@given(st.lists(st.tuples(_kinds, st.integers(0, 5)), min_size=1, max_size=12), st.randoms())
def test_status_changes_do_not_depend_on_arrival_order(events, rnd) -> None:  # type: ignore[no-untyped-def]
    docs = [_doc(kind, action, "m", seconds) for (kind, action), seconds in events]
    shuffled = list(docs)
    rnd.shuffle(shuffled)
    (first,) = status_changes(docs)
    (second,) = status_changes(shuffled)
    assert (first.status, first.at, first.event) == (second.status, second.at, second.event)
    assert first.rank == max(STATUS_RANK[status_for_event(d["event"], d["action"]) or ""]
                             for d in docs)


def test_bare_message_id() -> None:
    assert bare_message_id(" <abc@host> ") == "abc@host"
    assert bare_message_id("msg_1") == "msg_1"


def _bounce_class_of(event: dict[str, object]) -> object:
    document = to_document({"@timestamp": "2026-03-10T04:20:00Z", **event})
    add_bounce_class(document, event.get("bounce_class"))
    return document.get("bounce_class", "(none)")


def test_bounced_documents_get_the_bounce_class_of_their_response() -> None:
    # A golden Reject: the fields of the spec stay as they are, bounce_class is added.
    event = decode_event((GOLDEN / "reject_sparse.event.json").read_bytes())
    document = to_document(event)
    add_bounce_class(document)
    assert {k: v for k, v in document.items() if k != "bounce_class"} == to_document(event)
    assert document["bounce_class"] == "hard"
    # The SMTP server's own log: a bounced Sender/Queue event is classified from its response.
    assert _bounce_class_of({"Event": "Sender", "SMTP_Action": "bounced", "response":
                             "host mx[192.0.2.7] said: 552 5.2.2 Mailbox full"}) == "soft"
    assert _bounce_class_of({"Event": "Queue", "SMTP_Action": "reject", "response":
                             "554 5.7.1 <x@example.net>: Relay access denied"}) == "policy"
    # sendmail's Reject events carry their class: kept; an unknown value is recomputed.
    assert _bounce_class_of({"Event": "Reject", "response": "550 5.1.1 x",
                             "bounce_class": "policy"}) == "policy"
    assert _bounce_class_of({"Event": "Reject", "response": "550 5.1.1 x",
                             "bounce_class": "weird"}) == "hard"


@pytest.mark.parametrize("event", [
    {"Event": "Sender", "SMTP_Action": "delivered", "response": "250 2.0.0 OK"},
    {"Event": "Deferred", "SMTP_Action": "deferred", "response": "451 4.7.1 greylisted"},
    {"Event": "Queue", "SMTP_Action": "", "response": "250 queued"},
])
def test_other_documents_get_no_bounce_class(event: dict[str, object]) -> None:
    assert _bounce_class_of(event) == "(none)"


def test_recipient_outcomes_are_the_furthest_per_recipient_in_any_order() -> None:
    def doc(event: str, recipient: str, minute: int, action: str = "", **extra: str) -> dict:
        document = to_document({"Event": event, "SMTP_Action": action, "recipient": recipient,
                                "message_id": "<m@x>", "response": f"r{minute}",
                                "@timestamp": f"2026-03-10T04:{minute:02d}:00Z"})
        add_bounce_class(document)
        return {**document, **extra}

    documents = [doc("Deferred", "A@x.org", 1, "deferred"), doc("Sender", "a@x.org", 3, "bounced"),
                 doc("Reject", "a@x.org", 2), doc("Sender", "b@x.org", 4, "delivered"),
                 doc("Queue", "b@x.org", 1), doc("Sender", "", 1), doc("Connect", "c@x.org", 1)]
    for order in (documents, documents[::-1]):
        outcomes = {o.recipient: o for o in recipient_outcomes(order)}
        assert set(outcomes) == {"a@x.org", "b@x.org"}
        first_bounce = outcomes["a@x.org"]
        assert (first_bounce.message_id, first_bounce.outcome, first_bounce.response) == (
            "m@x", "bounced", "r2")
        assert first_bounce.bounce_class == "infrastructure"  # "r2": no reply code at all
        assert (outcomes["b@x.org"].outcome, outcomes["b@x.org"].bounce_class) == (
            "delivered", None)
