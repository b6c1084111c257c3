"""Authentication and permissions of the API (emails and logs endpoints), against real
PostgreSQL/Redis: the matrix endpoint x permission level x missing/invalid/expired/deleted
credential, JWT algorithms and expiry, the MANAGE_AUTH_URI gateway (a real HTTP server in the
test), and revocation of a cached key on the very next request."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from etrans.domain.api_keys import hash_api_key
from tests.integration.sending_api import SendingApi, email, open_sending_api

# (method, path, required level); bodies are valid enough to get past auth.
ENDPOINTS = [
    ("POST", "/emails", "sending_access"),
    ("POST", "/emails/batch", "sending_access"),
    ("GET", "/emails", "read_only"),
    ("GET", "/emails/msg_x@example.test", "read_only"),
    ("GET", "/logs", "read_only"),
]
LEVELS = ["read_only", "sending_access", "full_access"]
RANK = {name: i for i, name in enumerate(LEVELS)}


@pytest.fixture
async def api(etrans_env: Any, billing_db: Any) -> Any:
    async with open_sending_api(etrans_env, billing_db) as built:
        yield built


def _body(method: str, path: str) -> Any:
    if method != "POST":
        return None
    one = email("nowhere.example.test")
    return {"emails": [one]} if path.endswith("batch") else one


async def test_permission_matrix(api: SendingApi) -> None:
    user = api.user()
    keys = {level: api.api_key(user, level)[0] for level in LEVELS}
    for method, path, needed in ENDPOINTS:
        for level, key in keys.items():
            status, body = await api.call(method, path, {"X-API-KEY": key},
                                          json=_body(method, path))
            if RANK[level] >= RANK[needed]:
                assert status not in (401, 403), (method, path, level, status, body)
            else:
                assert status == 403, (method, path, level, status, body)
                assert "Insufficient permissions" in body["detail"]
        # Bearer tokens are always full_access.
        status, body = await api.call(method, path, api.bearer(user), json=_body(method, path))
        assert status not in (401, 403), (method, path, status, body)


async def test_bad_credentials_matrix(api: SendingApi) -> None:
    user = api.user()
    expired, _ = api.api_key(user, "full_access",
                             expires_at=datetime.now(UTC) - timedelta(seconds=1))
    deleted, _ = api.api_key(user, "full_access", deleted=True)
    expired_jwt = jwt.encode({"sub": str(user), "exp": int(time.time()) - 5},
                             "sending-jwt-secret-" + "y" * 32, algorithm="HS256")
    wrong_jwt = jwt.encode({"sub": str(user), "exp": int(time.time()) + 60}, "w" * 40,
                           algorithm="HS256")
    no_exp = jwt.encode({"sub": str(user)}, "sending-jwt-secret-" + "y" * 32, algorithm="HS256")
    unsigned = jwt.encode({"sub": str(user), "exp": int(time.time()) + 60}, None,
                          algorithm="none")
    hs384 = jwt.encode({"sub": str(user), "exp": int(time.time()) + 60},
                       "sending-jwt-secret-" + "y" * 32, algorithm="HS384")
    cases = {
        "missing": {},
        "unknown key": {"X-API-KEY": "etrans_live_nope"},
        "empty key": {"X-API-KEY": ""},
        "expired key": {"X-API-KEY": expired},
        "deleted key": {"X-API-KEY": deleted},
        "expired jwt": {"Authorization": f"Bearer {expired_jwt}"},
        "wrong jwt": {"Authorization": f"Bearer {wrong_jwt}"},
        "jwt without exp": {"Authorization": f"Bearer {no_exp}"},
        "jwt alg none": {"Authorization": f"Bearer {unsigned}"},
        "jwt HS384 (JWT_SECRET is HS256 only)": {"Authorization": f"Bearer {hs384}"},
        "not bearer": {"Authorization": "Basic dXNlcjpwdw=="},
        "garbage bearer": {"Authorization": "Bearer abc.def.ghi"},
    }
    for method, path, _ in ENDPOINTS:
        for name, headers in cases.items():
            status, body = await api.call(method, path, headers, json=_body(method, path))
            assert status == 401, (method, path, name, status, body)
            assert isinstance(body["detail"], str)
            assert body["detail"]


async def test_deleted_key_fails_on_next_request_despite_cache(api: SendingApi) -> None:
    user = api.user()
    key, key_id = api.api_key(user, "read_only")
    assert (await api.call("GET", "/emails", {"X-API-KEY": key}))[0] == 200  # now cached
    # What DELETE /api-keys does: mark the row deleted, then revoke the cache entry.
    from sqlalchemy import update

    from etrans.adapters.sql.usend import ApiKey

    with api.usend.engine.begin() as conn:
        conn.execute(update(ApiKey.__table__).where(ApiKey.__table__.c.id == key_id)
                     .values(active=False, deleted_at=datetime.now(UTC)))
    cache = api.stores.key_cache  # the cache the app authenticates with
    await cache.revoke(hash_api_key(key))
    assert (await api.call("GET", "/emails", {"X-API-KEY": key}))[0] == 401
    # A lookup racing with the deletion cannot re-cache the key over the revocation.
    from etrans.app.records import ApiKeyRecord
    from etrans.domain.api_keys import Permission

    await cache.put(hash_api_key(key), ApiKeyRecord(key_id, user, Permission.read_only, None))
    assert (await api.call("GET", "/emails", {"X-API-KEY": key}))[0] == 401


async def test_key_expiring_while_cached_fails_next_request(api: SendingApi) -> None:
    user = api.user()
    key, _ = api.api_key(user, "read_only",
                         expires_at=datetime.now(UTC) + timedelta(seconds=1.5))
    assert (await api.call("GET", "/emails", {"X-API-KEY": key}))[0] == 200
    import trio

    await trio.sleep(1.6)
    status, body = await api.call("GET", "/emails", {"X-API-KEY": key})
    assert (status, body["detail"]) == (401, "API key expired")


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_jwt_public_key(etrans_env: Any, billing_db: Any, algorithm: str) -> None:
    private: Any = (rsa.generate_private_key(public_exponent=65537, key_size=2048)
                    if algorithm == "RS256" else ec.generate_private_key(ec.SECP256R1()))
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    async with open_sending_api(etrans_env, billing_db, JWT_SECRET=None,
                                JWT_PUBLIC_KEY=public_pem) as api:
        user = api.user()
        good = jwt.encode({"sub": str(user), "exp": int(time.time()) + 60}, private,
                          algorithm=algorithm)
        assert (await api.call("GET", "/emails", {"Authorization": f"Bearer {good}"}))[0] == 200
        expired = jwt.encode({"sub": str(user), "exp": int(time.time()) - 5}, private,
                             algorithm=algorithm)
        assert (await api.call("GET", "/emails", {"Authorization": f"Bearer {expired}"}))[0] \
            == 401
        # An HS256 token signed with the public key text must not pass (algorithm confusion).
        forged = jwt.encode({"sub": str(user), "exp": int(time.time()) + 60}, "x" * 32,
                            algorithm="HS256")
        assert (await api.call("GET", "/emails", {"Authorization": f"Bearer {forged}"}))[0] \
            == 401


class _AuthService(BaseHTTPRequestHandler):
    users: dict[str, str] = {}
    calls: list[str] = []

    def do_GET(self) -> None:
        credential = self.headers.get("Authorization") or self.headers.get("Cookie") or ""
        self.calls.append(credential)
        if "explode" in credential:
            self.send_response(500)
            self.end_headers()
            return
        user = self.users.get(credential)
        if user is None:
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps({"user_id": user}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


async def test_manage_auth_gateway(etrans_env: Any, billing_db: Any) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AuthService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    uri = f"http://127.0.0.1:{server.server_address[1]}/v1/validate"
    async with open_sending_api(etrans_env, billing_db, MANAGE_AUTH_URI=uri,
                                SESSION_COOKIE_NAME="sid") as api:
        user = api.user()
        _AuthService.users = {"Bearer opaque-token": str(user), "sid=cookie-value": str(user)}
        _AuthService.calls.clear()
        ok = {"Authorization": "Bearer opaque-token"}
        assert (await api.call("GET", "/emails", ok))[0] == 200
        assert (await api.call("GET", "/emails", ok))[0] == 200
        assert _AuthService.calls.count("Bearer opaque-token") == 1  # second answer cached
        # The gateway replaces local JWT verification: a locally valid JWT is not enough.
        assert (await api.call("GET", "/emails", api.bearer(user)))[0] == 401
        assert (await api.call("GET", "/emails", {"Cookie": "sid=cookie-value"}))[0] == 200
        assert (await api.call("GET", "/emails", {"Cookie": "sid=wrong"}))[0] == 401
        # A session cookie is full_access: it may send (past auth: 400 for the unknown domain).
        status, _ = await api.call("POST", "/emails", {"Cookie": "sid=cookie-value"},
                                   json=email("nowhere.example.test"))
        assert status == 400
        status, body = await api.call("GET", "/emails", {"Authorization": "Bearer explode"})
        assert status == 503, body
        server.shutdown()
        server.server_close()
        status, body = await api.call("GET", "/emails", {"Authorization": "Bearer other"})
        assert status == 503, body


# -- JWT with a public key: every token error is 401 (issue 13.3) ----------------------------------

def _public_pem(private: Any) -> str:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture(scope="module")
def jwt_keys() -> dict[str, Any]:
    return {"rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "p256": ec.generate_private_key(ec.SECP256R1()),
            "p384": ec.generate_private_key(ec.SECP384R1()),
            "ed25519": ed25519.Ed25519PrivateKey.generate()}


def _claims(user: int, **extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": str(user), "exp": int(time.time()) + 60}
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


async def test_jwt_public_key_matrix_every_token_error_is_401(
        etrans_env: Any, billing_db: Any, jwt_keys: dict[str, Any]) -> None:
    rsa_key, p256, p384 = jwt_keys["rsa"], jwt_keys["p256"], jwt_keys["p384"]
    async with open_sending_api(etrans_env, billing_db, JWT_SECRET=None,
                                JWT_PUBLIC_KEY=_public_pem(rsa_key), JWT_AUDIENCE="etrans-api",
                                JWT_ISSUER="https://auth.example.test/") as api:
        user = api.user()
        good = {"aud": "etrans-api", "iss": "https://auth.example.test/"}
        now = int(time.time())
        ok = {
            "RS256": jwt.encode(_claims(user, **good), rsa_key, algorithm="RS256"),
            "PS256": jwt.encode(_claims(user, **good), rsa_key, algorithm="PS256"),
            "RS512": jwt.encode(_claims(user, **good), rsa_key, algorithm="RS512"),
            "aud list": jwt.encode(_claims(user, iss=good["iss"], aud=["other", "etrans-api"]),
                                   rsa_key, algorithm="RS256"),
            # JWT_LEEWAY_SECONDS (default 5) absorbs a little clock skew.
            "expired within leeway": jwt.encode(_claims(user, exp=now - 2, **good), rsa_key,
                                                algorithm="RS256"),
        }
        for name, token in ok.items():
            status, body = await api.call("GET", "/emails", {"Authorization": f"Bearer {token}"})
            assert status == 200, (name, status, body)
        unsigned = jwt.encode(_claims(user, **good), None, algorithm="none")
        bad = {
            "alg none": unsigned,
            "alg none, signature kept": unsigned + "c2ln",
            "HS256 signed with the public key": _hs256_with(_public_pem(rsa_key),
                                                            _claims(user, **good)),
            "ES256 against an RSA key": jwt.encode(_claims(user, **good), p256, algorithm="ES256"),
            "RS256 signed by another key": jwt.encode(
                _claims(user, **good), rsa.generate_private_key(public_exponent=65537,
                                                                key_size=2048), algorithm="RS256"),
            "ES384 against an RSA key": jwt.encode(_claims(user, **good), p384,
                                                   algorithm="ES384"),
            "expired": jwt.encode(_claims(user, exp=now - 60, **good), rsa_key,
                                  algorithm="RS256"),
            "not yet valid": jwt.encode(_claims(user, nbf=now + 60, **good), rsa_key,
                                        algorithm="RS256"),
            "wrong aud": jwt.encode(_claims(user, aud="other", iss=good["iss"]), rsa_key,
                                    algorithm="RS256"),
            "no aud": jwt.encode(_claims(user, iss=good["iss"]), rsa_key, algorithm="RS256"),
            "wrong iss": jwt.encode(_claims(user, aud="etrans-api", iss="https://evil.test/"),
                                    rsa_key, algorithm="RS256"),
            "no iss": jwt.encode(_claims(user, aud="etrans-api"), rsa_key, algorithm="RS256"),
            "no sub": jwt.encode(_claims(user, sub=None, **good), rsa_key, algorithm="RS256"),
            "sub not a user id": jwt.encode(_claims(user, **good) | {"sub": "admin"}, rsa_key,
                                            algorithm="RS256"),
            "bad header": "eyJhbGciOi.eyJzdWIiOiIxIn0.c2ln",
        }
        for name, token in bad.items():
            status, body = await api.call("GET", "/emails", {"Authorization": f"Bearer {token}"})
            assert status == 401, (name, status, body)
            assert body["detail"].startswith(("Invalid token", "Token expired")), (name, body)


def _hs256_with(secret: str, claims: dict[str, Any]) -> str:
    """An HS256 token keyed with ``secret`` (PyJWT refuses PEM text as an HMAC key: sign by hand,
    as an attacker would)."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "."
                     + b64(json.dumps(claims).encode()))
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


