"""JWT access tokens (RFC 9068): the claims of a CBST and their checks on introspection."""

from __future__ import annotations

import secrets
from typing import Any

from sdk.jws import PrivateKey


def build_claims(*, issuer: str, client_id: str, subject: str, audience: str, scope: str, ttl: int,
                 now: int) -> dict[str, Any]:
    return {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "client_id": client_id,
        "iat": now,
        "exp": now + ttl,
        "jti": secrets.token_hex(16),  # 128 bits; hex so it never starts with "-" (CLI argument)
        "scope": scope,
    }


def sign(key: PrivateKey, claims: dict[str, Any]) -> str:
    return key.sign(claims, typ="at+jwt")
