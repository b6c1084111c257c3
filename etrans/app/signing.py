"""Use-case step of sendmail: DKIM-sign a rendered message with its sender domain's key.

The sender's domain is the ``From`` address's domain; its key (selector + private key) comes from
where the billing mode keeps it, through the port :class:`~etrans.app.ports.DkimKeySource`; the
signature itself (canonicalisation, hash, RSA) is the port
:class:`~etrans.app.ports.MessageSigner`.  The setting ``SENDMAIL_DKIM_SIGNING``
(:class:`SigningMode`) decides what happens without a usable key:

- ``auto`` (default): signed when the domain has a usable key, else sent unsigned;
- ``on``: never sent unsigned: no key, or one that cannot be used, rejects the email
  (:class:`SigningRefused`, a permanent failure: Reject events, like a 5xx);
- ``off``: never signed (the relay signs).

A key store that cannot be reached raises :class:`~etrans.errors.RetryLater` through
:meth:`MessageSigning.sign`: an outage, retried by the pipeline, never a bounce.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.app.ports import DkimKeySource, MessageSigner
    from etrans.domain.mime import OutgoingEmail

log = get_logger(__name__)

# The header fields signed, those present in the message (RFC 6376 5.4: the ones that matter to
# the reader), and the one-click unsubscribe pair, which RFC 8058 requires to be signed.  Bcc is
# never a header; other custom headers are not signed.
SIGNED_HEADERS = ("From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To",
                  "MIME-Version", "Content-Type", "List-Unsubscribe", "List-Unsubscribe-Post")


class SigningMode(StrEnum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class DkimKey:
    """A domain's DKIM signing key: ``d=<domain>``, ``s=<selector>``, the PEM private key."""

    domain: str
    selector: str
    private_key_pem: bytes = field(repr=False)


class DkimKeyUnavailable(Exception):
    """The domain has a key that cannot be used (does not decrypt, unreadable format)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SigningRefused(Exception):
    """``on``: the email would go out unsigned.  ``reply`` goes to the Reject events."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class MessageSigning:
    """What sendmail does to a rendered message before sending it; one shared instance."""

    def __init__(self, mode: SigningMode = SigningMode.OFF, keys: DkimKeySource | None = None,
                 signer: MessageSigner | None = None) -> None:
        if mode is SigningMode.ON and (keys is None or signer is None):
            raise ValueError("signing mode on needs a key source and a signer")
        self.mode = mode
        # ``off``, or ``auto`` with nowhere to read keys from: every message goes out unsigned.
        self._keys = keys if mode is not SigningMode.OFF else None
        self._signer = signer
        self.signed = 0
        self.unsigned = 0

    async def sign(self, outgoing: OutgoingEmail, data: bytes) -> bytes:
        """``data`` with a ``DKIM-Signature`` header first, or ``data`` unchanged (``auto``
        without a usable key, ``off``); raises :class:`SigningRefused` (``on``)."""
        if self._keys is None or self._signer is None:
            self.unsigned += 1
            return data
        domain = outgoing.sender.domain
        try:
            key = await self._keys.signing_key(outgoing.user_id, domain)
        except DkimKeyUnavailable as exc:
            return self._unsigned(data, domain, exc.reason)
        if key is None:
            return self._unsigned(data, domain, "the domain has no DKIM key")
        try:
            signed = await self._signer.sign(data, key)
        except ValueError as exc:  # a key the signer cannot use (not RSA, unparsable)
            log.warning("could not sign", domain=domain, error=str(exc))
            return self._unsigned(data, domain, str(exc))
        self.signed += 1
        return signed

    def _unsigned(self, data: bytes, domain: str, problem: str) -> bytes:
        if self.mode is SigningMode.ON:
            raise SigningRefused(f"550 5.7.1 etrans: not signed, so not sent "
                                 f"(SENDMAIL_DKIM_SIGNING=on): {domain}: {problem}")
        self.unsigned += 1
        return data

    def statistics(self) -> dict[str, int | str]:
        return {"mode": str(self.mode), "signed": self.signed, "unsigned": self.unsigned}
