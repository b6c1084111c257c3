"""The public keys bearer tokens may be verified with locally (JWT_PUBLIC_KEY), and the JWS
algorithms each may verify.

Read at start by the settings (a key of the wrong type is a configuration error, exit 2, not a
401 at the first request) and by :class:`etrans.api.auth.JwtVerifier`, which verifies with
exactly these algorithms.  It lives with the settings because the settings may import nothing
of the API layer (the import-linter layers contract).
"""

from __future__ import annotations

from typing import Any

_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512",
                  "secp256k1": "ES256K"}


def load_jwt_public_key(pem: str) -> Any:
    """The key of a PEM ``SubjectPublicKeyInfo``; ValueError when it is none we can verify with."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise ValueError("not a PEM public key") from exc
    jwt_algorithms(key)
    return key


def jwt_algorithms(key: object) -> tuple[str, ...]:
    """The JWS algorithms a public key may verify: RS*/PS* for RSA, the ES* of an EC key's curve,
    EdDSA for Ed25519/Ed448.  ValueError for any other key."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if isinstance(key, rsa.RSAPublicKey):
        return ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = _EC_ALGORITHMS.get(key.curve.name)
        if algorithm is None:
            raise ValueError(f"unsupported EC curve {key.curve.name} (P-256, P-384, P-521 or "
                             "secp256k1)")
        return (algorithm,)
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return ("EdDSA",)
    raise ValueError(f"unsupported key type {type(key).__name__} (RSA, EC or Ed25519/Ed448)")
