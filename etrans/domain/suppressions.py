"""The suppression list's rules: which addresses a user must not mail again, and why.

An address is suppressed per user (tenant) for one :class:`SuppressionReason`:

- ``hard_bounce``: a recipient's reply had the ``hard`` bounce class
  (:mod:`etrans.domain.bounces`): from ``etrans sendmail``'s own 5xx (its Reject event) or from a
  delivery-log event fetchlog stored;
- ``complaint``: the recipient reported the mail as spam;
- ``manual``: added through ``POST /suppressions``.

Addresses are compared normalised (:func:`normalise_address`): the domain is case-insensitive
(RFC 5321 section 2.4) and, as every large mailbox provider treats local parts
case-insensitively, so is the local part; the suppression list errs towards not mailing.
Pure rules, standard library only.
"""

from __future__ import annotations

import enum

MAX_ADDRESS_LENGTH = 320


class SuppressionReason(enum.StrEnum):
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    MANUAL = "manual"


def normalise_address(address: str) -> str:
    """The key an address is suppressed under: the bare address, stripped and lower-cased."""
    return address.strip().lower()
