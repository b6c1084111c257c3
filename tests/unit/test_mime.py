"""MIME rendering and send-request decoding (pure: no services)."""

from __future__ import annotations

import base64
import email
import email.policy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etrans.app.sendmail import Agent, reject_event, reject_event_id
from etrans.domain.mime import Attachment, Mailbox, OutgoingEmail, build_mime, render
from etrans.workers.sendmail import InvalidRequest, decode_request
from tests.harness.address_fields import field_value, header_block, read_addresses

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 4


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def spec_request(**overrides: object) -> dict:
    """The spec's "Kafka Message Format", as the old API produced it."""
    payload = {
        "sender": {"name": "Sender Name", "email": "sender@example.com"},
        "recipients": ["to@example.com"],
        "cc": ["cc@example.com"],
        "bcc": ["bcc@example.com"],
        "subject": "Subject line",
        "body": "<html>Email body</html>",
        "message_id": "<unique-message-id@example.com>",
        "attachments": [
            {"filename": "file.pdf", "content": base64.b64encode(PDF).decode(),
             "content_type": "application/pdf"},
        ],
        "user_id": "12345",
    }
    payload.update(overrides)
    return {"payload": payload}


def test_spec_request_decodes_to_the_email() -> None:
    outgoing = decode_request(json.dumps(spec_request()).encode())
    assert outgoing.message_id == "<unique-message-id@example.com>"
    assert outgoing.user_id == "12345"
    assert outgoing.sender == Mailbox("sender@example.com", "Sender Name")
    assert [m.email for m in outgoing.to] == ["to@example.com"]
    assert [m.email for m in outgoing.cc] == ["cc@example.com"]
    assert [m.email for m in outgoing.bcc] == ["bcc@example.com"]
    assert outgoing.html == "<html>Email body</html>"
    assert outgoing.text is None
    assert outgoing.attachments == (Attachment("file.pdf", PDF, "application/pdf"),)
    assert outgoing.envelope_recipients() == ["to@example.com", "cc@example.com",
                                              "bcc@example.com"]


def test_superset_fields_decode() -> None:
    request = spec_request(text="plain body", reply_to="replies@example.com",
                           headers={"X-Campaign": "spring"},
                           tags=[{"name": "kind", "value": "welcome"}], user_id=12345,
                           cc=None, bcc=None, attachments=None)
    outgoing = decode_request(json.dumps(request).encode())
    assert outgoing.text == "plain body"
    assert outgoing.reply_to == (Mailbox("replies@example.com"),)
    assert outgoing.headers == (("X-Campaign", "spring"),)
    assert outgoing.tags == (("kind", "welcome"),)
    assert outgoing.user_id == "12345"
    assert outgoing.cc == ()
    assert outgoing.bcc == ()
    assert outgoing.attachments == ()


@pytest.mark.parametrize("raw", [b"not json", b"[1]", b"{}",
                                 json.dumps({"payload": {"message_id": "m1"}}).encode(),
                                 json.dumps(spec_request(recipients=[], cc=[], bcc=[])).encode(),
                                 json.dumps(spec_request(message_id="")).encode(), None])
def test_requests_without_an_addressable_email_are_poison(raw: bytes | None) -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_request(raw)
    assert caught.value.email is None


def test_bad_attachment_is_invalid_but_reportable() -> None:
    request = spec_request(attachments=[{"filename": "x", "content": "%%%",
                                         "content_type": "text/plain"}])
    with pytest.raises(InvalidRequest) as caught:
        decode_request(json.dumps(request).encode())
    assert caught.value.email is not None
    assert caught.value.email.message_id == "<unique-message-id@example.com>"
    assert "base64" in caught.value.reason


def full_email() -> OutgoingEmail:
    return OutgoingEmail(
        message_id="abc-123@etrans.test",
        user_id="7",
        sender=Mailbox("sender@example.com", "Nguyễn Văn Ánh"),
        to=(Mailbox("to@example.com", "Trần Thị Bé"), Mailbox("two@example.com")),
        cc=(Mailbox("cc@example.com", "Carbon Copy"),),
        bcc=(Mailbox("hidden@example.com"),),
        reply_to=(Mailbox("replies@example.com", "Hộp thư"),),
        subject="Xin chào - hóa đơn tháng 3 ✓",
        html="<p>Chào bạn</p>",
        text="Chào bạn",
        headers=(("X-Campaign", "spring"), ("Bcc", "leak@example.com"),
                 ("X-Evil", "a\r\nBcc: leak@example.com"), ("Message-ID", "<other@x>")),
        attachments=(Attachment("báo cáo.pdf", PDF, "application/pdf"),
                     Attachment("data.csv", b"a,b\n1,2\n", "text/csv")),
    )


