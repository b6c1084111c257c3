"""The demo account of ``etrans dev``, and the secrets of a data directory.

:func:`ensure_demo` creates, once, in the USEND DB (local billing mode): user 1
(``demo@example.com``), its verified domain ``example.com`` with sending limits, an SMTP sender
(``transport`` row: credentials for the dev SMTP server) and a full-access API key.  API keys are
stored hashed, so the demo key's plaintext is kept in ``<data dir>/demo.json`` (mode 0600) to be
printed at every start; if that key was deleted through the API, a new one is made.

:func:`data_secrets` returns TOKEN_SECRET/TOKEN_IV for the credential cache: the environment's
when given, else random ones generated once and kept in ``<data dir>/secrets.json`` (0600).
"""

from __future__ import annotations

import json
import os
import secrets
import string
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select

from etrans.adapters.crypto.credentials import SmtpCredentials
from etrans.domain.api_keys import generate_api_key, hash_api_key

if TYPE_CHECKING:
    from pathlib import Path

    from etrans.adapters.crypto.credentials import CredentialCipher
    from etrans.adapters.sql import Database

DEMO_USER_ID = 1
DEMO_EMAIL = "demo@example.com"
DEMO_DOMAIN = "example.com"
DEMO_FILE = "demo.json"
SECRETS_FILE = "secrets.json"


@dataclass(frozen=True)
class DemoAccount:
    user_id: int
    email: str
    domain: str
    domain_id: int
    api_key: str


def write_private(path: Path, data: dict[str, Any]) -> None:
    """Write JSON readable by the owner only (0600 from creation, then renamed into place)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def data_secrets(data_dir: Path) -> tuple[str, str]:
    """(TOKEN_SECRET, TOKEN_IV) of this data directory, created on first use."""
    path = data_dir / SECRETS_FILE
    if path.exists():
        data = json.loads(path.read_text())
        return data["token_secret"], data["token_iv"]
    alphabet = string.ascii_letters + string.digits
    secret = "".join(secrets.choice(alphabet) for _ in range(32))
    iv = "".join(secrets.choice(alphabet) for _ in range(16))
    write_private(path, {"token_secret": secret, "token_iv": iv})
    return secret, iv


def ensure_demo(db: Database, cipher: CredentialCipher, data_dir: Path) -> DemoAccount:
    """Create what is missing of the demo account (idempotent); see the module docstring."""
    from etrans.adapters.sql.usend import (
        ApiKey,
        LocalDomain,
        LocalMktDomain,
        LocalUser,
        Transport,
        UserPack,
    )

    saved_path = data_dir / DEMO_FILE
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    now = datetime.now(UTC)
    with db.engine.begin() as conn:
        if conn.execute(select(LocalUser.id).where(LocalUser.id == DEMO_USER_ID)).first() is None:
            conn.execute(insert(LocalUser).values(id=DEMO_USER_ID, email=DEMO_EMAIL, balance=0,
                                                  is_owner=True))
        if conn.execute(select(UserPack.user_id).where(
                UserPack.user_id == DEMO_USER_ID)).first() is None:
            # A pack with room for a few domains, so a newcomer can try POST /domains too
            # (the FREE pack allows one, the demo domain).
            conn.execute(insert(UserPack).values(user_id=DEMO_USER_ID,
                                                 pack_code="DEDICATED_100K"))
        domain_id = conn.execute(select(LocalDomain.id).where(
            LocalDomain.user_id == DEMO_USER_ID, LocalDomain.name == DEMO_DOMAIN,
            LocalDomain.deleted_at.is_(None))).scalar()
        if domain_id is None:
            domain_id = conn.execute(insert(LocalDomain).values(
                user_id=DEMO_USER_ID, name=DEMO_DOMAIN, status="verified", verified_at=now,
                created_at=now, updated_at=now).returning(LocalDomain.id)).scalar_one()
            conn.execute(insert(LocalMktDomain).values(
                domain_id=domain_id, pack_code="DEDICATED_100K", pack_name="Dedicated 100K",
                daily_limit=10_000, hourly_limit=1_000, monthly_limit=None))
        if conn.execute(select(Transport.id).where(Transport.user_id == DEMO_USER_ID,
                                                   Transport.active.is_(True))).first() is None:
            password = secrets.token_urlsafe(16)
            conn.execute(insert(Transport).values(
                user_id=DEMO_USER_ID, domain_id=domain_id, domain=DEMO_DOMAIN,
                account=DEMO_EMAIL, password_encrypted=cipher.encrypt(
                    SmtpCredentials(DEMO_EMAIL, password)),
                daily_limit=10_000, hourly_limit=1_000))
        api_key = saved.get("api_key")
        live = api_key is not None and conn.execute(select(ApiKey.id).where(
            ApiKey.key_hash == hash_api_key(api_key), ApiKey.active.is_(True),
            ApiKey.deleted_at.is_(None))).first() is not None
        if not live:
            api_key = generate_api_key()
            conn.execute(insert(ApiKey).values(
                user_id=DEMO_USER_ID, name="etrans dev demo key", key_hash=hash_api_key(api_key),
                key_prefix=api_key[:16], permission="full_access", created_at=now,
                updated_at=now))
    account = DemoAccount(user_id=DEMO_USER_ID, email=DEMO_EMAIL, domain=DEMO_DOMAIN,
                          domain_id=int(domain_id), api_key=str(api_key))
    write_private(saved_path, asdict(account))
    return account


def banner(account: DemoAccount, base_url: str, data_dir: Path, stand_ins: dict[str, str]) -> str:
    """What ``etrans dev`` prints once it is ready: the account and a curl example."""
    services = "\n".join(f"    {name:<10} {where}" for name, where in stand_ins.items())
    return f"""
etrans dev is running: {base_url}  (Ctrl-C to stop; data in {data_dir})

  demo user   {account.email} (user id {account.user_id})
  domain      {account.domain} (verified, dom_{account.domain_id})
  API key     {account.api_key}
              (full access; kept in {data_dir / DEMO_FILE}, mode 0600)
  services
{services}

Send an email:

  curl -s {base_url}/emails -H 'X-API-KEY: {account.api_key}' \\
    -H 'Content-Type: application/json' \\
    -d '{{"from": "Demo <hello@{account.domain}>", "to": ["someone@example.org"],'\
'"subject": "Hello", "text": "It works."}}'

then see it delivered:

  curl -s {base_url}/emails -H 'X-API-KEY: {account.api_key}'
  curl -s {base_url}/logs -H 'X-API-KEY: {account.api_key}'
"""