@pytest.mark.parametrize(("key", "algorithm", "refused"), [
    ("p256", "ES256", ["ES384 with P-384", "RS256", "EdDSA"]),
    ("p384", "ES384", ["ES256 with P-256", "RS256"]),
    ("ed25519", "EdDSA", ["ES256 with P-256", "RS256"]),
])
async def test_jwt_algorithm_follows_the_key_type(etrans_env: Any, billing_db: Any,
                                                  jwt_keys: dict[str, Any], key: str,
                                                  algorithm: str, refused: list[str]) -> None:
    signers = {"ES256 with P-256": ("p256", "ES256"), "ES384 with P-384": ("p384", "ES384"),
               "RS256": ("rsa", "RS256"), "EdDSA": ("ed25519", "EdDSA")}
    async with open_sending_api(etrans_env, billing_db, JWT_SECRET=None,
                                JWT_PUBLIC_KEY=_public_pem(jwt_keys[key])) as api:
        user = api.user()
        good = jwt.encode(_claims(user), jwt_keys[key], algorithm=algorithm)
        assert (await api.call("GET", "/emails", {"Authorization": f"Bearer {good}"}))[0] == 200
        for name in refused:
            signer, alg = signers[name]
            token = jwt.encode(_claims(user), jwt_keys[signer], algorithm=alg)
            status, body = await api.call("GET", "/emails", {"Authorization": f"Bearer {token}"})
            assert status == 401, (name, status, body)


