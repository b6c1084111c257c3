"""Use-case step of sendmail: open and click tracking of an email's HTML, before it is rendered
and DKIM-signed (``docs/tracking.md``).

Only emails of the API are tracked (message ids ``msg_...``, numeric user ids: what
:func:`etrans.domain.emails.new_message_id` and the API write), and only their HTML: the text
part keeps its links.  The sender domain's flags (PATCH /domains/{id}) come through the port
:class:`~etrans.app.ports.TrackingFlagsSource` (the adapter caches them); with open tracking on,
the HTML gets the pixel ``<base>/t/o/<token>``; with click tracking on, its http(s) links become
``<base>/t/c/<token>``, except the message's own ``List-Unsubscribe`` https URIs and links marked
``data-etrans-no-track`` (:func:`etrans.domain.tracking.instrument_html`).  The email stored by
the API (GET /emails/{id}) and the Kafka send request keep the user's HTML.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from etrans.domain.tracking import CLICK, OPEN, TrackingTarget, instrument_html, make_token
from etrans.domain.unsubscribe import LIST_UNSUBSCRIBE, UnsubscribeError, parse_list_unsubscribe

if TYPE_CHECKING:
    from etrans.app.ports import TrackingFlagsSource
    from etrans.domain.mime import OutgoingEmail

API_MESSAGE_ID_PREFIX = "msg_"


def is_api_email(outgoing: OutgoingEmail) -> bool:
    """An email the API accepted (the only ones whose events have an owner to go to)."""
    return (outgoing.message_id.startswith(API_MESSAGE_ID_PREFIX)
            and outgoing.user_id.isascii() and outgoing.user_id.isdigit())


def unsubscribe_uris(outgoing: OutgoingEmail) -> tuple[str, ...]:
    """The https URIs of the email's ``List-Unsubscribe`` header (never rewritten)."""
    for name, value in outgoing.headers:
        if name.lower() == LIST_UNSUBSCRIBE.lower():
            try:
                return tuple(uri for uri in parse_list_unsubscribe(value)
                             if uri.lower().startswith("https:"))
            except UnsubscribeError:
                return ()
    return ()


class MessageTracking:
    """Instruments the HTML of the emails whose domain has tracking on; one shared instance."""

    def __init__(self, key: bytes, base_url: str, flags: TrackingFlagsSource) -> None:
        self._key = key
        self._base = base_url.rstrip("/")
        self._flags = flags
        self.instrumented = 0

    def open_url(self, user_id: int, message_id: str) -> str:
        token = make_token(self._key, TrackingTarget(OPEN, user_id, message_id))
        return f"{self._base}/t/o/{token}"

    def click_url(self, user_id: int, message_id: str, url: str) -> str:
        token = make_token(self._key, TrackingTarget(CLICK, user_id, message_id, url))
        return f"{self._base}/t/c/{token}"

    async def instrument(self, outgoing: OutgoingEmail) -> OutgoingEmail:
        """``outgoing`` with its HTML instrumented, or ``outgoing`` itself (no HTML, not an API
        email, tracking off for its domain).  Raises RetryLater when the flags cannot be read."""
        if outgoing.html is None or not is_api_email(outgoing):
            return outgoing
        click, open_ = await self._flags.tracking_flags(outgoing.user_id,
                                                         outgoing.sender.domain)
        if not (click or open_):
            return outgoing
        user_id, message_id = int(outgoing.user_id), outgoing.message_id
        html = instrument_html(
            outgoing.html,
            click_url=((lambda url: self.click_url(user_id, message_id, url)) if click
                       else None),
            open_url=self.open_url(user_id, message_id) if open_ else None,
            skip=unsubscribe_uris(outgoing))
        self.instrumented += 1
        return replace(outgoing, html=html)

    def statistics(self) -> dict[str, int]:
        return {"instrumented": self.instrumented}
