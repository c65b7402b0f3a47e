"""JWT access tokens (RFC 9068) as a resource server sees them: verify, check claims, cache.

The low-level signature and header checks are :mod:`sdk.jws` (algorithm pinned by the key,
hostile headers refused). This module adds the claims profile of a CBST (design.md § Token):

* ``iss`` equals the configured issuer, byte for byte (RFC 9068 §4, RFC 8414 §3.3);
* ``aud`` is, or contains, this resource server's URI (RFC 9068 §4, RFC 8707);
* ``exp`` is required; ``exp``/``nbf``/``iat`` are checked with a clock-skew allowance;
* ``sub``, ``client_id``, ``iat``, ``jti`` are present (RFC 9068 §2.2);
* ``scope`` parses as a capability set (design.md § Capability grammar);
* sender-constrained tokens (``cnf``) are refused here: a bearer-only verifier cannot check
  the proof of possession, and accepting them without it would downgrade them to bearer.

:class:`VerifiedTokenCache` remembers tokens already verified, keyed by a SHA-256 hash of the
token (the token itself is never stored as a key), bounded in size, never returning an entry
past its ``exp`` (+ skew) or one whose ``jti`` has been revoked since.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from . import jws
from .capabilities import CapabilityError, CapabilitySet
from .errors import CBSTError

__all__ = [
    "AccessToken",
    "InvalidToken",
    "UnknownSigningKey",
    "VerifiedTokenCache",
    "check_claims",
    "token_hash",
    "verify_access_token",
]

#: Longest ``sub``/``client_id``/``jti`` accepted (they end up in logs and cache keys).
MAX_CLAIM_LENGTH = 512
#: Parsed scopes remembered: a client's tokens repeat its scope string, and parsing a capability
#: set (URI normalisation, matcher compilation) costs about as much as half a signature check.
#: CapabilitySet is immutable, so sharing one between tokens is safe.
_SCOPE_CACHE_SIZE = 4096
_scope_cache: dict[str, CapabilitySet] = {}


def parse_scope(scope: str) -> CapabilitySet:
    """``CapabilitySet.parse`` with a bounded memo (raises :class:`CapabilityError`)."""
    caps = _scope_cache.get(scope)
    if caps is None:
        caps = CapabilitySet.parse(scope)
        if len(_scope_cache) >= _SCOPE_CACHE_SIZE:
            _scope_cache.clear()
        _scope_cache[scope] = caps
    return caps


class InvalidToken(CBSTError):
    """The token cannot be accepted. ``str(exc)`` is safe to show to the caller
    (RFC 6750 ``error_description``); ``error`` is the RFC 6750 §3.1 error code."""

    error = "invalid_token"


class UnknownSigningKey(InvalidToken):
    """The token names a ``kid`` not in the key set (a verifier may refetch the JWKS once)."""


class AccessToken(NamedTuple):
    """A verified CBST: who holds it and what it allows (immutable)."""

    issuer: str
    subject: str
    client_id: str
    audience: tuple[str, ...]
    scope: CapabilitySet
    expires_at: int
    issued_at: int
    jti: str
    kid: str
    not_before: int | None = None
    #: All claims of the token, as verified (for ``act``, ``att``, ``authorization_details``...).
    claims: Mapping[str, Any] = {}

    @property
    def client(self) -> str:
        """The rate-limit and audit identity of the caller: ``client_id``."""
        return self.client_id


def token_hash(token: str) -> bytes:
    """The cache key of a token: SHA-256 of its bytes."""
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


def _int_claim(claims: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    value = claims.get(name)
    if type(value) is int and -(2**53) < value < 2**53:  # the common case, fast
        return value
    if value is None:
        if required:
            raise InvalidToken(f"token has no {name} claim")
        return None
    # JSON numbers only; bool is an int subclass in Python and is refused. Fractions are
    # allowed by RFC 7519 (NumericDate) and truncated.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise InvalidToken(f"token {name} claim is not a number")
    if not -(2**53) < value < 2**53:
        raise InvalidToken(f"token {name} claim is out of range")
    return int(value)


def _str_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidToken(f"token has no {name} claim")
    if len(value) > MAX_CLAIM_LENGTH:
        raise InvalidToken(f"token {name} claim is too long")
    return value


def check_claims(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    audience: str,
    now: float,
    leeway: int = 60,
    kid: str = "",
) -> AccessToken:
    """Check the claims of an already signature-verified token; return the :class:`AccessToken`."""
    if claims.get("iss") != issuer:
        raise InvalidToken("token was issued by another issuer")
    aud = claims.get("aud")
    if isinstance(aud, str):
        audiences: tuple[str, ...] = (aud,)
    elif isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
        audiences = tuple(aud)
    else:
        raise InvalidToken("token has no aud claim")
    if audience not in audiences:
        raise InvalidToken("token is not meant for this resource (aud)")
    exp = _int_claim(claims, "exp", required=True)
    nbf = _int_claim(claims, "nbf", required=False)
    iat = _int_claim(claims, "iat", required=True)
    assert exp is not None and iat is not None
    if now >= exp + leeway:
        raise InvalidToken("token has expired")
    if nbf is not None and now < nbf - leeway:
        raise InvalidToken("token is not valid yet (nbf)")
    if now < iat - leeway:
        raise InvalidToken("token was issued in the future (iat)")
    if "cnf" in claims:
        raise InvalidToken("sender-constrained tokens (cnf) are not accepted by this server")
    subject = _str_claim(claims, "sub")
    client_id = _str_claim(claims, "client_id")
    jti = _str_claim(claims, "jti")
    scope_text = claims.get("scope", "")
    if not isinstance(scope_text, str):
        raise InvalidToken("token scope claim is not a string")
    try:
        scope = parse_scope(scope_text)
    except CapabilityError as exc:
        raise InvalidToken(f"token scope is not a valid capability set: {str(exc)[:200]}") from None
    return AccessToken(issuer, subject, client_id, audiences, scope, exp, iat, jti, kid, nbf, claims)


def verify_access_token(
    token: str,
    keys: Mapping[str, jws.PublicKey],
    *,
    issuer: str,
    audience: str,
    now: float | None = None,
    leeway: int = 60,
) -> AccessToken:
    """Verify signature, header (``typ: at+jwt``, pinned ``alg``, no hostile members) and claims.

    Raises :class:`UnknownSigningKey` when the ``kid`` is not in ``keys`` and
    :class:`InvalidToken` for everything else.
    """
    try:
        verified = jws.verify(token, keys)
    except jws.UnknownKey as exc:
        raise UnknownSigningKey(str(exc)) from None
    except jws.JWSError as exc:
        raise InvalidToken(str(exc)) from None
    return check_claims(
        verified.claims, issuer=issuer, audience=audience,
        now=time.time() if now is None else now, leeway=leeway, kid=verified.key.kid,
    )


class VerifiedTokenCache:
    """Bounded LRU of verified tokens keyed by :func:`token_hash`.

    ``get`` returns an entry only while ``now < exp + leeway`` and while ``is_revoked(jti)``
    is false; expired or revoked entries are dropped on sight. Not thread-safe: one per event
    loop (the middleware is single-threaded per process).
    """

    def __init__(self, max_size: int = 10_000, *, leeway: int = 60) -> None:
        if max_size < 0:
            raise ValueError("max_size must be >= 0")
        self.max_size = max_size
        self.leeway = leeway
        self._entries: OrderedDict[bytes, AccessToken] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(
        self, key: bytes, now: float, is_revoked: Callable[[str], bool] | None = None
    ) -> AccessToken | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry.expires_at + self.leeway or (is_revoked is not None and is_revoked(entry.jti)):
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: bytes, token: AccessToken) -> None:
        if self.max_size == 0:
            return
        self._entries[key] = token
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def discard_jtis(self, jtis: set[str] | frozenset[str]) -> int:
        """Drop cached tokens whose ``jti`` is in ``jtis``; the number dropped."""
        if not jtis:
            return 0
        doomed = [k for k, v in self._entries.items() if v.jti in jtis]
        for k in doomed:
            del self._entries[k]
        return len(doomed)

    def clear(self) -> None:
        self._entries.clear()
