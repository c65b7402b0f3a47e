"""Compact JWS (RFC 7515) and JWK (RFC 7517/7518/8037) for CBST access tokens.

**Hazardous low-level layer** — like ``cryptography.hazmat``: it checks the signature and
the header (``alg`` from the key, ``kid``, ``typ``, no self-chosen keys) and nothing about the
claims: no ``exp``, ``iss``, ``aud`` or ``scope`` check, no choice of which issuer's keys.
Applications should use :mod:`sdk.access_token` (``verify_access_token``) or the server
middleware, which apply every claim check on top of it; use this module directly only to
build such a layer. It keeps its public name ``sdk.jws`` because the IdP and the SDK import
it in many places.

Only the asymmetric algorithms CBST pins are supported: ES256 (P-256, RFC 7518 §3.4) and
EdDSA (Ed25519, RFC 8037). The algorithm is taken from the *key*, never from the token header:
a header whose ``alg`` disagrees with the key is refused, so ``alg: none`` and HS256-with-the-
public-key forgeries cannot work.

Why it is hand-written rather than pyjwt or joserfc: verification cost, measured by
``bench/sdk_verify.py`` and recorded in ``bench/results/sdk_verify.md`` (CPU time per request
relative to the raw ``cryptography`` verify of the same algorithm; the SDK's target for the
whole cold path is ≤ 1.3x raw, met on the Intel machine of earlier runs, not on the AMD EPYC
machine of the latest one, where pure-Python work costs relatively more — the libraries' too):

======  ===========  ========  =====  =======
alg     this module  SDK cold  pyjwt  joserfc
======  ===========  ========  =====  =======
ES256   1.64x        1.81x     2.56x  2.25x
EdDSA   1.34x        1.45x     1.81x  1.71x
======  ===========  ========  =====  =======

(``bench/results/crypto.md`` has the same comparison for signing and verifying a 505-byte
token, with the limit of any Python implementation beside it.) Its output is checked against
joserfc in ``tests/sdk/test_rfc7515_jws_compact.py``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from .errors import CBSTError

SUPPORTED_ALGS = ("ES256", "EdDSA")
ACCESS_TOKEN_TYP = "at+jwt"  # RFC 9068 §2.1

#: Tokens longer than this are refused before any parsing (a CBST is typically < 1 KiB).
MAX_TOKEN_LENGTH = 16 * 1024
#: Header members a verifier understands. Anything in ``crit`` is by definition not understood
#: (RFC 7515 §4.1.11); ``jku``/``x5u``/``jwk``/``x5c`` would let the token pick its own key.
_KNOWN_HEADER = frozenset({"alg", "kid", "typ"})
_FORBIDDEN_HEADER = frozenset({"jku", "x5u", "jwk", "x5c", "crit", "b64", "zip"})
_MAX_KID_LENGTH = 128
_B64URL_VALUE = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")}
_ES256_SIG_LEN = 64
_TO_STANDARD = str.maketrans("-_+/=", "+/!!!")
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())  # stateless; built once rather than per signature
_ED25519_SIG_LEN = 64


class JWSError(CBSTError):
    """A token that cannot be accepted; the message is safe to show to the caller."""


class MalformedToken(JWSError):
    pass


class UnsupportedHeader(JWSError):
    pass


class UnknownKey(JWSError):
    """The ``kid`` is not among the keys offered (a verifier may refetch the JWKS once)."""


class BadSignature(JWSError):
    pass


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2): other characters are an error, and so are
    non-zero unused bits in the last character (RFC 4648 §3.5), so a token has one spelling only."""
    # The alphabet check runs in C: '-' and '_' become the standard alphabet's '+' and '/', while
    # the standard alphabet's own '+', '/' and '=' become '!', which strict mode refuses. (A regex
    # over the token cost more than the rest of decoding.)
    if len(text) % 4 == 1:
        raise MalformedToken("invalid base64url")
    rem = len(text) % 4
    if rem and _B64URL_VALUE.get(text[-1], 0) & (0x0F if rem == 2 else 0x03):
        raise MalformedToken("invalid base64url (non-canonical last character)")
    try:
        return binascii.a2b_base64(text.translate(_TO_STANDARD) + "=" * (-len(text) % 4), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedToken("invalid base64url") from exc


def _json_dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# --- keys -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublicKey:
    """A verification key: the JWK members that matter plus the loaded ``cryptography`` object."""

    kid: str
    alg: str
    key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey = field(repr=False)

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> PublicKey:
        """Load a public JWK. ``alg`` is required (the key pins its algorithm)."""
        if not isinstance(jwk, Mapping):
            raise JWSError("JWK must be an object")
        kid, alg, kty = jwk.get("kid"), jwk.get("alg"), jwk.get("kty")
        if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID_LENGTH:
            raise JWSError("JWK needs a kid")
        if "d" in jwk:
            raise JWSError("refusing a JWK that contains private key material")
        try:
            if alg == "ES256" and kty == "EC" and jwk.get("crv") == "P-256":
                x, y = b64url_decode(jwk["x"]), b64url_decode(jwk["y"])
                if len(x) != 32 or len(y) != 32:
                    raise JWSError("bad P-256 coordinates")
                pub = ec.EllipticCurvePublicNumbers(
                    int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
                ).public_key()
                return cls(kid, alg, pub)
            if alg == "EdDSA" and kty == "OKP" and jwk.get("crv") == "Ed25519":
                return cls(kid, alg, ed25519.Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise JWSError(f"invalid {alg} JWK: {exc}") from exc
        raise JWSError(f"unsupported JWK (alg={alg!r}, kty={kty!r}); supported: ES256/P-256, EdDSA/Ed25519")

    def to_jwk(self) -> dict[str, str]:
        jwk = public_jwk_members(self.key)
        jwk.update(kid=self.kid, alg=self.alg, use="sig")
        return jwk

    def verify(self, signature: bytes, signing_input: bytes) -> None:
        try:
            if self.alg == "ES256":
                if len(signature) != _ES256_SIG_LEN:
                    raise BadSignature("signature verification failed")
                r = int.from_bytes(signature[:32], "big")
                s = int.from_bytes(signature[32:], "big")
                self.key.verify(encode_dss_signature(r, s), signing_input, _ECDSA_SHA256)  # type: ignore[call-arg]
            else:
                if len(signature) != _ED25519_SIG_LEN:
                    raise BadSignature("signature verification failed")
                self.key.verify(signature, signing_input)  # type: ignore[call-arg]
        except InvalidSignature as exc:
            raise BadSignature("signature verification failed") from exc


def public_jwk_members(key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) -> dict[str, str]:
    """The required JWK members of a public key (RFC 7518 §6.2.1, RFC 8037 §2), no extras."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        nums = key.public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url_encode(nums.x.to_bytes(32, "big")),
            "y": b64url_encode(nums.y.to_bytes(32, "big")),
        }
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}


def jwk_thumbprint(members: Mapping[str, str]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of the required public members."""
    required = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}[members["kty"]]
    canonical = json.dumps({k: members[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return b64url_encode(hashlib.sha256(canonical.encode("ascii")).digest())


@dataclass(frozen=True)
class PrivateKey:
    """A signing key. Its ``kid`` is the RFC 7638 thumbprint of its public half."""

    kid: str
    alg: str
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey = field(repr=False)

    @classmethod
    def generate(cls, alg: str = "ES256") -> PrivateKey:
        if alg == "ES256":
            key: Any = ec.generate_private_key(ec.SECP256R1())
        elif alg == "EdDSA":
            key = ed25519.Ed25519PrivateKey.generate()
        else:
            raise JWSError(f"unsupported algorithm {alg!r}; supported: {', '.join(SUPPORTED_ALGS)}")
        return cls(jwk_thumbprint(public_jwk_members(key.public_key())), alg, key)

    @classmethod
    def from_pkcs8(cls, der: bytes, alg: str) -> PrivateKey:
        key: Any = serialization.load_der_private_key(der, password=None)
        if not isinstance(key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
            raise JWSError("unsupported private key type")
        return cls(jwk_thumbprint(public_jwk_members(key.public_key())), alg, key)

    def to_pkcs8(self) -> bytes:
        """Unencrypted PKCS#8 DER — only ever handed to the keystore, which encrypts it."""
        return self.key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.kid, self.alg, self.key.public_key())

    def sign(self, claims: Mapping[str, Any], typ: str = ACCESS_TOKEN_TYP) -> str:
        header = {"alg": self.alg, "kid": self.kid, "typ": typ}
        signing_input = (
            b64url_encode(_json_dumps(header)) + "." + b64url_encode(_json_dumps(claims))
        ).encode("ascii")
        if self.alg == "ES256":
            r, s = decode_dss_signature(self.key.sign(signing_input, _ECDSA_SHA256))  # type: ignore[call-arg]
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            signature = self.key.sign(signing_input)  # type: ignore[call-arg]
        return signing_input.decode("ascii") + "." + b64url_encode(signature)


# --- verification ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    header: dict[str, Any]
    claims: dict[str, Any]
    key: PublicKey


def _parts(token: str) -> list[str]:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise MalformedToken("token too long" if isinstance(token, str) else "token must be a string")
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedToken("not a compact JWS (expected three dot-separated parts)")
    return parts


def _parse_header(h64: str) -> dict[str, Any]:
    try:
        header = json.loads(b64url_decode(h64))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # json raises RecursionError on deep nesting
        raise MalformedToken("token header is not JSON") from exc
    if not isinstance(header, dict):
        raise MalformedToken("token header is not a JSON object")
    return header


def split(token: str) -> tuple[dict[str, Any], bytes, bytes, bytes]:
    """Parse a compact JWS into (header, payload bytes, signature, signing input) with strict checks."""
    h64, p64, s64 = _parts(token)
    return _parse_header(h64), b64url_decode(p64), b64url_decode(s64), f"{h64}.{p64}".encode("ascii")


def check_header(header: Mapping[str, Any], *, typ: str | None = ACCESS_TOKEN_TYP) -> str:
    """Refuse hostile or unexpected header members; return the ``kid``."""
    forbidden = _FORBIDDEN_HEADER.intersection(header)
    if forbidden:
        raise UnsupportedHeader(f"unsupported token header member(s): {', '.join(sorted(forbidden))}")
    alg = header.get("alg")
    if alg not in SUPPORTED_ALGS:
        raise UnsupportedHeader(f"unsupported alg {str(alg)[:32]!r}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID_LENGTH:
        raise UnsupportedHeader("token header needs a kid of at most 128 characters")
    if typ is not None and not _typ_matches(header.get("typ"), typ):
        raise UnsupportedHeader(f"token typ must be {typ!r}")
    return kid


def _typ_matches(value: Any, expected: str) -> bool:
    # RFC 9068 §4: "at+jwt", and the media type form "application/at+jwt", case-insensitively.
    if not isinstance(value, str):
        return False
    lowered: str = value.lower()
    return lowered == expected or lowered == "application/" + expected


#: Header segments that passed ``check_header``, with their kid (only successes are kept).
_CHECKED_HEADERS: dict[tuple[str, str | None], tuple[dict[str, Any], str]] = {}
_CHECKED_HEADERS_MAX = 256


def verify(
    token: str, keys: Mapping[str, PublicKey], *, typ: str | None = ACCESS_TOKEN_TYP
) -> Verified:
    """Verify signature and header of ``token`` against ``keys`` (by kid). Claims are NOT checked.

    The returned header may be shared between calls: treat it as read-only.
    """
    h64, p64, s64 = _parts(token)
    # Every token a key signs carries the same header segment: parse and check it once.
    checked = _CHECKED_HEADERS.get((h64, typ))
    if checked is None:
        header = _parse_header(h64)
        checked = (header, check_header(header, typ=typ))
        if len(_CHECKED_HEADERS) >= _CHECKED_HEADERS_MAX:
            _CHECKED_HEADERS.clear()
        _CHECKED_HEADERS[(h64, typ)] = checked
    header, kid = checked
    key = keys.get(kid)
    if key is None:
        raise UnknownKey("unknown signing key")
    if header["alg"] != key.alg:
        raise UnsupportedHeader("token alg does not match the key's algorithm")
    signature, payload = b64url_decode(s64), b64url_decode(p64)  # strict: both segments are ASCII now
    key.verify(signature, f"{h64}.{p64}".encode("ascii"))
    try:
        claims = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedToken("token payload is not JSON") from exc
    if not isinstance(claims, dict):
        raise MalformedToken("token payload is not a JSON object")
    return Verified(header, claims, key)
