"""Opens and clicks (etrans/domain/engagement.py): which events count, their log documents."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from etrans.domain.delivery_log import DOCUMENT_FIELDS, status_changes
from etrans.domain.engagement import CLICK, OPEN, engagement_of, log_document
from etrans.domain.events import EmailEvent, EventType, InvalidEmailEvent

AT = datetime(2026, 3, 10, 9, 0, 0, 123456, tzinfo=UTC)


def _event(kind: EventType, **data: object) -> EmailEvent:
    return EmailEvent(id="evt_" + "a" * 32, type=kind, timestamp=AT, user_id=7,
                      data={"message_id": "<m1@shop.example>", **data})


def test_opens_and_clicks_and_nothing_else():
    opened = engagement_of(_event(EventType.OPENED, user_agent="Mail"))
    assert opened is not None
    assert (opened.kind, opened.message_id, opened.url, opened.user_agent) == (
        OPEN, "m1@shop.example", None, "Mail")
    assert opened.at == AT.replace(microsecond=123000)  # BSON's milliseconds
    clicked = engagement_of(_event(EventType.CLICKED, url="https://x.example/a"))
    assert clicked is not None
    assert (clicked.kind, clicked.url, clicked.user_agent) == (CLICK, "https://x.example/a", "")
    for other in (EventType.DELIVERED, EventType.BOUNCED, EventType.SENT):
        assert engagement_of(_event(other)) is None


@pytest.mark.parametrize("event", [
    EmailEvent(id="evt_1", type=EventType.OPENED, timestamp=AT, user_id=7, data={}),
    _event(EventType.OPENED, message_id=""),
    _event(EventType.OPENED, message_id="x" * 256),
    _event(EventType.CLICKED),  # no url
    _event(EventType.CLICKED, url=5),
])
def test_unusable_opens_and_clicks_are_invalid(event: EmailEvent):
    with pytest.raises(InvalidEmailEvent):
        engagement_of(event)


def test_the_log_document_is_labelled_and_proves_no_status():
    clicked = engagement_of(_event(EventType.CLICKED, url="https://x.example/a"))
    assert clicked is not None
    document = log_document(clicked)
    assert set(document) == {*DOCUMENT_FIELDS, "source", "user_id"}
    assert (document["event"], document["action"], document["response"]) == (
        "Click", "clicked", "https://x.example/a")
    assert (document["event_id"], document["source"], document["user_id"]) == (
        "evt_" + "a" * 32, "API", 7)
    assert status_changes([document]) == []
