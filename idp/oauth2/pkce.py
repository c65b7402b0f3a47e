"""Proof Key for Code Exchange (RFC 7636), ``S256`` only.

``plain`` (§4.2) protects nothing against an attacker who can read the authorization request,
and OAuth 2.1 §7.5.2 lets a server refuse it; a missing challenge is refused too (PKCE is
mandatory for every client here, confidential ones included, OAuth 2.1 §4.1.1).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

S256 = "S256"
METHODS = (S256,)
#: RFC 7636 §4.1: code_verifier = 43*128unreserved (ALPHA / DIGIT / "-" / "." / "_" / "~").
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
#: §4.2: the S256 challenge is BASE64URL(SHA256(verifier)) without padding: exactly 43 characters.
_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")


class PKCEError(ValueError):
    """The challenge or verifier is unacceptable; the message says why (an error_description)."""


def validate_challenge(challenge: str | None, method: str | None) -> str:
    """The ``code_challenge`` of an authorization request (§4.3), checked; raises PKCEError."""
    if challenge is None:
        raise PKCEError("code_challenge is required (PKCE, RFC 7636, S256)")
    if method is None:
        # §4.3 defaults a missing method to "plain", which is not supported.
        raise PKCEError("code_challenge_method is required and must be S256")
    if method != S256:
        raise PKCEError("code_challenge_method must be S256")
    if not _CHALLENGE.fullmatch(challenge):
        raise PKCEError("code_challenge must be the 43-character base64url SHA-256 of the verifier")
    return challenge


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify(verifier: str | None, challenge: str) -> bool:
    """§4.6: whether ``verifier`` matches the stored challenge (constant-time comparison)."""
    if verifier is None or not _VERIFIER.fullmatch(verifier):
        return False
    return hmac.compare_digest(s256(verifier), challenge)
