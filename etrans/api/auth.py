"""Authentication and permissions of every API route.

Credentials, in order of precedence (the first one present is the only one tried):

1. ``X-API-KEY: <key>`` - the SHA-256 of the key is looked up (:class:`ApiKeyResolver`); the key's
   permission applies.  Expired, deleted or unknown keys answer 401.
2. ``Authorization: Bearer <JWT>`` - always ``full_access``; ``sub`` is the user id.  Verified by
   MANAGE_AUTH_URI when it is set (:mod:`etrans.adapters.http.auth_gateway`), else locally with
   JWT_SECRET (HS256) or JWT_PUBLIC_KEY (the algorithms of its key type: :class:`JwtVerifier`);
   ``exp`` is required and enforced, ``aud``/``iss`` when JWT_AUDIENCE/JWT_ISSUER are set.
3. The session cookie (``SESSION_COOKIE_NAME``, default ``session``) - passed through to
   MANAGE_AUTH_URI (only when it is set); ``full_access``.  A state-changing request must pass
   the CSRF rules of :mod:`etrans.api.csrf` first (403).

No or bad credential: 401 ``{"detail": "Not authenticated"}`` / ``"Invalid API key"`` /
``"Invalid token"``.  A permission below the route's: 403 ``"Insufficient permissions: ..."``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from etrans.api.csrf import CookieCsrfPolicy
from etrans.app.records import MISSING, REVOKED
from etrans.domain.api_keys import Permission, hash_api_key, is_expired
from etrans.errors import Forbidden, Unauthorized
from etrans.observability import get_logger
from etrans.settings.jwt_keys import jwt_algorithms, load_jwt_public_key

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from etrans.app.ports import ApiKeyCache, ApiKeyStore, AuthGateway
    from etrans.app.records import ApiKeyRecord

log = get_logger(__name__)

MAX_CREDENTIAL_LENGTH = 8192


@dataclass(frozen=True)
class Principal:
    """Who is calling and with which rights."""

    user_id: int
    permission: Permission
    method: str  # "api_key" | "bearer" | "cookie"
    key_id: int | None = None

    def require(self, needed: Permission) -> None:
        if self.permission < needed:
            raise Forbidden(
                f"Insufficient permissions: this endpoint requires {needed.name}, "
                f"the credential has {self.permission.name}"
            )


def parse_user_id(raw: object) -> int:
    """User ids are positive integers (``users.id``); JWT ``sub`` carries them as text."""
    text = str(raw).strip() if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
    if not text.isdigit() or not 0 < int(text) < 2**63:
        raise Unauthorized("Invalid token: sub is not a user id")
    return int(text)


class ApiKeyResolver:
    """Key -> live :class:`ApiKeyRecord`, through the cache; expiry checked on every call."""

    def __init__(self, store: ApiKeyStore, cache: ApiKeyCache | None) -> None:
        self._store = store
        self._cache = cache

    async def resolve(self, key: str, now: datetime) -> ApiKeyRecord:
        key_hash = hash_api_key(key)
        cached = await self._cache.get(key_hash) if self._cache is not None else None
        if cached in (MISSING, REVOKED):
            raise Unauthorized("Invalid API key")
        record = cached if cached is not None and not isinstance(cached, str) else None
        if record is None:
            record = await self._store.find_by_hash(key_hash)
            if self._cache is not None:
                await self._cache.put(key_hash, record)
            if record is None:
                raise Unauthorized("Invalid API key")
        if is_expired(record.expires_at, now):
            raise Unauthorized("API key expired")
        return record


class JwtVerifier:
    """Local verification of bearer tokens (PyJWT).

    With ``secret``: HS256.  With ``public_key`` (PEM): the algorithms of that key's type only
    (:func:`jwt_algorithms`), so a token can never pick its own verification method (``none``,
    HS256 keyed with the public key text, ES256 against an RSA key, another curve).  ``exp`` and
    ``sub`` are required; ``aud`` and ``iss`` too when ``audience``/``issuer`` are given.  Every
    token error is :class:`Unauthorized`.  A verified token is remembered (at most
    ``cache_size``) until its ``exp``: signatures are not checked again on every request."""

    def __init__(self, *, secret: str | None = None, public_key: str | None = None,
                 audience: Sequence[str] = (), issuer: str | None = None,
                 leeway_seconds: float = 5.0, cache_size: int = 10_000) -> None:
        if (secret is None) == (public_key is None):
            raise ValueError("give exactly one of secret and public_key")
        self._key: Any
        if secret is not None:
            self._key, self._algorithms = secret, ["HS256"]
        else:
            assert public_key is not None
            self._key = load_jwt_public_key(public_key)
            self._algorithms = list(jwt_algorithms(self._key))
        self._audience = list(audience) or None
        self._issuer = issuer
        required = ["exp", "sub"] + (["aud"] if self._audience else []) \
            + (["iss"] if issuer else [])
        self._options = {"require": required, "verify_aud": self._audience is not None}
        self._leeway = leeway_seconds
        self._cache_size = cache_size
        self._verified: dict[str, tuple[float, int]] = {}

    def verify(self, token: str) -> int:
        hit = self._verified.get(token)
        if hit is not None:
            if hit[0] > time.time():
                return hit[1]
            del self._verified[token]
        user, expires = self._decode(token)
        if len(self._verified) >= self._cache_size:
            self._verified.clear()
        self._verified[token] = (expires + self._leeway, user)
        return user

    def _decode(self, token: str) -> tuple[int, float]:
        import jwt

        try:
            claims = jwt.decode(
                token, self._key, algorithms=self._algorithms, audience=self._audience,
                issuer=self._issuer, leeway=self._leeway, options=self._options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("Token expired") from None
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            # PyJWTError, not only InvalidTokenError: InvalidKeyError (a token of another key
            # type) is a refusal of the token too, never a 500.
            raise Unauthorized("Invalid token") from None
        try:
            expires = float(claims["exp"])
        except (KeyError, TypeError, ValueError):
            raise Unauthorized("Invalid token") from None
        return parse_user_id(claims.get("sub")), expires


class Authenticator:
    def __init__(
        self,
        api_keys: ApiKeyResolver,
        *,
        jwt: JwtVerifier | None = None,
        gateway: AuthGateway | None = None,
        session_cookie: str = "session",
        allowed_origins: Iterable[str] = (),
    ) -> None:
        self._api_keys = api_keys
        self._jwt = jwt
        self._gateway = gateway
        self._session_cookie = session_cookie
        self._csrf = CookieCsrfPolicy(allowed_origins)

    async def authenticate(self, headers: Mapping[str, str], cookies: Mapping[str, str], *,
                           method: str, scheme: str = "http") -> Principal:
        """``method`` and ``scheme`` (of the request) are what the cookie's CSRF rules need."""
        now = datetime.now(UTC)
        key = headers.get("X-API-KEY")
        if key is not None:
            key = key.strip()
            if not key or len(key) > MAX_CREDENTIAL_LENGTH:
                raise Unauthorized("Invalid API key")
            record = await self._api_keys.resolve(key, now)
            return Principal(user_id=record.user_id, permission=record.permission,
                             method="api_key", key_id=record.id)
        authorization = headers.get("Authorization")
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token or len(token) > MAX_CREDENTIAL_LENGTH:
                raise Unauthorized("Invalid authorization header: expected Bearer <token>")
            return Principal(user_id=await self._bearer_user(token),
                             permission=Permission.full_access, method="bearer")
        cookie = cookies.get(self._session_cookie)
        if cookie and self._gateway is not None:
            if len(cookie) > MAX_CREDENTIAL_LENGTH:
                raise Unauthorized("Invalid session")
            self._csrf.check(method, headers, scheme=scheme)
            user = await self._gateway.validate(cookie=cookie)
            if user is None:
                raise Unauthorized("Invalid session")
            return Principal(user_id=parse_user_id(user), permission=Permission.full_access,
                             method="cookie")
        raise Unauthorized("Not authenticated")

    async def _bearer_user(self, token: str) -> int:
        if self._gateway is not None:
            user = await self._gateway.validate(bearer=token)
            if user is None:
                raise Unauthorized("Invalid token")
            return parse_user_id(user)
        if self._jwt is None:
            raise Unauthorized("Bearer tokens are not accepted by this server")
        return self._jwt.verify(token)
