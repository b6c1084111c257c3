"""DKIM signing: the signer checked by an independent verifier (dkimpy's ``verify``), the
signing modes of sendmail (``auto``/``on``/``off``) on a fake key source, and the setting.

The key record is handed to the verifier in memory here; ``tests/integration/test_sendmail_dkim.py``
serves it from the loopback DNS server and signs what ``etrans sendmail`` really sent.
"""

from __future__ import annotations

import re
from functools import cache

import dkim
import pytest

from etrans.adapters.crypto.dkim_keys import generate_dkim_key_pair
from etrans.adapters.crypto.dkim_signer import DkimSigner, _header_fields
from etrans.app.signing import (
    DkimKey,
    DkimKeyUnavailable,
    MessageSigning,
    SigningMode,
    SigningRefused,
)
from etrans.domain.domains import DkimKeyPair
from etrans.domain.mime import Attachment, Mailbox, OutgoingEmail, render
from etrans.errors import ConfigError
from etrans.settings import for_command
from tests.unit.test_settings import SENDMAIL_ENV

DOMAIN = "signed.example"


@cache
def key_pair() -> DkimKeyPair:
    return generate_dkim_key_pair(bits=1024)  # fast to make; the signer does not care


def signing_key() -> DkimKey:
    return DkimKey(DOMAIN, key_pair().record.selector, key_pair().private_key_pem)


def txt_record(name: bytes, timeout: int = 5) -> bytes | None:
    """dkimpy's ``dnsfunc``: the TXT record of ``<selector>._domainkey.<domain>``."""
    record = key_pair().record
    if name.decode().rstrip(".") == f"{record.name}.{DOMAIN}":
        return record.txt_value.encode()
    return None


def outgoing(**fields: object) -> OutgoingEmail:
    base: dict[str, object] = {
        "message_id": "<m-1@etrans.test>", "user_id": "42",
        "sender": Mailbox(f"news@{DOMAIN}", "News"), "to": (Mailbox("a@example.org"),),
        "subject": "Hello", "text": "Hi there\n",
    }
    base.update(fields)
    return OutgoingEmail(**base)  # type: ignore[arg-type]


def sign_now(message: bytes, key: DkimKey) -> bytes:
    return DkimSigner().signature_header(message, key) + message


def signed_headers(message: bytes) -> list[str]:
    field = message.split(b"\r\n\r\n", 1)[0].decode()
    tags = re.search(r"\bh=([^;]+);", field.replace("\r\n", ""))
    assert tags is not None
    return [name.strip() for name in tags.group(1).split(":")]


MESSAGES = {
    "plain": outgoing(),
    "html and text": outgoing(html="<p>Hi</p>", text="Hi"),
    "non-ascii subject and names": outgoing(
        subject="Xin chào, ưu đãi tháng 12 🎁", sender=Mailbox(f"news@{DOMAIN}", "Trần Thị"),
        to=(Mailbox("a@example.org", "Người nhận"),), text="Nội dung tiếng Việt\n"),
    "attachment": outgoing(attachments=(Attachment("report.pdf", b"%PDF-1.4\n" + bytes(range(256)),
                                                   "application/pdf"),)),
    "dot-stuffed lines": outgoing(text=".\n.leading dot\n..two dots\nend\n.\n"),
    "cc, reply-to, custom header": outgoing(
        cc=(Mailbox("c@example.org"),), reply_to=(Mailbox(f"help@{DOMAIN}"),),
        headers=(("X-Campaign", "winter"),)),
    "long folded to": outgoing(to=tuple(Mailbox(f"user{i}@example.org", f"User Number {i}")
                                        for i in range(8))),
}


@pytest.mark.parametrize("name", list(MESSAGES))
async def test_signed_messages_verify_with_dkimpy(name: str) -> None:
    data = render(MESSAGES[name])
    signed = await DkimSigner().sign(data, signing_key())
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert signed.endswith(data)
    assert dkim.verify(signed, dnsfunc=txt_record)


def test_the_headers_that_matter_are_signed_those_present_only() -> None:
    plain = sign_now(render(MESSAGES["plain"]), signing_key())
    assert signed_headers(plain) == ["from", "to", "subject", "date", "message-id",
                                     "mime-version", "content-type"]
    full = sign_now(render(MESSAGES["cc, reply-to, custom header"]), signing_key())
    assert signed_headers(full) == ["from", "to", "cc", "subject", "date", "message-id",
                                    "reply-to", "mime-version", "content-type"]
    unsubscribe = sign_now(render(outgoing(headers=(
        ("List-Unsubscribe", "<https://news.signed.example/u/1>, <mailto:u@signed.example>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")))), signing_key())
    assert signed_headers(unsubscribe)[-2:] == ["list-unsubscribe", "list-unsubscribe-post"]
    assert dkim.verify(unsubscribe, dnsfunc=txt_record)  # RFC 8058: they must be signed
    field = full.split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b" ")
    assert f"d={DOMAIN};".encode() in field
    assert f"s={key_pair().record.selector};".encode() in field


