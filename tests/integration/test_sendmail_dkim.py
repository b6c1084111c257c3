"""DKIM signing in ``etrans sendmail``, end to end on the real servers.

Each test runs the ``sendmail`` subcommand in process (its settings from the environment, as in
production) over a Kafka topic, with the domains' keys where local billing keeps them (the
``local_dkim`` rows of the USEND DB, written by the API's own gateway, encrypted), the public
halves published on the loopback DNS server, and an SMTP server that keeps what it received.
The messages it received must verify with dkimpy's ``verify`` resolving
``<selector>._domainkey.<domain>`` over real DNS against that server; ``on`` without a key
rejects (Reject event, nothing sent); ``off`` signs nothing.  SIGTERM while the signing process
or threads (``SENDMAIL_DKIM_SIGNER``) are busy loses nothing and sends nothing unsigned; a
killed signing process is replaced and every email still arrives once, signed.
"""

from __future__ import annotations

import base64
import os
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import dkim
import dns.resolver
import pytest
import trio

from etrans import settings
from etrans.adapters.crypto.dkim_keys import DkimKeyCipher, generate_dkim_key_pair
from etrans.adapters.sql import usend_database
from etrans.adapters.sql.billing_local import LocalBillingGateway
from etrans.bootstrap import sendmail as sendmail_wiring
from etrans.runtime import Shutdown
from tests.harness.dns import LoopbackDnsServer
from tests.harness.smtp import SmtpTestServer
from tests.integration.sendmail_support import (
    PDF,
    CredentialFixture,
    produce_requests,
    read_events,
    simple_request,
)
from tests.integration.test_sendmail_service import start_worker, stop_worker, wait_count

# A body line that starts with "." travels dot-stuffed (".." on the wire, RFC 5321 4.5.2).
DOTTED_TEXT = "Hello,\n.a line that starts with a dot\n..and one with two\n.\nBye\n"


class Account:
    """A user with SMTP credentials in Redis and, optionally, a sending domain with a DKIM key
    (created through the local billing gateway, published on the loopback DNS server)."""

    def __init__(self, user_id: str, domain: str) -> None:
        self.user_id = user_id
        self.domain = domain

    def request(self, message_id: str, **overrides: Any) -> dict[str, Any]:
        return simple_request(message_id, self.user_id,
                              sender={"name": "Ví dụ", "email": f"news@{self.domain}"},
                              **overrides)


@pytest.fixture
def accounts(etrans_env: Callable[..., dict[str, str]], redis_url: str,
             dns_server: LoopbackDnsServer) -> Iterator[Callable[..., Awaitable[Account]]]:
    env = etrans_env()
    credentials = CredentialFixture(redis_url, env["TOKEN_SECRET"], env["TOKEN_IV"])
    db = usend_database(env["USEND_DB_URI"], pool_size=1)
    gateway = LocalBillingGateway(db, DkimKeyCipher(env["TOKEN_SECRET"]))

    async def make(*, with_key: bool = True) -> Account:
        user_id = str(uuid.uuid4().int % 10**12)
        credentials.add("dkim-user", "dkim-pass", user_id=user_id)
        domain = f"d{uuid.uuid4().hex[:12]}.example.test"
        if with_key:
            pair = generate_dkim_key_pair()
            await gateway.create_domain(
                user_id=int(user_id), name=domain, dkim_selector=pair.record.selector,
                dkim_public_key=pair.record.public_key_b64,
                dkim_private_key_pem=pair.private_key_pem)
            value = pair.record.txt_value
            dns_server.set_records(f"{pair.record.name}.{domain}", "TXT",
                                   [" ".join(f'"{value[i:i + 200]}"'
                                             for i in range(0, len(value), 200))])
        return Account(user_id, domain)

    yield make
    credentials.cleanup()
    db.dispose()


