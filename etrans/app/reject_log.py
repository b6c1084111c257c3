"""The ``Reject`` events ``etrans sendmail`` (and the outbox relay, for an email it fails)
publishes to LOG_TOPIC: the spec's "Log Event Format" (``docs/wire-formats.md``), with an
``Event_ID`` stable across redeliveries and etrans's ``bounce_class``."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from etrans.domain.bounces import classify

if TYPE_CHECKING:
    from etrans.domain.mime import OutgoingEmail

AGENT_TYPE = "etrans-sendmail"
# Event_ID = uuid5(this namespace, "<message_id>\n<recipient>"): stable across redeliveries, so
# a Reject published twice is stored once by fetchlog (its documents are unique by event_id).
EVENT_ID_NAMESPACE = uuid.UUID("6f1f4a52-5b8e-4c44-9d0e-2d1c0e9a7b31")


@dataclass(frozen=True)
class Agent:
    """The ``agent`` object of published events (Filebeat's shape, our identity)."""

    id: str
    hostname: str
    name: str
    ephemeral_id: str
    type: str = AGENT_TYPE

    @classmethod
    def for_this_process(cls) -> Agent:
        hostname = socket.gethostname()
        return cls(
            id=str(uuid.uuid5(EVENT_ID_NAMESPACE, f"agent:{hostname}")),
            hostname=hostname,
            name=f"{AGENT_TYPE}@{hostname}",
            ephemeral_id=f"{uuid.uuid4()}-{os.getpid()}",
        )

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "type": self.type, "hostname": self.hostname, "name": self.name,
                "ephemeral_id": self.ephemeral_id}


def reject_event_id(message_id: str, recipient: str) -> str:
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{message_id}\n{recipient.lower()}"))


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def reject_event(outgoing: OutgoingEmail, recipient: str, response: str, *, agent: Agent,
                 now: datetime | None = None) -> dict[str, Any]:
    """The spec's "Log Event Format" for a rejection of ``recipient`` (Event ``Reject``), plus
    etrans's ``bounce_class`` of ``response`` (:mod:`etrans.domain.bounces`)."""
    names = {m.email.lower(): m.name for m in (*outgoing.to, *outgoing.cc, *outgoing.bcc)}
    return {
        "Event": "Reject",
        "@timestamp": _timestamp(now or datetime.now(UTC)),
        "SMTP_Action": "rejected",
        "from": outgoing.sender.email,
        "from_name": outgoing.sender.name,
        "recipient": recipient,
        "to_name": names.get(recipient.lower(), ""),
        "response": response,
        "from_domain": outgoing.sender.domain,
        "Event_ID": reject_event_id(outgoing.message_id, recipient),
        "message_id": outgoing.message_id,
        "to_domain": recipient.rpartition("@")[2].lower(),
        "agent": agent.as_dict(),
        "bounce_class": classify(response).value,
    }