# -- cookie sessions: CSRF and the forwarded cookie (issue 13.2) -----------------------------------

@pytest.fixture
def auth_service() -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AuthService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/validate"
    server.shutdown()
    server.server_close()


async def test_cookie_session_state_changes_need_json_and_an_allowed_origin(
        etrans_env: Any, billing_db: Any, auth_service: str) -> None:
    async with open_sending_api(
            etrans_env, billing_db, MANAGE_AUTH_URI=auth_service, SESSION_COOKIE_NAME="sid",
            ETRANS_ALLOWED_ORIGINS="https://app.example.test, http://localhost:3000") as api:
        user = api.user()
        _AuthService.users = {"sid=csrf-cookie": str(user)}
        _AuthService.calls.clear()
        body = json.dumps(email("nowhere.example.test"))
        cookie = {"Cookie": "sid=csrf-cookie"}

        async def post(headers: dict[str, str], data: str = body) -> tuple[int, Any]:
            response = await api.client.post("/emails", data=data, headers={**cookie, **headers})
            return response.status_code, await response.get_json()

        # The attack of the issue: a cross-site form (text/plain) with the victim's cookie.
        refused = [
            {"Content-Type": "text/plain", "Origin": "https://evil.test"},
            {"Content-Type": "text/plain"},
            {"Content-Type": "application/x-www-form-urlencoded"},
            {"Content-Type": "multipart/form-data; boundary=x"},
            {},
            {"Content-Type": "application/json", "Origin": "https://evil.test"},
            {"Content-Type": "application/json", "Origin": "null"},
            {"Content-Type": "application/json", "Origin": "https://app.example.test.evil.test"},
            {"Content-Type": "application/json", "Origin": "http://app.example.test"},
        ]
        for headers in refused:
            status, answer = await post(headers)
            assert status == 403, (headers, status, answer)
            assert "Cross-site request refused" in answer["detail"], answer
        # Refused before the session is looked up: nothing reached the auth service.
        assert _AuthService.calls == []
        # JSON from no Origin (a non-browser client), an allowed one, or the API's own origin
        # gets past authentication (400: the domain is unknown).
        allowed = [
            {"Content-Type": "application/json"},
            {"Content-Type": "application/json; charset=utf-8",
             "Origin": "https://app.example.test"},
            {"Content-Type": "Application/JSON", "Origin": "http://localhost:3000"},
            {"Content-Type": "application/json", "Origin": "http://localhost"},  # same origin
        ]
        for headers in allowed:
            status, answer = await post(headers)
            assert status == 400, (headers, status, answer)
        # Safe methods are not state changes: any Origin may read (the browser keeps the answer
        # from a cross-site page without CORS, which etrans does not send).
        status, _ = await api.call("GET", "/emails", {**cookie, "Origin": "https://evil.test"})
        assert status == 200
        # Other credentials are not sent by browsers on their own: no CSRF rule for them.
        status, _ = await post({"Content-Type": "text/plain", "Origin": "https://evil.test",
                                "X-API-KEY": api.api_key(user)[0]})
        assert status == 400


async def test_session_cookie_is_forwarded_only_when_it_is_a_plain_cookie_value(
        etrans_env: Any, billing_db: Any, auth_service: str) -> None:
    async with open_sending_api(etrans_env, billing_db, MANAGE_AUTH_URI=auth_service,
                                SESSION_COOKIE_NAME="sid") as api:
        user = api.user()
        # An auth service that grants whatever the forwarded Cookie header says.
        _AuthService.users = {"sid=abc; role=admin": str(user), "sid=abc": str(user)}
        _AuthService.calls.clear()
        for cookie in ['sid="abc; role=admin"', r'sid="abc\073 role=admin"',
                       'sid="abc, role=admin"', 'sid="a\\"b"', 'sid="abc role"']:
            status, body = await api.call("GET", "/emails", {"Cookie": cookie})
            assert status == 401, (cookie, status, body)
        assert _AuthService.calls == []  # nothing was forwarded
        status, _ = await api.call("GET", "/emails", {"Cookie": 'sid="abc"'})  # quoted form
        assert status == 200
        assert _AuthService.calls == ["sid=abc"]