def dns_txt(server: LoopbackDnsServer) -> Callable[..., bytes | None]:
    """dkimpy's ``dnsfunc``: TXT records over real DNS from the loopback server."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.host]
    resolver.port = server.port

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode(), "TXT", lifetime=timeout)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return b"".join(answer[0].strings)

    return lookup


async def run_sendmail(env: dict[str, str], server: SmtpTestServer, requests: list[dict[str, Any]],
                       *, delivered: int, rejects: int = 0) -> list[dict[str, Any]]:
    """``etrans sendmail`` over ``requests`` until ``delivered`` messages reached the server and
    ``rejects`` Reject events were published; returns those events."""
    produce_requests(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC"], requests)
    main = sendmail_wiring.build(settings.for_command("sendmail", env))
    shutdown = Shutdown(drain_seconds=10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(main, shutdown)
        if delivered:
            await server.wait_received_async(delivered, seconds=60)
        events = await trio.to_thread.run_sync(
            lambda: read_events(env["KAFKA_BOOTSTRAP_SERVERS"], env["LOG_TOPIC"], rejects,
                                timeout=60, settle=1.0 if not rejects else 0.0))
        shutdown.request()
    return events


def new_id(tag: str) -> str:
    return f"<dkim-{tag}-{uuid.uuid4().hex[:10]}@etrans.test>"


def sendmail_env(etrans_env: Callable[..., dict[str, str]], server: SmtpTestServer,
                 mode: str) -> dict[str, str]:
    return etrans_env(**server.env(), SENDMAIL_DKIM_SIGNING=mode, ETRANS_LOG_LEVEL="WARNING",
                      SENDMAIL_RETRY_BASE_SECONDS="0.1")


async def test_auto_signs_what_it_sends_and_the_signatures_verify_over_dns(
    etrans_env: Callable[..., dict[str, str]], accounts: Callable[..., Awaitable[Account]],
    smtp_server_factory: Callable[..., SmtpTestServer], dns_server: LoopbackDnsServer,
) -> None:
    server = smtp_server_factory(users={"dkim-user": "dkim-pass"})
    keyed, keyless = await accounts(), await accounts(with_key=False)
    attachment = {"filename": "report.pdf", "content": base64.b64encode(PDF).decode(),
                  "content_type": "application/pdf"}
    ids = {"plain": new_id("plain"), "rich": new_id("rich"), "dots": new_id("dots"),
           "unsigned": new_id("unsigned")}
    requests = [
        keyed.request(ids["plain"]),
        keyed.request(ids["rich"], subject="Khuyến mãi tháng 12: giảm 50% cho bạn 🎁",
                      cc=["cc@example.org"],
                      reply_to=[f"help@{keyed.domain}"], text=DOTTED_TEXT,
                      body="<p>Xin chào</p>\n.<p>dot</p>", attachments=[attachment]),
        keyed.request(ids["dots"], text=DOTTED_TEXT),
        keyless.request(ids["unsigned"]),
    ]
    env = sendmail_env(etrans_env, server, "auto")
    events = await run_sendmail(env, server, requests, delivered=4)
    assert events == []
    received = {message.message_id: message.data for message in server.received}
    assert set(received) == set(ids.values())
    lookup = dns_txt(dns_server)
    for name in ("plain", "rich", "dots"):
        data = received[ids[name]]
        assert data.startswith(b"DKIM-Signature: "), name
        assert f"d={keyed.domain};".encode() in data.split(b"\r\n\r\n", 1)[0], name
        assert dkim.verify(data, dnsfunc=lookup), name
    assert b"\r\n.a line that starts with a dot\r\n" in received[ids["dots"]]
    # Tampered: the body, or the subject, no longer verifies.
    plain = received[ids["plain"]]
    assert not dkim.verify(plain.replace(b"hello", b"HELLO"), dnsfunc=lookup)
    assert not dkim.verify(plain.replace(b"Subject: message", b"Subject: massage"),
                           dnsfunc=lookup)
    # A domain without a key (auto): sent, unsigned.
    assert b"DKIM-Signature" not in received[ids["unsigned"]]


async def test_on_rejects_what_it_cannot_sign_and_off_signs_nothing(
    etrans_env: Callable[..., dict[str, str]], accounts: Callable[..., Awaitable[Account]],
    smtp_server_factory: Callable[..., SmtpTestServer], dns_server: LoopbackDnsServer,
) -> None:
    server = smtp_server_factory(users={"dkim-user": "dkim-pass"})
    keyed, keyless = await accounts(), await accounts(with_key=False)
    signed_id, refused_id = new_id("on-signed"), new_id("on-refused")
    env = sendmail_env(etrans_env, server, "on")
    events = await run_sendmail(env, server, [keyless.request(refused_id),
                                              keyed.request(signed_id)],
                                delivered=1, rejects=1)
    [event] = events
    assert (event["Event"], event["message_id"]) == ("Reject", refused_id)
    assert event["response"].startswith("550 5.7.1 etrans: not signed")
    assert keyless.domain in event["response"]
    assert server.message_ids() == [signed_id]
    assert dkim.verify(server.received[0].data, dnsfunc=dns_txt(dns_server))

    off_id = new_id("off")
    env = sendmail_env(etrans_env, server, "off")
    assert await run_sendmail(env, server, [keyed.request(off_id)], delivered=2) == []
    assert server.message_ids()[-1] == off_id
    assert b"DKIM-Signature" not in server.received[-1].data


@pytest.mark.slow
@pytest.mark.parametrize("signer", ["process", "threads"])
def test_on_sigterm_mid_run_drains_signed_and_a_restart_sends_the_rest_once(
    etrans_env: Callable[..., dict[str, str]], accounts: Callable[..., Awaitable[Account]],
    smtp_server_factory: Callable[..., SmtpTestServer], dns_server: LoopbackDnsServer,
    tmp_path: Path, signer: str,
) -> None:
    """``etrans sendmail`` as a process, ``on``, its signing process (or threads) busy: SIGTERM
    after a third of 600 messages drains (the signer signs until the pipeline has stopped:
    nothing in flight is lost or sent unsigned), exit status 0; a restarted worker sends the
    rest; each arrives once, signed."""
    total = 600
    server = smtp_server_factory(users={"dkim-user": "dkim-pass"})
    account = trio.run(accounts)
    env = {**sendmail_env(etrans_env, server, "on"), "ETRANS_LOG_LEVEL": "INFO",
           "SENDMAIL_DKIM_SIGNER": signer}
    ids = [new_id(f"term-{i}") for i in range(total)]
    produce_requests(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC"],
                     [account.request(mid) for mid in ids])
    log_path = tmp_path / "worker.log"
    for restarted in (False, True):
        worker = start_worker(env, log_path)
        try:
            if restarted:
                wait_count(server, total, worker, 120, log_path)
            else:
                wait_count(server, total // 3, worker, 120, log_path)
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(60) == 0, log_path.read_text()[-3000:]
        finally:
            stop_worker(worker)
    assert_each_arrived_once_signed(server, ids, dns_txt(dns_server), every=20)
    output = log_path.read_text()
    started = "DKIM signing process started" if signer == "process" else (
        "DKIM signing threads started")
    assert output.count(started) == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]


def signing_children(pid: int) -> list[int]:
    """The pids of ``pid``'s DKIM signing processes (children of any of its threads)."""
    children = {int(c) for task in Path(f"/proc/{pid}/task").glob("*/children")
                for c in task.read_text().split()}
    return [c for c in children
            if b"etrans.adapters.crypto.signing_process" in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.mark.slow
def test_on_a_killed_signing_process_is_replaced_and_every_email_arrives_signed_once(
    etrans_env: Callable[..., dict[str, str]], accounts: Callable[..., Awaitable[Account]],
    smtp_server_factory: Callable[..., SmtpTestServer], dns_server: LoopbackDnsServer,
    tmp_path: Path,
) -> None:
    """``etrans sendmail`` as a process, ``on``, SENDMAIL_DKIM_SIGNER=process: its signing
    process killed (SIGKILL) twice mid-run: the signatures it owed are retried, another process
    signs; all 600 messages arrive once each, every one signed and verifying."""
    total = 600
    server = smtp_server_factory(users={"dkim-user": "dkim-pass"})
    account = trio.run(accounts)
    env = {**sendmail_env(etrans_env, server, "on"), "ETRANS_LOG_LEVEL": "INFO",
           "SENDMAIL_DKIM_SIGNER": "process"}
    ids = [new_id(f"kill-{i}") for i in range(total)]
    produce_requests(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC"],
                     [account.request(mid) for mid in ids])
    log_path = tmp_path / "worker.log"
    worker = start_worker(env, log_path)
    killed: list[int] = []
    try:
        for part in (1, 2):
            wait_count(server, part * total // 4, worker, 120, log_path)
            children = signing_children(worker.pid)
            assert len(children) == 1, (children, log_path.read_text()[-3000:])
            os.kill(children[0], signal.SIGKILL)
            killed.append(children[0])
        wait_count(server, total, worker, 120, log_path)
        replacement = signing_children(worker.pid)
        assert len(replacement) == 1
        assert replacement[0] not in killed
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, log_path.read_text()[-3000:]
    finally:
        stop_worker(worker)
    assert_each_arrived_once_signed(server, ids, dns_txt(dns_server), every=10)
    output = log_path.read_text()
    assert output.count("DKIM signing process died; starting another") == 2, output[-3000:]


def assert_each_arrived_once_signed(server: Any, ids: list[str], lookup: Any, *,
                                    every: int) -> None:
    """Each of ``ids`` arrived once, every message signed, and every ``every``-th one's
    signature verifies against the DNS record."""
    assert sorted(server.message_ids()) == sorted(ids)  # each once
    assert all(message.data.startswith(b"DKIM-Signature: ") for message in server.received)
    assert all(dkim.verify(message.data, dnsfunc=lookup) for message in server.received[::every])
