"""The bytes of an email as it goes out, and what a defect met while building them means.

The MIME builder (:func:`etrans.domain.mime.render`) is a pure function of the decoded request:
an exception from it is a defect that the same input meets on every attempt, not an outage.
:func:`build_message` turns it into :class:`Unbuildable`, which the delivery rejects at once
(a Reject event per recipient: the email shows as Bounced) instead of handing it to the
pipeline, whose retries would go on for as long as the process lives and keep the partition's
offset from moving.  The defect is logged with its traceback for the operator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from etrans.domain.mime import render
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.domain.mime import OutgoingEmail

log = get_logger(__name__)

UNBUILDABLE_REPLY = ("554 5.6.0 etrans: the message could not be built "
                     "(a defect in etrans; the sendmail log has the details)")


class Unbuildable(Exception):
    """The message could not be built; ``reply`` goes to the Reject events."""

    reply = UNBUILDABLE_REPLY


def build_message(outgoing: OutgoingEmail) -> bytes:
    """The rendered message (CRLF line ends); :class:`Unbuildable` when the builder fails."""
    try:
        return render(outgoing)
    except Exception as exc:  # a defect, the same on every attempt: never retried
        log.exception("the message could not be built", error_type=type(exc).__name__)
        raise Unbuildable(UNBUILDABLE_REPLY) from exc
