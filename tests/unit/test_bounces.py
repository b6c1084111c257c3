"""Bounce classes over real-world replies (Gmail, Outlook, Yahoo, Postfix, etrans's own)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etrans.domain.bounces import BounceClass, classify, parse_reply

HARD, SOFT, POLICY, INFRA = (BounceClass.HARD, BounceClass.SOFT, BounceClass.POLICY,
                             BounceClass.INFRASTRUCTURE)

GMAIL = [
    ("550-5.1.1 The email account that you tried to reach does not exist. Please try "
     "550-5.1.1 double-checking the recipient's email address for typos or "
     "550-5.1.1 unnecessary spaces. For more information, go to "
     "550 5.1.1 https://support.google.com/mail/?p=NoSuchUser d2e1a72fcca58-7"
     "0f4a54b1d1si2011263b3a.123 - gsmtp", HARD),
    ("550-5.2.1 The email account that you tried to reach is disabled. "
     "550 5.2.1 https://support.google.com/mail/?p=DisabledUser - gsmtp", HARD),
    ("452-4.2.2 The email account that you tried to reach is over quota. Please direct "
     "452-4.2.2 the recipient to https://support.google.com/mail/?p=OverQuotaTemp - gsmtp", SOFT),
    ("552-5.2.2 The email account that you tried to reach is over quota and inactive. "
     "552 5.2.2 https://support.google.com/mail/?p=OverQuotaPerm - gsmtp", SOFT),
    ("550-5.7.26 Unauthenticated email from example.com is not accepted due to domain's "
     "550-5.7.26 DMARC policy. Please contact the administrator of example.com domain "
     "550 5.7.26 https://support.google.com/mail/answer/2451690 - gsmtp", POLICY),
    ("550-5.7.1 [203.0.113.5] Our system has detected that this message is likely unsolicited "
     "550-5.7.1 mail. To reduce the amount of spam sent to Gmail, this message has been "
     "550 5.7.1 blocked. - gsmtp", POLICY),
    ("421-4.7.0 [203.0.113.5] Our system has detected an unusual rate of unsolicited mail "
     "421-4.7.0 originating from your IP address. To protect our users from spam, mail sent "
     "421 4.7.0 from your IP address has been temporarily rate limited. - gsmtp", INFRA),
    ("451-4.3.0 Mail server temporarily rejected message. - gsmtp", INFRA),
    ("450-4.2.1 The user you are trying to contact is receiving mail at a rate that "
     "450 4.2.1 prevents additional messages from being delivered. - gsmtp", SOFT),
]

OUTLOOK = [
    ("550 5.5.0 Requested action not taken: mailbox unavailable", HARD),
    ("550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
     HARD),
    ("550 5.4.1 Recipient address rejected: Access denied. AS(201806281) "
     "[DB5EUR03FT012.eop-EUR03.prod.protection.outlook.com]", HARD),
    ("550 5.7.1 Service unavailable, Client host [203.0.113.5] blocked using Spamhaus. To "
     "request removal from this list see https://www.spamhaus.org/query/ip/203.0.113.5 "
     "(AS3130). [AM4EUR05FT010.eop-eur05.prod.protection.outlook.com]", POLICY),
    ("550 5.7.606 Access denied, banned sending IP [203.0.113.5]. To request removal from "
     "this list please visit https://sender.office.com/", POLICY),
    ("451 4.7.500 Server busy. Please try again later from [203.0.113.5]. (S77719) "
     "[VE1EUR03FT043.eop-EUR03.prod.protection.outlook.com]", INFRA),
    ("452 4.3.1 Insufficient system resources", INFRA),
]

YAHOO = [
    ("554 delivery error: dd This user doesn't have a yahoo.com account (nobody@yahoo.com) "
     "[0] - mta1234.mail.bf1.yahoo.com", HARD),
    ("554 delivery error: dd Sorry, your message to x@yahoo.com cannot be delivered. This "
     "mailbox is disabled (554.30). - mta4001.mail.gq1.yahoo.com", HARD),
    ("421 4.7.0 [TSS04] Messages from 203.0.113.5 temporarily deferred due to unexpected "
     "volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
     INFRA),
    ("553 5.7.1 [BL21] Connections will not be accepted from 203.0.113.5, because the ip is "
     "in Spamhaus's list; see https://postmaster.yahooinc.com/error-codes", POLICY),
    ("554 5.7.9 Message not accepted for policy reasons.  See "
     "https://postmaster.yahooinc.com/error-codes", POLICY),
    ("451 Message temporarily deferred - [160]", SOFT),
]

POSTFIX = [
    ("550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in local "
     "recipient table", HARD),
    ("host mx.example.com[198.51.100.7] said: 550 5.1.1 <nobody@example.com>: Recipient "
     "address rejected: User unknown in virtual mailbox table (in reply to RCPT TO command)",
     HARD),
    ("450 4.1.8 <bounce@nowhere.example>: Sender address rejected: Domain not found", SOFT),
    ("554 5.7.1 <x@example.net>: Relay access denied", POLICY),
    ("552 5.2.2 Mailbox full", SOFT),
    ("552 5.3.4 Message size exceeds fixed limit", SOFT),
    ("450 4.2.0 <x@example.com>: Recipient address rejected: Greylisted, see "
     "http://postgrey.schweikert.ch/help/example.com.html", SOFT),
    ("556 5.1.10 <x@example.com>: Recipient address rejected: Domain example.com does not "
     "accept mail (nullMX)", HARD),
    ("550 User unknown", HARD),
    ("550 Requested action not taken: mailbox unavailable", HARD),
    ("551 User not local; please try <x@example.org>", HARD),
    ("552 Requested mail action aborted: exceeded storage allocation", SOFT),
    ("554 Transaction failed", POLICY),
    ("554 5.4.14 Hop count exceeded - possible mail loop", INFRA),
    ("connect to mx.example.com[198.51.100.7]:25: Connection timed out", INFRA),
    ("connect to mx.example.com[198.51.100.7]:25: Connection refused", INFRA),
    ("lost connection with mx.example.com[198.51.100.7] while receiving the initial server "
     "greeting", INFRA),
    ("Host or domain name not found. Name service error for name=nowhere.example type=MX: "
     "Host not found", HARD),
    ("Host or domain name not found. Name service error for name=example.com type=MX: "
     "Host not found, try again", INFRA),
    ("unknown user: \"nobody\"", HARD),
    ("", INFRA),
]

# What etrans writes itself when no server gave a reply (docs/wire-formats.md).
ETRANS = [
    ("530 5.7.0 etrans: no SMTP credentials for user_id 42", POLICY),
    ("535 5.7.8 etrans: cached SMTP credentials of user_id 42 cannot be decrypted", POLICY),
    ("554 5.6.0 etrans: invalid request: attachments[0].content is not base64", POLICY),
    ("451 4.4.1 etrans: connection to smtp.example.com:587 failed: [Errno 111] refused", INFRA),
    ("451 4.4.2 etrans: timeout talking to smtp.example.com:587", INFRA),
    ("454 4.7.0 etrans: TLS certificate of smtp.example.com:587 not trusted: self-signed", INFRA),
    ("451 4.4.7 etrans: not attempted (etrans: gave up after 300 s)", INFRA),
    ("452 4.2.2 Mailbox full (etrans: gave up after 300 s)", SOFT),
    ("554 5.3.4 etrans: not queued for delivery: the Kafka broker refused the record 5 times: "
     "KafkaError", INFRA),
]


@pytest.mark.parametrize(("response", "expected"), GMAIL + OUTLOOK + YAHOO + POSTFIX + ETRANS)
def test_real_world_replies(response: str, expected: BounceClass) -> None:
    assert classify(response) is expected


def test_only_hard_bounces_suppress() -> None:
    assert [c.value for c in BounceClass if c.suppresses] == ["hard"]
    assert [c.value for c in BounceClass] == ["hard", "soft", "policy", "infrastructure"]


def test_parse_reply_ignores_ip_addresses_and_finds_the_quoted_reply() -> None:
    reply = parse_reply("host mx[5.9.1.2] said: 550-5.1.1 no such user")
    assert (reply.code, reply.enhanced) == (550, (5, 1, 1))
    assert parse_reply("550 5.1.10 null MX").enhanced == (5, 1, 10)
    assert parse_reply("connect to 4.2.2.1:25: refused") == parse_reply(
        "connect to 4.2.2.1:25: refused").__class__(None, None, "connect to 4.2.2.1:25: refused")


def test_the_basic_code_decides_between_temporary_and_permanent() -> None:
    # A server that sends a temporary reply with a permanent enhanced code: retried, not hard.
    assert classify("450 5.1.1 try later") is SOFT
    assert classify("5.1.1 no basic code") is HARD


@given(st.text(max_size=200))
def test_any_text_gets_a_class(response: str) -> None:
    assert isinstance(classify(response), BounceClass)
