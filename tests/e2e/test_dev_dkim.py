"""``etrans dev`` signs: a domain created through the API (its key kept encrypted in SQLite's
``local_dkim``), published on the loopback DNS server and verified there, sends a message that
the built-in SMTP server keeps; that message verifies with dkimpy's ``verify`` over real DNS."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import dkim
import pytest

from tests.e2e.dev_support import base_env, start_dev, wait_for
from tests.harness.dns import LoopbackDnsServer
from tests.integration.test_sendmail_dkim import DOTTED_TEXT, dns_txt

pytestmark = pytest.mark.slow


def publish(dns_server: LoopbackDnsServer, domain: dict[str, Any]) -> None:
    name = domain["domain"]
    spf, mx, record = domain["dns_records"]
    dns_server.set_records(name, "TXT", [f'"{spf["value"]}"'])
    dns_server.set_records(name, "MX", [f'{mx["priority"]} {mx["value"]}.'])
    value = record["value"]
    dns_server.set_records(f'{record["name"]}.{name}', "TXT",
                           [" ".join(f'"{value[i:i + 200]}"' for i in range(0, len(value), 200))])


def test_dev_signs_with_the_key_of_a_domain_created_through_the_api(
    tmp_path: Path, dns_server: LoopbackDnsServer,
) -> None:
    dev = start_dev(tmp_path / "data", env=base_env(DNS_NAMESERVERS=dns_server.address))
    try:
        name = f"d{uuid.uuid4().hex[:12]}.example.test"
        created = dev.call("POST", "/domains", json={"domain": name})
        assert created.status_code == 200, created.text
        domain = created.json()
        publish(dns_server, domain)
        verified = dev.call("POST", f"/domains/{domain['id']}/verify")
        assert verified.status_code == 200, verified.text
        sender = dev.call("POST", "/senders", json={"account": f"hello@{name}", "domain": name,
                                                    "password": "dev-dkim-password"})
        assert sender.status_code == 200, sender.text
        sent = dev.call("POST", "/emails", json={
            "from": f"Chào <hello@{name}>", "to": ["someone@example.org"],
            "subject": "Chào bạn: thư đã ký", "text": DOTTED_TEXT, "html": "<p>Hi</p>"})
        assert sent.status_code == 200, sent.text
        message_id = sent.json()["id"]

        def stored() -> bytes | None:
            for path in dev.mail_dir.rglob("*.eml"):
                data = path.read_bytes()
                if message_id.encode() in data.split(b"\n\n", 1)[0]:
                    return data
            return None

        data = wait_for(stored, 60, f"{message_id} in the mail directory", dev.tails)
    finally:
        assert dev.stop() == [0], dev.tails()
    wire = data.replace(b"\n", b"\r\n")  # the sink keeps LF line ends
    assert wire.startswith(b"DKIM-Signature: ")
    assert f"d={name};".encode() in wire.split(b"\r\n\r\n", 1)[0]
    assert dkim.verify(wire, dnsfunc=dns_txt(dns_server))
    assert not dkim.verify(wire.replace(b"Hi", b"Ho"), dnsfunc=dns_txt(dns_server))
