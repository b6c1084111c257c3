"""Bounce classes: what a failed recipient's SMTP reply says about the address.

A recipient that was not delivered gets one :class:`BounceClass` from the reply that refused it
(``response`` of a ``Reject`` event, or of a bounced event of the SMTP server's log), read from
its basic reply code (RFC 5321), its enhanced status code (RFC 3463, ``class.subject.detail``)
and, where the codes leave it open, its text:

- ``hard``: the address does not exist and will not: unknown user or domain (5.1.x), disabled
  account (5.2.1), unroutable domain (5.4.4), null MX (5.1.10, RFC 7505), a 550 "user unknown"
  without an enhanced code.  The suppression list is built from these;
- ``soft``: the address exists but cannot take mail now: every temporary (4xx) reply that is
  not about the connection, and mailbox full (5.2.2, 552) or message too big (5.2.3, 5.3.4),
  which are permanent codes for a temporary state of the mailbox;
- ``policy``: the receiving side refuses this sender or this message, not the address: 5.7.x
  (spam, authentication SPF/DKIM/DMARC, blocked or blacklisted IP, relay denied), content
  (5.6.x), the sender's own address refused (5.1.7, 5.1.8);
- ``infrastructure``: transient infrastructure, neither the address nor the message: connection
  refused, reset or timed out, TLS failures, 421 (the server closes the session: busy, rate
  limited), network and routing (4.4.x), mail system status (X.3.x), and a failure that carries
  no SMTP reply code at all.

Pure rules, standard library only; ``docs/bounces.md`` is the same table for users, with
examples.  Used by :func:`etrans.app.sendmail.reject_event` and
:func:`etrans.domain.delivery_log.to_document`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class BounceClass(enum.StrEnum):
    HARD = "hard"
    SOFT = "soft"
    POLICY = "policy"
    INFRASTRUCTURE = "infrastructure"

    @property
    def suppresses(self) -> bool:
        """Whether a bounce of this class puts the address on the suppression list."""
        return self is BounceClass.HARD


@dataclass(frozen=True)
class SmtpReply:
    """The parts of one reply: ``code`` (e.g. 550), ``enhanced`` (class, subject, detail) and the
    whole text; a part not found is None."""

    code: int | None
    enhanced: tuple[int, int, int] | None
    text: str


# The first basic code: at the start, or after "said:" / a space ("host x said: 550-5.1.1").
_CODE = re.compile(r"(?:^|[\s:(\[])([245]\d\d)(?=[ -]|$)")
# An enhanced code is neither part of an IP address nor of a longer dotted number.
_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\d|\.\d)")


def parse_reply(response: str) -> SmtpReply:
    """Find the reply code and enhanced status code in ``response`` (a reply as the SMTP server
    sent it, or as an MTA's log quotes it)."""
    code_match = _CODE.search(response)
    code = int(code_match.group(1)) if code_match else None
    start = code_match.end(1) if code_match else 0
    enhanced_match = _ENHANCED.search(response, start) or _ENHANCED.search(response)
    enhanced = None
    if enhanced_match is not None:
        klass, subject, detail = (int(part) for part in enhanced_match.groups())
        enhanced = (klass, subject, detail)
    return SmtpReply(code, enhanced, response)


def _phrases(*words: str) -> re.Pattern[str]:
    return re.compile("|".join(words), re.IGNORECASE)


# The connection, not the recipient: checked before the codes for temporary replies.
_INFRASTRUCTURE_TEXT = _phrases(
    r"connection (?:refused|reset|timed out)", r"timed? ?out",
    r"lost connection", r"closed the connection", r"network is unreachable", r"no route to host",
    r"\b(?:start)?tls\b", r"\bssl\b", r"certificate", r"server busy", r"too many connections",
    r"service (?:not available|unavailable|temporarily unavailable)",
    r"not queued for delivery", r"host not found, try again",
)
# etrans's own outbox failing an email it could not hand to Kafka (docs/wire-formats.md).
_OWN_PIPELINE = re.compile(r"etrans: not queued for delivery")
# The address does not exist: the usual wordings of servers that give no (or a vague) code.
_HARD_TEXT = _phrases(
    r"user unknown", r"unknown user", r"unknown recipient", r"no such (?:user|mailbox|recipient)",
    r"does(?: not|n'?t) exist", r"doesn'?t have an? \S+ account", r"mailbox (?:unavailable|"
    r"not found|does not exist|is disabled|disabled)", r"invalid (?:recipient|mailbox)",
    r"recipient (?:address )?rejected", r"recipient not found", r"account (?:is )?disabled",
    r"unrout(?:e)?able", r"host or domain name not found(?!.*try again)",
    r"address (?:not found|unknown)", r"no mailbox",
)
_SOFT_TEXT = _phrases(
    r"mailbox (?:is )?full", r"over ?quota", r"quota exceeded", r"exceeded (?:storage|quota)",
    r"insufficient storage", r"greylist", r"temporarily deferred",
)
_POLICY_TEXT = _phrases(
    r"spam", r"block(?:ed|list)", r"blacklist", r"spamhaus", r"dmarc", r"\bspf\b", r"\bdkim\b",
    r"relay", r"policy", r"reputation", r"unauthenticated", r"authentication", r"not authori[sz]ed",
    r"rejected for policy", r"content rejected", r"virus",
)

# Enhanced codes decided by their subject and detail (permanent class 5).
_PERMANENT: dict[tuple[int, int], BounceClass] = {
    (1, 7): BounceClass.POLICY,  # bad sender's mailbox address syntax
    (1, 8): BounceClass.POLICY,  # bad sender's system address
    (2, 1): BounceClass.HARD,  # mailbox disabled, not accepting messages
    (2, 2): BounceClass.SOFT,  # mailbox full
    (2, 3): BounceClass.SOFT,  # message length exceeds administrative limit
    (3, 4): BounceClass.SOFT,  # message too big for system
    (4, 4): BounceClass.HARD,  # unable to route: the domain has no mail host
}
_PERMANENT_SUBJECT: dict[int, BounceClass] = {
    1: BounceClass.HARD,  # addressing: bad mailbox, bad domain, null MX (5.1.10) ...
    3: BounceClass.INFRASTRUCTURE,  # mail system status
    6: BounceClass.POLICY,  # message content or media
    7: BounceClass.POLICY,  # security or policy
}


def classify(response: str) -> BounceClass:
    """The class of a failure whose reply is ``response`` (see the module docstring)."""
    return classify_reply(parse_reply(response))


def classify_reply(reply: SmtpReply) -> BounceClass:
    code, enhanced, text = reply.code, reply.enhanced, reply.text
    severity = code // 100 if code is not None else (enhanced[0] if enhanced else None)
    if severity is None:
        # No SMTP reply at all: the delivery machinery failed (unless the text says otherwise).
        return _by_text(text) or BounceClass.INFRASTRUCTURE
    if code == 421 or (severity != 5 and _INFRASTRUCTURE_TEXT.search(text)):
        return BounceClass.INFRASTRUCTURE
    if _OWN_PIPELINE.search(text):
        return BounceClass.INFRASTRUCTURE  # etrans's outbox could not queue it (5.3.4)
    if severity != 5:
        if enhanced is not None and enhanced[1] in (3, 4):
            return BounceClass.INFRASTRUCTURE  # mail system, network and routing
        return BounceClass.SOFT
    if enhanced is not None:
        subject, detail = enhanced[1], enhanced[2]
        decided = _PERMANENT.get((subject, detail)) or _PERMANENT_SUBJECT.get(subject)
        if decided is not None:
            return decided
        if subject == 4 and _HARD_TEXT.search(text) is None:
            return BounceClass.INFRASTRUCTURE  # routing: no answer, bad connection, loop
    return _by_text(text) or _by_code(code)


def _by_text(text: str) -> BounceClass | None:
    if _SOFT_TEXT.search(text):
        return BounceClass.SOFT
    if _POLICY_TEXT.search(text):
        return BounceClass.POLICY
    if _HARD_TEXT.search(text):
        return BounceClass.HARD
    if _INFRASTRUCTURE_TEXT.search(text):
        return BounceClass.INFRASTRUCTURE
    return None


def _by_code(code: int | None) -> BounceClass:
    """A permanent reply whose enhanced code and text said nothing more (RFC 5321, RFC 7504)."""
    if code in (550, 551, 553, 521, 556):  # mailbox unavailable / not local / name not allowed
        return BounceClass.HARD
    if code == 552:  # exceeded storage allocation
        return BounceClass.SOFT
    if code in (530, 535, 554):  # authentication required or failed; transaction failed
        return BounceClass.POLICY
    return BounceClass.INFRASTRUCTURE  # 500-504: syntax and protocol errors
