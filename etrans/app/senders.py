"""Use case: create an SMTP sender (a ``transport`` row) and cache its credentials in Redis.

The account must be an address of one of the user's (live) domains and ``domain`` must be that
domain; the password is at least 8 characters.  The password is never stored in clear: the
``transport`` row holds the credential-cache value (AES-256-CBC, ``docs/wire-formats.md``, made by
the :class:`~etrans.app.account_ports.CredentialSealer`) and the same value is written to Redis
hash ``auth`` (field = user id), where the sendmail worker reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from etrans.domain.domains import normalize_domain_name
from etrans.errors import InvalidInput
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.app.account_records import Sender
    from etrans.app.accounts import AccountDeps
    from etrans.app.bus import MessageBus

log = get_logger(__name__)

DEFAULT_SENDER_DAILY_LIMIT = 100
DEFAULT_SENDER_HOURLY_LIMIT = 4
MIN_PASSWORD_LENGTH = 8


@dataclass(frozen=True)
class CreateSender:
    user_id: int
    account: str
    domain: str
    password: str

    def __repr__(self) -> str:
        return (f"CreateSender(user_id={self.user_id!r}, account={self.account!r}, "
                f"domain={self.domain!r}, password='**********')")


async def create_sender(deps: AccountDeps, cmd: CreateSender) -> Sender:
    local, at, account_domain = cmd.account.strip().rpartition("@")
    if not at or not local or any(c.isspace() for c in local):
        raise InvalidInput("account must be an email address, e.g. noreply@example.com")
    name = normalize_domain_name(cmd.domain)
    if normalize_domain_name(account_domain) != name:
        raise InvalidInput(f"account {cmd.account} is not an address of domain {name}")
    if len(cmd.password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    owned = {row.name: row for row in await deps.domains.all_for_user(cmd.user_id)}
    if name not in owned:
        raise InvalidInput(f"Domain {name} is not one of your domains")
    address = f"{local.lower()}@{name}"
    if await deps.senders.exists(address):
        raise InvalidInput(f"Sender {address} already exists")
    value = deps.sealer.seal(address, cmd.password)
    row = await deps.senders.create(
        user_id=cmd.user_id, domain_id=owned[name].id, domain=name, account=address,
        password_encrypted=value, daily_limit=DEFAULT_SENDER_DAILY_LIMIT,
        hourly_limit=DEFAULT_SENDER_HOURLY_LIMIT)
    if row is None:  # lost a race with the same account
        raise InvalidInput(f"Sender {address} already exists")
    await deps.credential_cache.store(cmd.user_id, value)
    log.info("sender created", user_id=cmd.user_id, sender_id=row.id, domain=name)
    return row


def register(bus: MessageBus, deps: AccountDeps) -> None:
    bus.register(CreateSender, partial(create_sender, deps))