@pytest.mark.parametrize("tamper", [
    lambda m: m.replace(b"Hi there", b"Hi their"),  # the body
    lambda m: m.replace(b"Subject: Hello", b"Subject: Hellp"),  # a signed header
    lambda m: m.replace(b"To: a@example.org", b"To: b@example.org"),
    lambda m: m + b"appended\r\n",  # no l=: the whole body is signed
])
def test_a_tampered_message_fails(tamper: object) -> None:
    signed = sign_now(render(MESSAGES["plain"]), signing_key())
    assert dkim.verify(signed, dnsfunc=txt_record)
    assert not dkim.verify(tamper(signed), dnsfunc=txt_record)  # type: ignore[operator]


def test_whitespace_changes_relaxed_canonicalisation_allows_still_verify() -> None:
    signed = sign_now(render(MESSAGES["plain"]), signing_key())
    assert dkim.verify(signed.replace(b"Subject: Hello", b"Subject:   Hello"),
                       dnsfunc=txt_record)


# -- the modes --------------------------------------------------------------------------------

class FakeKeys:
    """DkimKeySource: a key per (user_id, domain); ``broken`` domains raise unusable."""

    def __init__(self, keys: dict[tuple[str, str], DkimKey],
                 broken: frozenset[str] = frozenset()) -> None:
        self.keys = keys
        self.broken = broken
        self.calls: list[tuple[str, str]] = []

    async def signing_key(self, user_id: str, domain: str) -> DkimKey | None:
        self.calls.append((user_id, domain))
        if domain in self.broken:
            raise DkimKeyUnavailable("stored DKIM key does not decrypt")
        return self.keys.get((user_id, domain))


def signing(mode: SigningMode, keys: FakeKeys) -> MessageSigning:
    return MessageSigning(mode, keys, DkimSigner())


async def test_auto_signs_with_the_from_domains_key_of_that_user() -> None:
    keys = FakeKeys({("42", DOMAIN): signing_key()})
    data = render(MESSAGES["plain"])
    signed = await signing(SigningMode.AUTO, keys).sign(MESSAGES["plain"], data)
    assert dkim.verify(signed, dnsfunc=txt_record)
    assert keys.calls == [("42", DOMAIN)]
    other_user = outgoing(user_id="43")
    assert await signing(SigningMode.AUTO, keys).sign(other_user, data) == data


async def test_auto_without_a_usable_key_sends_unsigned() -> None:
    keys = FakeKeys({}, broken=frozenset({"broken.example"}))
    data = render(MESSAGES["plain"])
    policy = signing(SigningMode.AUTO, keys)
    assert await policy.sign(MESSAGES["plain"], data) == data
    broken = outgoing(sender=Mailbox("a@broken.example"))
    broken_data = render(broken)
    assert await policy.sign(broken, broken_data) == broken_data
    assert policy.statistics()["unsigned"] == 2


async def test_on_refuses_to_send_unsigned() -> None:
    keys = FakeKeys({}, broken=frozenset({"broken.example"}))
    policy = signing(SigningMode.ON, keys)
    with pytest.raises(SigningRefused, match=r"^550 5\.7\.1 .*no DKIM key"):
        await policy.sign(MESSAGES["plain"], render(MESSAGES["plain"]))
    broken = outgoing(sender=Mailbox("a@broken.example"))
    with pytest.raises(SigningRefused, match="does not decrypt"):
        await policy.sign(broken, render(broken))


