"""Publishing poison messages to the dead-letter topic.

The dead-lettered record keeps the original key, value and headers and adds:

* ``etrans-error``: the error text (UTF-8)
* ``etrans-error-type``: the exception class name
* ``etrans-source``: ``topic/partition/offset`` of the original record

The header names and how a dead letter is read back and replayed (``etrans dlq``):
:mod:`etrans.domain.dead_letters`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from etrans.domain.dead_letters import ERROR_HEADER, ERROR_TYPE_HEADER, SOURCE_HEADER

if TYPE_CHECKING:
    from etrans.app.ports import EventPublisher
    from etrans.pipeline.message import Message

__all__ = ["ERROR_HEADER", "ERROR_TYPE_HEADER", "SOURCE_HEADER", "dead_letter_headers",
           "publish_dead_letter"]


def dead_letter_headers(message: Message, error: BaseException) -> list[tuple[str, bytes]]:
    text = str(error) or type(error).__name__
    return [
        *message.headers,
        (ERROR_HEADER, text.encode("utf-8", "replace")),
        (ERROR_TYPE_HEADER, type(error).__name__.encode()),
        (SOURCE_HEADER, f"{message.topic}/{message.partition}/{message.offset}".encode()),
    ]


async def publish_dead_letter(
    producer: EventPublisher, topic: str, message: Message, error: BaseException
) -> None:
    """Publish ``message`` to ``topic`` with the error headers; waits for the broker's ack."""
    await producer.publish(topic, message.value, key=message.key,
                           headers=dead_letter_headers(message, error))