def test_mime_field_by_field() -> None:
    data = render(full_email())
    assert b"\r\n" in data
    assert b"\n" not in data.replace(b"\r\n", b"")
    message = parse(data)
    assert message["From"].addresses[0].display_name == "Nguyễn Văn Ánh"
    assert message["From"].addresses[0].addr_spec == "sender@example.com"
    to = message["To"].addresses
    assert [(a.display_name, a.addr_spec) for a in to] == [("Trần Thị Bé", "to@example.com"),
                                                           ("", "two@example.com")]
    assert [a.addr_spec for a in message["Cc"].addresses] == ["cc@example.com"]
    assert message["Reply-To"].addresses[0].addr_spec == "replies@example.com"
    assert message["Reply-To"].addresses[0].display_name == "Hộp thư"
    assert str(message["Subject"]) == "Xin chào - hóa đơn tháng 3 ✓"
    assert message["Message-ID"] == "<abc-123@etrans.test>"
    assert message["Date"] is not None
    assert message["X-Campaign"] == "spring"
    # bcc only in the envelope; reserved names and injected lines never become headers.
    assert message["Bcc"] is None
    assert not any(line.lower().startswith(b"bcc:") for line in data.split(b"\r\n"))
    assert b"hidden@example.com" not in data
    assert message.get_all("Message-ID") == ["<abc-123@etrans.test>"]
    # Headers are 7-bit on the wire: UTF-8 goes through RFC 2047 encoded words.
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()

    assert message.get_content_type() == "multipart/mixed"
    body, *attachments = message.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    plain, html = body.iter_parts()
    assert plain.get_content_type() == "text/plain"
    assert plain.get_content().strip() == "Chào bạn"
    assert html.get_content_type() == "text/html"
    assert html.get_content().strip() == "<p>Chào bạn</p>"
    assert [a.get_content_type() for a in attachments] == ["application/pdf", "text/csv"]
    assert attachments[0].get_filename() == "báo cáo.pdf"
    assert attachments[0].get_content() == PDF
    assert attachments[1].get_payload(decode=True) == b"a,b\n1,2\n"


def test_injected_header_stays_on_one_line() -> None:
    message = parse(render(full_email()))
    assert message["X-Evil"] == "a Bcc: leak@example.com"
    assert message["Bcc"] is None


@pytest.mark.parametrize(
    ("html", "text", "content_type"),
    [("<b>h</b>", None, "text/html"), (None, "t", "text/plain"),
     ("<b>h</b>", "t", "multipart/alternative")],
)
def test_body_shapes(html: str | None, text: str | None, content_type: str) -> None:
    outgoing = OutgoingEmail(message_id="m@x", user_id="1", sender=Mailbox("a@x.com"),
                             to=(Mailbox("b@x.com"),), subject="s", html=html, text=text)
    message = parse(render(outgoing))
    assert message.get_content_type() == content_type


def test_reject_event_has_the_filebeat_shape() -> None:
    outgoing = full_email()
    agent = Agent(id="a1", hostname="h", name="n", ephemeral_id="e")
    event = reject_event(outgoing, "cc@example.com", "550 5.1.1 no such user", agent=agent)
    assert event["Event"] == "Reject"
    assert event["SMTP_Action"] == "rejected"
    assert event["@timestamp"].endswith("Z")
    assert event["from"] == "sender@example.com"
    assert event["from_name"] == "Nguyễn Văn Ánh"
    assert event["recipient"] == "cc@example.com"
    assert event["to_name"] == "Carbon Copy"
    assert event["response"] == "550 5.1.1 no such user"
    assert event["from_domain"] == "example.com"
    assert event["to_domain"] == "example.com"
    assert event["message_id"] == "abc-123@etrans.test"
    assert event["agent"]["type"] == "etrans-sendmail"
    assert event["Event_ID"] == reject_event_id("abc-123@etrans.test", "cc@example.com")
    assert event["Event_ID"] != reject_event_id("abc-123@etrans.test", "to@example.com")


def test_reject_event_carries_the_bounce_class_of_its_response() -> None:
    agent = Agent(id="a1", hostname="h", name="n", ephemeral_id="e")
    classes = [reject_event(full_email(), "cc@example.com", response, agent=agent)["bounce_class"]
               for response in ("550 5.1.1 no such user", "452 4.2.2 over quota",
                                "554 5.7.1 Relay access denied",
                                "451 4.4.2 etrans: timeout talking to smtp.example:587")]
    assert classes == ["hard", "soft", "policy", "infrastructure"]


