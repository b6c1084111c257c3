"""The worker's decoder of Kafka send requests treats the topic as untrusted (pure: no services).

CR, LF or NUL in the envelope, an address or a header never reaches the OutgoingEmail that is
sent: such a request is refused (Reject event + dead-letter, see test_sendmail_untrusted.py), and
the envelope it is reported against carries no such character either.  Addresses are read with
the API's parser, from the canonical text the API writes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from etrans.api.emails import SEND_EMAIL
from etrans.domain.emails import sendmail_message
from etrans.domain.mime import Mailbox, OutgoingEmail
from etrans.workers.send_request import InvalidRequest, decode_request


def request(**overrides: Any) -> bytes:
    payload: dict[str, Any] = {
        "sender": {"name": "Sender", "email": "sender@example.com"},
        "recipients": ["to@example.com"], "cc": [], "bcc": [], "subject": "Hi",
        "body": "<p>line one\r\nline two</p>", "message_id": "msg_1@example.com",
        "attachments": [], "user_id": "7",
    }
    payload.update(overrides)
    return json.dumps({"payload": payload}).encode()


INJECTIONS = {
    "sender.email smuggles a RCPT": {"sender": {"name": "S", "email":
                                                "a@example.com>\r\nRCPT TO:<extra@evil.test"}},
    "sender.email LF": {"sender": {"name": "S", "email": "a@example.com\nRCPT TO:<x@evil.test>"}},
    "sender.email NUL": {"sender": {"name": "S", "email": "a@example.com\x00"}},
    "sender.name adds a header": {"sender": {"name": "S\r\nBcc: leak@evil.test",
                                             "email": "sender@example.com"}},
    "sender string": {"sender": "S <a@example.com>\r\nRCPT TO:<extra@evil.test>"},
    "message_id adds a header": {"message_id": "msg_1@example.com>\r\nBcc: leak@evil.test"},
    "message_id NUL": {"message_id": "msg_1@example.com\x00"},
    "user_id CR": {"user_id": "7\r8"},
    "recipient smuggles a RCPT": {"recipients": ["to@example.com>\r\nRCPT TO:<extra@evil.test"]},
    "cc LF": {"cc": ["cc@example.com\nBcc: leak@evil.test"]},
    "bcc NUL": {"bcc": ["b\x00@example.com"]},
    "recipient name CRLF": {"recipients": ["To\r\nBcc: leak@evil.test <to@example.com>"]},
    "reply_to CRLF": {"reply_to": "r@example.com\r\nBcc: leak@evil.test"},
    "subject adds a header": {"subject": "Hi\r\nBcc: leak@evil.test"},
    "header value adds a header": {"headers": {"X-Campaign": "c1\r\nBcc: leak@evil.test"}},
    "header name adds a header": {"headers": {"X-A\r\nBcc": "leak@evil.test"}},
    "header value NUL": {"headers": [{"name": "X-A", "value": "v\x00"}]},
    "attachment filename CRLF": {"attachments": [{"filename": "a\r\nBcc: leak@evil.test",
                                                  "content": "aGk=",
                                                  "content_type": "text/plain"}]},
    "attachment type CRLF": {"attachments": [{"filename": "a.txt", "content": "aGk=",
                                              "content_type": "text/plain\r\nBcc: x@evil.test"}]},
    "lone surrogate in body": {"body": "<p>\ud800</p>"},
    "unreadable recipient": {"recipients": ["to@example.com", "not an address"]},
    "address literal": {"recipients": ["postmaster@[127.0.0.1]"]},
}


def _no_unsafe(outgoing: OutgoingEmail) -> None:
    mailboxes: list[Mailbox] = [outgoing.sender, *outgoing.to, *outgoing.cc, *outgoing.bcc]
    texts = [outgoing.message_id, outgoing.user_id, outgoing.subject,
             *(m.email for m in mailboxes), *(m.name for m in mailboxes)]
    for text in texts:
        assert not any(ch in text for ch in "\r\n\x00"), text


@pytest.mark.parametrize("overrides", list(INJECTIONS.values()), ids=list(INJECTIONS))
def test_unsafe_requests_are_refused_with_a_safe_envelope(overrides: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_request(request(**overrides))
    assert caught.value.refused
    envelope = caught.value.email
    assert envelope is not None  # enough to publish a Reject event against
    assert envelope.to or envelope.cc or envelope.bcc
    _no_unsafe(envelope)
    assert not any(ch in caught.value.reason for ch in "\r\n\x00")


def test_the_reason_names_the_field() -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_request(request(headers={"X-A": "v\r\nBcc: leak@evil.test"}))
    assert caught.value.reason == "a header value contains CR, LF, NUL or a lone surrogate"
    with pytest.raises(InvalidRequest) as caught:
        decode_request(request(cc=["ok@example.com", "b@example.com\r\nX: y"]))
    assert caught.value.reason == "cc[1] contains CR, LF, NUL or a lone surrogate"


def test_invalid_detail_is_rejected_but_not_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_request(request(attachments=[{"filename": "a", "content": "%%%",
                                             "content_type": "text/plain"}]))
    assert caught.value.email is not None
    assert not caught.value.refused


def test_body_line_breaks_are_content_not_injection() -> None:
    outgoing = decode_request(request(text="a\r\nb\n\nc"))
    assert outgoing.html == "<p>line one\r\nline two</p>"
    assert outgoing.text == "a\r\nb\n\nc"


@pytest.mark.parametrize(("given", "email", "name"), [
    # What an earlier API version put into Kafka (the raw text it validated): read the same way.
    ("Smith, John <john@example.org>", "john@example.org", "Smith, John"),
    ("a@evil.test <bob@example.org>", "bob@example.org", "a@evil.test"),
    # The canonical text of today's API.
    ('"Smith, John" <john@example.org>', "john@example.org", "Smith, John"),
    ('"a@evil.test" <bob@example.org>', "bob@example.org", "a@evil.test"),
    ('"Say \\"hi\\"; (x)" <h@example.org>', "h@example.org", 'Say "hi"; (x)'),
])
def test_recipients_are_read_with_the_api_parser(given: str, email: str, name: str) -> None:
    outgoing = decode_request(request(recipients=[given]))
    assert outgoing.to == (Mailbox(email, name),)
    assert outgoing.envelope_recipients() == [email]


def test_what_the_api_validated_is_what_the_worker_reads() -> None:
    body = SEND_EMAIL.validate({
        "from": '"Acme, Inc." <news@example.com>',
        "to": ["Smith, John <john@example.org>", "a@evil.test <bob@example.org>"],
        "cc": ['"x, y" <c@example.org>'], "bcc": ["Doe; Jane <d@example.org>"],
        "reply_to": "Help (desk) <help@example.org>", "subject": "s", "html": "<p>h</p>"})
    record = sendmail_message(body, message_id="msg_1@example.com", user_id=7)
    assert record["payload"]["recipients"] == ['"Smith, John" <john@example.org>',
                                               '"a@evil.test" <bob@example.org>']
    outgoing = decode_request(json.dumps(record).encode())
    assert outgoing.sender == Mailbox("news@example.com", "Acme, Inc.")
    assert outgoing.envelope_recipients() == ["john@example.org", "bob@example.org",
                                              "c@example.org", "d@example.org"]
    assert [m.name for m in (*outgoing.to, *outgoing.cc, *outgoing.bcc)] == [
        "Smith, John", "a@evil.test", "x, y", "Doe; Jane"]
    assert outgoing.reply_to == (Mailbox("help@example.org", "Help (desk)"),)


UNSAFE_UNSUBSCRIBE = {
    "plain http": {"List-Unsubscribe": "<http://example.com/u>"},
    "javascript": {"list-unsubscribe": "<javascript:alert(document.cookie)>"},
    "relative": {"List-Unsubscribe": "</unsubscribe>"},
    "one-click without https": {"List-Unsubscribe": "<mailto:u@example.com>",
                                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
    "one-click alone": {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
    "wrong one-click value": {"List-Unsubscribe": "<https://example.com/u>",
                              "List-Unsubscribe-Post": "List-Unsubscribe=Yes"},
}


@pytest.mark.parametrize("headers", list(UNSAFE_UNSUBSCRIBE.values()), ids=list(UNSAFE_UNSUBSCRIBE))
def test_unsubscribe_headers_the_api_refuses_are_refused(headers: dict[str, str]) -> None:
    """The API's rule at the worker's trust boundary: a record written by something else with a
    bad List-Unsubscribe is refused like an unsafe header (Reject event + dead-letter)."""
    with pytest.raises(InvalidRequest) as caught:
        decode_request(request(headers=headers))
    assert caught.value.refused
    assert caught.value.reason.startswith("List-Unsubscribe"), caught.value.reason
    assert caught.value.email is not None


def test_unsubscribe_headers_the_api_accepts_reach_the_email() -> None:
    body = SEND_EMAIL.validate({
        "from": "news@example.com", "to": ["a@example.org"], "subject": "s", "html": "<p>h</p>",
        "headers": {"List-Unsubscribe": "<https://example.com/u/1>, <mailto:u@example.com>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}})
    record = sendmail_message(body, message_id="msg_1@example.com", user_id=7)
    outgoing = decode_request(json.dumps(record).encode())
    assert outgoing.headers == (
        ("List-Unsubscribe", "<https://example.com/u/1>, <mailto:u@example.com>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