async def test_a_key_the_signer_cannot_use_is_unsigned_in_auto_refused_in_on() -> None:
    bad = DkimKey(DOMAIN, "dkim",
                  b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    keys = FakeKeys({("42", DOMAIN): bad})
    data = render(MESSAGES["plain"])
    assert await signing(SigningMode.AUTO, keys).sign(MESSAGES["plain"], data) == data
    with pytest.raises(SigningRefused):
        await signing(SigningMode.ON, keys).sign(MESSAGES["plain"], data)


async def test_off_never_asks_for_a_key() -> None:
    keys = FakeKeys({("42", DOMAIN): signing_key()})
    data = render(MESSAGES["plain"])
    assert await signing(SigningMode.OFF, keys).sign(MESSAGES["plain"], data) == data
    assert keys.calls == []


def test_on_needs_a_key_source() -> None:
    with pytest.raises(ValueError, match="on needs"):
        MessageSigning(SigningMode.ON, None, DkimSigner())
    MessageSigning(SigningMode.AUTO, None, DkimSigner())  # auto without keys: unsigned


# -- the setting ------------------------------------------------------------------------------

def test_signing_setting_and_where_keys_are_read() -> None:
    default = for_command("sendmail", SENDMAIL_ENV)
    assert default.sendmail.dkim_signing == "auto"
    assert default.dkim_keys is None  # no database configured: auto sends unsigned
    local = for_command("sendmail", {**SENDMAIL_ENV, "USEND_DB_URI": "postgresql://u@h/usend",
                                     "DB_URI": "postgresql://u@h/billing"})
    assert local.dkim_keys is not None
    assert (local.dkim_keys.uri.get(), local.dkim_keys.external) == ("postgresql://u@h/usend",
                                                                      False)
    external = for_command("sendmail", {**SENDMAIL_ENV, "USEND_DB_URI": "postgresql://u@h/usend",
                                        "DB_URI": "postgresql://u@h/billing",
                                        "BILLING_V4_URI": "https://billing.example/v4"})
    assert external.dkim_keys is not None
    assert (external.dkim_keys.uri.get(), external.dkim_keys.external) == (
        "postgresql://u@h/billing", True)
    off = for_command("sendmail", {**SENDMAIL_ENV, "SENDMAIL_DKIM_SIGNING": "off",
                                   "USEND_DB_URI": "postgresql://u@h/usend"})
    assert (off.sendmail.dkim_signing, off.dkim_keys) == ("off", None)


def test_signing_setting_problems_are_named() -> None:
    with pytest.raises(ConfigError, match="SENDMAIL_DKIM_SIGNING must be one of auto, on, off"):
        for_command("sendmail", {**SENDMAIL_ENV, "SENDMAIL_DKIM_SIGNING": "yes"})
    with pytest.raises(ConfigError, match="SENDMAIL_DKIM_SIGNING=on needs USEND_DB_URI"):
        for_command("sendmail", {**SENDMAIL_ENV, "SENDMAIL_DKIM_SIGNING": "on"})
    with pytest.raises(ConfigError, match="SENDMAIL_DKIM_SIGNING=on needs DB_URI"):
        for_command("sendmail", {**SENDMAIL_ENV, "SENDMAIL_DKIM_SIGNING": "on",
                                 "BILLING_V4_URI": "https://billing.example/v4"})


def test_signer_threads_setting() -> None:
    assert for_command("sendmail", SENDMAIL_ENV).sendmail.dkim_signer_threads == 2
    inline = for_command("sendmail", {**SENDMAIL_ENV, "SENDMAIL_DKIM_SIGNER_THREADS": "0"})
    assert inline.sendmail.dkim_signer_threads == 0
    with pytest.raises(ConfigError, match="SENDMAIL_DKIM_SIGNER_THREADS"):
        for_command("sendmail", {**SENDMAIL_ENV, "SENDMAIL_DKIM_SIGNER_THREADS": "-1"})


def test_signer_setting() -> None:
    assert for_command("sendmail", SENDMAIL_ENV).sendmail.dkim_signer == "process"
    threads = for_command("sendmail", {**SENDMAIL_ENV, "SENDMAIL_DKIM_SIGNER": "Threads"})
    assert threads.sendmail.dkim_signer == "threads"
    with pytest.raises(ConfigError, match="SENDMAIL_DKIM_SIGNER must be process or threads"):
        for_command("sendmail", {**SENDMAIL_ENV, "SENDMAIL_DKIM_SIGNER": "processes"})


# -- our header canonicalisation against dkimpy's ------------------------------------------------

CONFORMANCE = {
    **{name: render(message) for name, message in MESSAGES.items()},
    "folded, tabs, trailing spaces": (
        b"From:  News \t <news@signed.example>  \r\nTo: a@example.org,\r\n\t b@example.org\r\n"
        b"Subject:\tHello   there \t\r\n  and more\r\nX-Other: x\r\n\r\nBody  \t\r\n\r\n\r\n"),
    "duplicate fields, the last one signed": (
        b"Subject: first\r\nFrom: a@signed.example\r\nSubject: second\r\nTo: b@example.org\r\n"
        b"\r\nbody\r\n"),
    "empty body": b"From: a@signed.example\r\nTo: b@example.org\r\n\r\n",
    "mixed-case names, no space after the colon": (
        b"FROM:a@signed.example\r\nsubject:Hi\r\nMessage-id:<x@y>\r\n\r\n.\r\n..\r\n"),
    "bare LF line ends (dkimpy's path)": b"From: a@signed.example\nSubject: lf\n\nbody\n",
    "a line that is not a field (dkimpy's path)": (
        b"From a@signed.example Sun Dec  6 2026\r\nFrom: a@signed.example\r\n\r\nbody\r\n"),
}


@pytest.mark.parametrize("name", list(CONFORMANCE))
def test_our_header_canonicalisation_gives_dkimpys_digest(name: str) -> None:
    signer, key = DkimSigner(), signing_key()
    assert (_header_fields(CONFORMANCE[name]) is None) == ("dkimpy's path" in name)
    ours = signer.prepare(CONFORMANCE[name], key, timestamp=1_800_000_000)
    assert ours == signer.prepare_with_dkimpy(CONFORMANCE[name], key, timestamp=1_800_000_000)
    signed = signer.signature_header(CONFORMANCE[name], key) + CONFORMANCE[name]
    assert dkim.verify(signed, dnsfunc=txt_record)