SIMPLE_CASES = [
    dict(html="<p>hello</p>"),
    dict(text="plain only\nsecond line"),
    dict(html="<p>h</p>\n.\n..dots", text="t\r\nwith CRLF\rand CR"),
    dict(html="<p>Chào bạn - UTF-8 body</p>", text="Chào"),
    dict(html="x" * 1500),
    dict(html="", text=""),
]


@pytest.mark.parametrize("body", SIMPLE_CASES)
def test_fast_rendering_matches_the_email_package(body: dict[str, str]) -> None:
    from etrans.domain.mime import _render_simple, build_mime

    outgoing = OutgoingEmail(
        message_id="fast@etrans.test", user_id="1",
        sender=Mailbox("sender@example.com", 'Team "Ops", Inc.'),
        to=(Mailbox("a@example.com", "Alice A."), Mailbox("b@example.com")),
        cc=(Mailbox("c@example.com"),), reply_to=(Mailbox("r@example.com", "Replies"),),
        subject="Monthly report", headers=(("X-Campaign", "march"), ("Bcc", "x@y.z")),
        **body,
    )
    date = "Sun, 29 Nov 2026 12:00:00 +0000"
    fast = _render_simple(outgoing, date)
    assert fast is not None, "this case should take the fast path"
    slow = build_mime(outgoing, date=date).as_bytes(policy=email.policy.SMTP)
    a, b = parse(fast), parse(slow)
    for name in ("From", "To", "Cc", "Reply-To", "Subject", "Message-ID", "Date", "X-Campaign",
                 "MIME-Version"):
        assert str(a[name]) == str(b[name]), name
    assert a["Bcc"] is None
    assert a.get_content_type() == b.get_content_type()
    assert [p.get_content_type() for p in a.walk()] == [p.get_content_type() for p in b.walk()]
    fast_leaves = [p.get_content() for p in a.walk() if not p.is_multipart()]
    slow_leaves = [p.get_content() for p in b.walk() if not p.is_multipart()]
    def normal(texts: list[str]) -> list[str]:
        return [t.replace("\r\n", "\n").rstrip("\n") for t in texts]

    assert normal(fast_leaves) == normal(slow_leaves)
    assert all(len(line) <= 998 for line in fast.split(b"\r\n"))
    assert b"\n" not in fast.replace(b"\r\n", b"")


def test_non_ascii_headers_and_attachments_take_the_email_package_path() -> None:
    from etrans.domain.mime import _render_simple

    assert _render_simple(full_email(), None) is None
    ascii_but_attachment = OutgoingEmail(
        message_id="m@x", user_id="1", sender=Mailbox("a@x.com"), to=(Mailbox("b@x.com"),),
        subject="s", html="h", attachments=(Attachment("a.bin", b"1"),))
    assert _render_simple(ascii_but_attachment, None) is None


# -- address fields: written by etrans, read back by standard readers ---------------------------

_NAME_CHARS = st.one_of(
    st.sampled_from(list(',;:"\\()[]{}<>@.!#=?\' ')),
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\u2028\u2029"),
)
_NAMES = st.lists(st.one_of(st.text(_NAME_CHARS, max_size=12),
                            st.sampled_from(["=?utf-8?q?x?=", "a@evil.test", "<b@evil.test>",
                                             "  ", "Smith, John"])),
                  max_size=8).map("".join)


