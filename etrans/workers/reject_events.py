"""Reject events for a send request that will never reach ``etrans sendmail``.

The outbox relay fails an email whose record Kafka can never take
(``etrans/adapters/sql/outbox.py``); its log then shows what sendmail would have written for an
email it could not deliver: one ``Reject`` event per envelope recipient, in the format of
``docs/wire-formats.md`` (same ``Event_ID`` rule), with ``agent.type`` ``etrans-outbox``.
"""

from __future__ import annotations

import json
from dataclasses import replace

from etrans.app.reject_log import Agent, reject_event
from etrans.workers.sendmail import InvalidRequest, decode_request

AGENT_TYPE = "etrans-outbox"


def outbox_agent() -> Agent:
    agent = Agent.for_this_process()
    return replace(agent, type=AGENT_TYPE, name=f"{AGENT_TYPE}@{agent.hostname}")


def reject_events(raw: bytes, response: str, *, agent: Agent) -> list[tuple[bytes | None, bytes]]:
    """``(key, value)`` of the Reject events of the send request ``raw`` (none when it names no
    message_id, sender or recipient)."""
    try:
        email = decode_request(raw)
    except InvalidRequest as exc:
        if exc.email is None:
            return []
        email = exc.email
    key = email.message_id.encode()
    return [(key, json.dumps(reject_event(email, recipient, response, agent=agent),
                             ensure_ascii=False).encode())
            for recipient in email.envelope_recipients()]
