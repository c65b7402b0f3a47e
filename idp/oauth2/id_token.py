"""ID tokens (OpenID Connect Core 1.0 §2, §3.1.3.6) and the claims the scopes release (§5.4).

Signed with the IdP's current signing key (``typ: JWT``, so an ID token can never pass for an
``at+jwt`` access token, RFC 9068 §4). ``at_hash`` (§3.1.3.6) is the left half of the hash of
the access token: SHA-256 for ES256, SHA-512 for EdDSA over Ed25519 (OpenID errata for EdDSA).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from sdk.jws import PrivateKey

#: Claims each OpenID Connect scope releases (Core §5.4), from the subject's claims.
SCOPE_CLAIMS: Mapping[str, tuple[str, ...]] = {
    "profile": ("name", "preferred_username", "given_name", "family_name", "nickname", "picture", "locale",
                "zoneinfo", "updated_at", "website"),
    "email": ("email", "email_verified"),
}
CLAIMS_SUPPORTED = ("sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash",
                    *SCOPE_CLAIMS["profile"], *SCOPE_CLAIMS["email"])


def released_claims(subject_claims: Mapping[str, Any], scopes: Iterable[str]) -> dict[str, Any]:
    """The subject's claims the granted scopes release (only JSON scalars; ``username`` stands in
    for ``preferred_username`` when the subject has no such claim)."""
    claims = dict(subject_claims)
    if "preferred_username" not in claims and isinstance(claims.get("username"), str):
        claims["preferred_username"] = claims["username"]
    out: dict[str, Any] = {}
    for scope in scopes:
        for name in SCOPE_CLAIMS.get(scope, ()):
            value = claims.get(name)
            if isinstance(value, (str, bool, int, float)):
                out[name] = value
    return out


def at_hash(access_token: str, alg: str) -> str:
    digest = (hashlib.sha512 if alg == "EdDSA" else hashlib.sha256)(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")


def build(key: PrivateKey, *, issuer: str, subject: str, client_id: str, now: int, ttl: int, auth_time: int,
          nonce: str | None, access_token: str, claims: Mapping[str, Any]) -> str:
    body: dict[str, Any] = {**claims, "iss": issuer, "sub": subject, "aud": client_id, "iat": now, "exp": now + ttl,
                            "auth_time": auth_time, "at_hash": at_hash(access_token, key.alg)}
    if nonce is not None:
        body["nonce"] = nonce
    return key.sign(body, typ="JWT")
