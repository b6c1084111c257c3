"""Open and click tracking in ``etrans sendmail``, end to end on the real servers.

``etrans sendmail`` runs in process (settings from the environment) over a Kafka topic; the
domains and their tracking flags are where the API keeps them (``local_domain`` through the local
billing gateway, ``domain_tracking_settings`` through PATCH /domains/{id}'s repository, in the
USEND DB); the SMTP server keeps what it received, decoded here as a mail client would.
"""

from __future__ import annotations

import email
import email.policy
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import dkim
import pytest

from etrans.adapters.crypto.dkim_keys import DkimKeyCipher, generate_dkim_key_pair
from etrans.adapters.sql import usend_database
from etrans.adapters.sql.billing_local import LocalBillingGateway
from etrans.adapters.sql.domain_settings_repo import SqlDomainSettings
from etrans.domain.tracking import CLICK, OPEN, derive_tracking_key, read_token
from tests.harness.dns import LoopbackDnsServer
from tests.harness.smtp import SmtpTestServer
from tests.integration.sendmail_support import CredentialFixture, simple_request
from tests.integration.test_sendmail_dkim import dns_txt, run_sendmail

BASE = "https://t.example.test"
SECRET = "tracking-secret-for-tests-0123456789"
KEY = derive_tracking_key(SECRET.encode())
UNSUBSCRIBE = "https://news.example.org/unsubscribe/abc?u=1"
HTML = (
    "<html><body>\n"
    '<p>Hi, <a href="https://shop.example.org/sale?x=1&amp;y=2">the sale</a></p>\n'
    "<p><a href='http://plain.example.org/a'>plain</a> "
    '<a href="mailto:help@example.org">write</a> '
    f'<a href="{UNSUBSCRIBE}">unsubscribe</a> '
    '<a data-etrans-no-track href="https://private.example.org/x">private</a></p>\n'
    "</body></html>\n"
)
TEXT = "Hi, the sale: https://shop.example.org/sale?x=1&y=2\n"


class Account:
    def __init__(self, user_id: str, domain: str) -> None:
        self.user_id, self.domain = user_id, domain

    def request(self, message_id: str, **overrides: Any) -> dict[str, Any]:
        return simple_request(message_id, self.user_id,
                              sender={"name": "News", "email": f"news@{self.domain}"},
                              body=HTML, text=TEXT,
                              headers={"List-Unsubscribe": f"<{UNSUBSCRIBE}>, "
                                                           "<mailto:unsub@example.org>"},
                              **overrides)

    def message_id(self) -> str:
        return f"msg_{uuid.uuid4().hex}@{self.domain}"


@pytest.fixture
def accounts(etrans_env: Callable[..., dict[str, str]], redis_url: str,
             dns_server: LoopbackDnsServer) -> Iterator[Callable[..., Awaitable[Account]]]:
    env = etrans_env()
    credentials = CredentialFixture(redis_url, env["TOKEN_SECRET"], env["TOKEN_IV"])
    db = usend_database(env["USEND_DB_URI"], pool_size=1)
    gateway = LocalBillingGateway(db, DkimKeyCipher(env["TOKEN_SECRET"]))
    domain_settings = SqlDomainSettings(db)

    async def make(*, click: bool | None, open_: bool | None) -> Account:
        user_id = str(uuid.uuid4().int % 10**12)
        credentials.add("track-user", "track-pass", user_id=user_id)
        domain = f"t{uuid.uuid4().hex[:12]}.example.test"
        pair = generate_dkim_key_pair()
        domain_id = await gateway.create_domain(
            user_id=int(user_id), name=domain, dkim_selector=pair.record.selector,
            dkim_public_key=pair.record.public_key_b64,
            dkim_private_key_pem=pair.private_key_pem)
        value = pair.record.txt_value
        dns_server.set_records(f"{pair.record.name}.{domain}", "TXT",
                               [" ".join(f'"{value[i:i + 200]}"'
                                         for i in range(0, len(value), 200))])
        if click is not None or open_ is not None:
            await domain_settings.set_tracking(int(user_id), domain_id, click, open_)
        return Account(user_id, domain)

    yield make
    credentials.cleanup()
    db.dispose()


def parts(data: bytes) -> dict[str, str]:
    """The text/plain and text/html parts, decoded as a mail client would."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    found: dict[str, str] = {}
    for part in message.walk():
        if part.get_content_type() in ("text/plain", "text/html"):
            found[part.get_content_subtype()] = part.get_content().replace("\r\n", "\n")
    return found


def hrefs(html: str) -> list[str]:
    return [m.group(2).replace("&amp;", "&")
            for m in re.finditer(r"""href=(["'])(.*?)\1""", html)]


