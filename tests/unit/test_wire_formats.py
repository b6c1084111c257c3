"""The wire formats of docs/wire-formats.md written by the API: the credential test vector (read
from the document itself and checked with a from-scratch AES-256-CBC), and the sendmail record."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from etrans.adapters.crypto.credentials import CredentialCipher, SmtpCredentials
from etrans.domain.emails import sendmail_message

DOC = Path(__file__).parents[2] / "docs" / "wire-formats.md"


def _vector() -> dict[str, str]:
    text = DOC.read_text()
    section = text[text.index("## SMTP credential cache"):]
    block = section[section.index("```text") + 7:]
    block = block[:block.index("```")]
    values = {}
    for line in block.strip().splitlines():
        name, _, value = line.partition("=")
        values[name.strip()] = value.strip()
    return values


def test_credential_vector() -> None:
    v = _vector()
    plaintext = v["plaintext"].encode()
    assert plaintext.hex() == v["plaintext hex"]
    # From scratch: PKCS#7 padding, AES-256-CBC with the raw bytes of the variables, base64.
    pad = 16 - len(plaintext) % 16
    encryptor = Cipher(algorithms.AES(v["TOKEN_SECRET"].encode()),
                       modes.CBC(v["TOKEN_IV"].encode())).encryptor()
    raw = encryptor.update(plaintext + bytes([pad]) * pad) + encryptor.finalize()
    assert base64.b64encode(raw).decode() == v["value"]
    # The implementation agrees both ways.
    cipher = CredentialCipher(v["TOKEN_SECRET"], v["TOKEN_IV"])
    data = json.loads(plaintext)
    assert cipher.encrypt(SmtpCredentials(data["username"], data["password"])) == v["value"]
    assert cipher.decrypt(v["value"]) == SmtpCredentials(data["username"], data["password"])


def test_sendmail_record_matches_the_documented_example() -> None:
    text = DOC.read_text()
    section = text[text.index("## Send requests (KAFKA_TOPIC"):]
    block = section[section.index("```json") + 7:]
    documented = json.loads(block[:block.index("```")])
    request = {"from": "Acme <news@example.com>", "to": ["a@example.org"],
               "cc": ["c@example.org"], "bcc": ["b@example.org"], "subject": "Welcome",
               "html": "<b>Hi</b>", "text": "Hi", "reply_to": "help@example.org",
               "headers": {"X-Campaign": "c1"}, "tags": [{"name": "kind", "value": "welcome"}],
               "attachments": [{"filename": "a.txt", "content": "aGVsbG8=",
                                "content_type": "text/plain"}]}
    message_id = documented["payload"]["message_id"]
    assert re.fullmatch(r"msg_[0-9a-f]{32}@example\.com", message_id)
    assert sendmail_message(request, message_id=message_id, user_id=12345) == documented


def test_text_only_email_body_is_escaped_html() -> None:
    record = sendmail_message({"from": "a@example.com", "to": ["b@example.org"],
                               "subject": "s", "text": "1 < 2\nbye"},
                              message_id="m@example.com", user_id=1)["payload"]
    assert record["body"] == "1 &lt; 2<br>\nbye"
    assert record["text"] == "1 < 2\nbye"
    assert record["body_format"] == "text"
    assert record["sender"] == {"name": "", "email": "a@example.com"}
    assert (record["cc"], record["bcc"], record["attachments"]) == ([], [], [])
    assert "reply_to" not in record
