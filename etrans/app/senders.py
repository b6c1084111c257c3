"""Use case: create an SMTP sender (a ``transport`` row) and cache its credentials in Redis.

The account must be an address of one of the user's (live) domains and ``domain`` must be that
domain; the password is at least 8 characters.  The password is never stored in clear: the
``transport`` row holds the credential-cache value (AES-256-CBC, ``docs/wire-formats.md``) and
the same value is written to Redis hash ``auth`` (field = user id), where the sendmail worker
reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from etrans.adapters.crypto.credentials import SmtpCredentials
from etrans.app.domains import iso
from etrans.domain.domains import format_sender_id, normalize_domain_name
from etrans.errors import InvalidInput
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.app.domains import AccountServices

log = get_logger(__name__)

DEFAULT_SENDER_DAILY_LIMIT = 100
DEFAULT_SENDER_HOURLY_LIMIT = 4
MIN_PASSWORD_LENGTH = 8


async def create_sender(s: AccountServices, user_id: int, *, account: str, domain: str,
                        password: str) -> dict[str, Any]:
    local, at, account_domain = account.strip().rpartition("@")
    if not at or not local or any(c.isspace() for c in local):
        raise InvalidInput("account must be an email address, e.g. noreply@example.com")
    name = normalize_domain_name(domain)
    if normalize_domain_name(account_domain) != name:
        raise InvalidInput(f"account {account} is not an address of domain {name}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    owned = {row.name: row for row in await s.read(s.domains.all_for_user, user_id)}
    if name not in owned:
        raise InvalidInput(f"Domain {name} is not one of your domains")
    address = f"{local.lower()}@{name}"
    if await s.usend(s.accounts.sender_exists, address):
        raise InvalidInput(f"Sender {address} already exists")
    value = s.credential_cipher.encrypt(SmtpCredentials(username=address, password=password))
    row = await s.usend(lambda: s.accounts.create_sender(
        user_id=user_id, domain_id=owned[name].id, domain=name, account=address,
        password_encrypted=value, daily_limit=DEFAULT_SENDER_DAILY_LIMIT,
        hourly_limit=DEFAULT_SENDER_HOURLY_LIMIT))
    if row is None:  # lost a race with the same account
        raise InvalidInput(f"Sender {address} already exists")
    if s.credential_cache is not None:
        await s.credential_cache.store(user_id, value)
    log.info("sender created", user_id=user_id, sender_id=row.id, domain=name)
    return {"id": format_sender_id(row.id), "account": row.account, "domain": row.domain,
            "active": row.active, "daily_limit": row.daily_limit,
            "hourly_limit": row.hourly_limit, "created_at": iso(row.created_at)}