def tracking_env(etrans_env: Callable[..., dict[str, str]], server: SmtpTestServer,
                 **extra: str) -> dict[str, str]:
    return etrans_env(**server.env(), SENDMAIL_DKIM_SIGNING="on", ETRANS_LOG_LEVEL="WARNING",
                      SENDMAIL_RETRY_BASE_SECONDS="0.1", ETRANS_TRACKING_BASE_URL=BASE,
                      ETRANS_TRACKING_SECRET=SECRET, **extra)


async def test_tracked_html_has_the_pixel_and_signed_links_and_still_verifies(
    etrans_env: Callable[..., dict[str, str]], accounts: Callable[..., Awaitable[Account]],
    smtp_server_factory: Callable[..., SmtpTestServer], dns_server: LoopbackDnsServer,
) -> None:
    server = smtp_server_factory(users={"track-user": "track-pass"})
    both = await accounts(click=True, open_=True)
    clicks = await accounts(click=True, open_=False)
    opens = await accounts(click=False, open_=True)
    ids = {"both": both.message_id(), "clicks": clicks.message_id(),
           "opens": opens.message_id()}
    requests = [both.request(ids["both"]), clicks.request(ids["clicks"]),
                opens.request(ids["opens"])]
    assert await run_sendmail(tracking_env(etrans_env, server), server, requests,
                              delivered=3) == []
    received = {m.message_id.strip("<>"): m.data for m in server.received}
    lookup = dns_txt(dns_server)
    for name, message_id in ids.items():
        assert dkim.verify(received[message_id], dnsfunc=lookup), name
        assert parts(received[message_id])["plain"] == TEXT, name

    html = parts(received[ids["both"]])["html"]
    links = hrefs(html)
    assert links[2:] == ["mailto:help@example.org", UNSUBSCRIBE, "https://private.example.org/x"]
    targets = [read_token(KEY, CLICK, link.removeprefix(f"{BASE}/t/c/")) for link in links[:2]]
    assert [t.url for t in targets] == ["https://shop.example.org/sale?x=1&y=2",
                                        "http://plain.example.org/a"]
    assert {(t.user_id, t.message_id) for t in targets} == {(int(both.user_id), ids["both"])}
    [pixel] = re.findall(r'<img src="([^"]+)"', html)
    opened = read_token(KEY, OPEN, pixel.removeprefix(f"{BASE}/t/o/"))
    assert (opened.user_id, opened.message_id, opened.url) == (int(both.user_id), ids["both"],
                                                               None)
    assert html.index(pixel) < html.index("</body>")

    clicked_only = parts(received[ids["clicks"]])["html"]
    assert "<img" not in clicked_only
    assert hrefs(clicked_only)[0].startswith(f"{BASE}/t/c/")
    opened_only = parts(received[ids["opens"]])["html"]
    assert hrefs(opened_only) == hrefs(HTML)
    assert f"{BASE}/t/o/" in opened_only


async def test_untracked_emails_keep_their_html_byte_for_byte(
    etrans_env: Callable[..., dict[str, str]], accounts: Callable[..., Awaitable[Account]],
    smtp_server_factory: Callable[..., SmtpTestServer],
) -> None:
    server = smtp_server_factory(users={"track-user": "track-pass"})
    never, off = await accounts(click=None, open_=None), await accounts(click=False, open_=False)
    tracked = await accounts(click=True, open_=True)
    not_api = f"<other-{uuid.uuid4().hex}@{tracked.domain}>"  # not an id the API gave
    requests = [never.request(never.message_id()), off.request(off.message_id()),
                tracked.request(not_api)]
    assert await run_sendmail(tracking_env(etrans_env, server), server, requests,
                              delivered=3) == []
    for message in server.received:
        assert parts(message.data) == {"plain": TEXT, "html": HTML}, message.message_id

    # Tracking off in the settings: the tracked domain's email is not instrumented either.
    plain_server = smtp_server_factory(users={"track-user": "track-pass"})
    env = etrans_env(**plain_server.env(), SENDMAIL_DKIM_SIGNING="off",
                     ETRANS_LOG_LEVEL="WARNING")
    assert await run_sendmail(env, plain_server, [tracked.request(tracked.message_id())],
                              delivered=1) == []
    assert parts(plain_server.received[0].data) == {"plain": TEXT, "html": HTML}