@given(st.lists(_NAMES, min_size=1, max_size=4), _NAMES, st.booleans())
@settings(max_examples=300, deadline=None)
def test_address_fields_read_back_exactly(names: list[str], sender_name: str,
                                          with_attachment: bool) -> None:
    to = tuple(Mailbox(f"r{i}@example.org", name) for i, name in enumerate(names))
    outgoing = OutgoingEmail(
        message_id="m@etrans.test", user_id="1", sender=Mailbox("s@example.com", sender_name),
        to=to[:2], cc=to[2:], reply_to=to[:1], subject="s", html="<p>h</p>",
        attachments=(Attachment("a.bin", b"1"),) if with_attachment else ())
    data = render(outgoing, date="Sun, 29 Nov 2026 12:00:00 +0000")
    head = header_block(data)
    assert head.isascii()
    assert all(len(line) <= 78 for line in head.split(b"\r\n")), head
    assert b"\n" not in head.replace(b"\r\n", b"")
    for field, mailboxes in (("From", (outgoing.sender,)), ("To", outgoing.to),
                             ("Cc", outgoing.cc), ("Reply-To", outgoing.reply_to)):
        value = field_value(head, field)
        if not mailboxes:
            assert value is None
            continue
        assert value is not None
        assert read_addresses(value) == [(m.name, m.email) for m in mailboxes], value
        # The modern parser agrees on who the recipients are.
        assert [a.addr_spec for a in parse(data)[field].addresses] == [m.email
                                                                       for m in mailboxes]
    # The two renderings write the same address fields.
    slow = build_mime(outgoing, date="Sun, 29 Nov 2026 12:00:00 +0000").as_bytes(
        policy=email.policy.SMTP.clone(refold_source="none"))
    for field in ("From", "To", "Cc", "Reply-To"):
        assert field_value(header_block(slow), field) == field_value(head, field)


# -- one-click unsubscribe headers: folded between URIs, never encoded --------------------------

LONG_HTTPS = f"<https://news.example.com/unsubscribe/{'a1b2c3d4' * 12}?list=weekly&u=42>"
UNSUBSCRIBE_MAILTO = "<mailto:unsubscribe@news.example.com?subject=unsubscribe>"


def unsubscribe_email(value: str, **fields: object) -> OutgoingEmail:
    return OutgoingEmail(
        message_id="u@etrans.test", user_id="1", sender=Mailbox("news@example.com"),
        to=(Mailbox("b@example.org"),), subject="Weekly", text="hi",
        headers=(("list-unsubscribe", value),
                 ("list-unsubscribe-post", "List-Unsubscribe=One-Click")),
        **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("fields", [{}, {"attachments": (Attachment("a.txt", b"x"),)}],
                         ids=["fast path", "email package"])
def test_long_list_unsubscribe_is_folded_between_uris_not_encoded(fields: dict) -> None:
    data = render(unsubscribe_email(f"{LONG_HTTPS},{UNSUBSCRIBE_MAILTO}", **fields))
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    assert f"\r\nList-Unsubscribe: {LONG_HTTPS},\r\n {UNSUBSCRIBE_MAILTO}\r\n" in head
    assert "\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in head
    assert "=?" not in head
    assert all(len(line) <= 998 for line in head.split("\r\n"))
    message = parse(data)
    assert str(message["List-Unsubscribe"]) == f"{LONG_HTTPS}, {UNSUBSCRIBE_MAILTO}"
    assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"


def test_short_unsubscribe_headers_take_the_fast_path_like_the_email_package() -> None:
    from etrans.domain.mime import _render_simple

    outgoing = unsubscribe_email("<https://example.com/u/1>")
    date = "Sun, 29 Nov 2026 12:00:00 +0000"
    fast = _render_simple(outgoing, date)
    assert fast is not None
    slow = build_mime(outgoing, date=date).as_bytes(policy=email.policy.SMTP)
    for data in (fast, slow):
        assert b"\r\nList-Unsubscribe: <https://example.com/u/1>\r\n" in data
        assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in data


def test_an_invalid_unsubscribe_header_is_never_written() -> None:
    # The worker refuses such requests first; the writer leaves the header out all the same.
    data = render(unsubscribe_email("<javascript:alert(1)>"))
    assert b"javascript" not in data
    assert b"List-Unsubscribe" in data  # the -Post header, valid on its own, is written
    assert parse(data)["List-Unsubscribe"] is None


@pytest.mark.parametrize("attachments", [(), (Attachment("a.txt", b"hello", "text/plain"),)],
                         ids=["fast", "email package"])
def test_an_email_without_to_says_undisclosed_recipients(attachments: tuple[Attachment, ...]
                                                          ) -> None:
    """Every to of the request was suppressed (the API leaves them out): the cc still gets a
    valid To field, an empty group, and the envelope holds the cc and bcc only."""
    outgoing = OutgoingEmail(message_id="m@etrans.test", user_id="1",
                             sender=Mailbox("sender@example.com"), to=(),
                             cc=(Mailbox("c@example.com"),), bcc=(Mailbox("b@example.com"),),
                             subject="s", text="hi", attachments=attachments)
    message = parse(render(outgoing))
    assert message["To"] == "undisclosed-recipients:;"
    assert message["Cc"] == "c@example.com"
    assert outgoing.envelope_recipients() == ["c@example.com", "b@example.com"]
