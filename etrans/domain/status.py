"""Raw delivery statuses (database rows, log documents) and the API's display labels.

The table of the spec: queued -> Queued; sender/sent -> Sent; delivered/delivery -> Delivered;
deferred -> Delayed; bounced/reject/rejected -> Bounced; and etrans's own failed -> Failed (the
outbox could never hand the email to Kafka: ``docs/api.md``), suppressed -> Suppressed (every
recipient is on the sender's suppression list: never sent), scheduled -> Scheduled (waiting in the
outbox for its ``scheduled_at``: :mod:`etrans.domain.schedule`) and cancelled -> Cancelled (its
schedule was cancelled: never sent).  Filters accept raw and display
names, case-insensitively (``delayed`` and ``deferred`` both select Delayed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

QUEUED, SENT, DELIVERED, DELAYED, BOUNCED = "Queued", "Sent", "Delivered", "Delayed", "Bounced"
FAILED, SUPPRESSED = "Failed", "Suppressed"
SCHEDULED, CANCELLED = "Scheduled", "Cancelled"
LABELS = (QUEUED, SENT, DELIVERED, DELAYED, BOUNCED, FAILED, SUPPRESSED, SCHEDULED, CANCELLED)

# The raw statuses POST /emails stores: queued (to be published), scheduled (to be published at
# its scheduled_at) or suppressed (never published); cancelled: a scheduled email cancelled.
RAW_QUEUED, RAW_SUPPRESSED = "queued", "suppressed"
RAW_SCHEDULED, RAW_CANCELLED = "scheduled", "cancelled"

# Display label -> every raw value meaning it.
RAW_BY_LABEL: Mapping[str, tuple[str, ...]] = {
    QUEUED: ("queued",),
    SENT: ("sent", "sender"),
    DELIVERED: ("delivered", "delivery"),
    DELAYED: ("deferred",),
    BOUNCED: ("bounced", "reject", "rejected"),
    FAILED: ("failed",),
    SUPPRESSED: (RAW_SUPPRESSED,),
    SCHEDULED: (RAW_SCHEDULED,),
    CANCELLED: (RAW_CANCELLED,),
}
LABEL_BY_RAW: Mapping[str, str] = {
    raw: label for label, raws in RAW_BY_LABEL.items() for raw in raws
}

# Log events of the fetchlog worker, for documents whose action says nothing we know.
LABEL_BY_EVENT: Mapping[str, str] = {
    "sender": SENT, "queue": QUEUED, "deferred": DELAYED, "reject": BOUNCED,
}

# Names a filter accepts: raw values, display labels, lower-cased.
FILTER_NAMES: Mapping[str, str] = {
    **{label.lower(): label for label in LABELS},
    **LABEL_BY_RAW,
}


class StatusFilterError(ValueError):
    pass


class Stat(TypedDict):
    label: str
    count: int
    percentage: float


def display_label(raw: str | None) -> str:
    """The display label of a raw status; unknown values keep their own capitalised name."""
    if not raw:
        return QUEUED
    return LABEL_BY_RAW.get(raw.strip().lower(), raw.strip().capitalize())


def log_label(action: str | None, event: str | None) -> str:
    """The display label of a log document: its action when known, else its event type."""
    if action and action.strip().lower() in LABEL_BY_RAW:
        return LABEL_BY_RAW[action.strip().lower()]
    if event and event.strip().lower() in LABEL_BY_EVENT:
        return LABEL_BY_EVENT[event.strip().lower()]
    return display_label(action or event)


def parse_status_filter(text: str) -> tuple[str, ...]:
    """``"delivered,Delayed"`` -> the display labels selected, in order, without repeats."""
    labels: list[str] = []
    for part in text.split(","):
        name = part.strip().lower()
        if not name:
            continue
        label = FILTER_NAMES.get(name)
        if label is None:
            allowed = ("queued, sent, delivered, bounced, deferred, delayed, failed, "
                       "suppressed, scheduled, cancelled")
            raise StatusFilterError(f"invalid status {part.strip()!r}: use {allowed}")
        if label not in labels:
            labels.append(label)
    if not labels:
        raise StatusFilterError("status filter is empty")
    return tuple(labels)


def raw_statuses(labels: Iterable[str]) -> tuple[str, ...]:
    """Every raw value meaning one of ``labels`` (for a database or log query)."""
    return tuple(raw for label in labels for raw in RAW_BY_LABEL[label])


def percentages(counts: Mapping[str, int], order: Iterable[str] | None = None) -> list[Stat]:
    """``{"Delivered": 30, "Bounced": 12}`` -> stats with percentages (one decimal) of the total.

    Labels with a zero count are left out; ``order`` fixes the order of the known labels.
    """
    total = sum(counts.values())
    keys = list(order) if order is not None else sorted(counts, key=lambda k: (-counts[k], k))
    keys += [k for k in counts if k not in keys]
    return [
        Stat(label=k, count=counts[k], percentage=round(100.0 * counts[k] / total, 1))
        for k in keys
        if counts.get(k, 0) > 0
    ]


def smtp_short_code(response: str | None) -> str:
    """``"250 2.0.0 OK 1772679259 xyz"`` -> ``"250 2.0.0 OK"``.

    The reply code, the enhanced status code when present, and the first word of the text when it
    is a plain word (letters only): what a person scanning a log wants to read.
    """
    if not response:
        return ""
    tokens = response.split()
    short = tokens[:1]
    rest = tokens[1:]
    if rest and rest[0].count(".") == 2 and rest[0].replace(".", "").isdigit():
        short.append(rest[0])
        rest = rest[1:]
    if rest and rest[0].isalpha():
        short.append(rest[0])
    return " ".join(short)
