"""sdk/jws.py: compact JWS for CBST access tokens, checked against joserfc and RFC 8037 vectors.

Round trips for ES256 and EdDSA; cross-checks both ways with joserfc; the published RFC 8037
Appendix A Ed25519 vectors (A.1 key, A.3 thumbprint, A.4/A.5 signature); and refusal of every
header or encoding trick a hostile token may carry. Hostile headers are signed here with
``cryptography`` directly (not with the module under test), so each refusal is a header check
and not a signature failure.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import warnings
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey

from sdk import jws
from sdk.jws import (
    MAX_TOKEN_LENGTH,
    BadSignature,
    JWSError,
    MalformedToken,
    PrivateKey,
    PublicKey,
    UnknownKey,
    UnsupportedHeader,
    b64url_decode,
    b64url_encode,
    jwk_thumbprint,
)

ALGS = ["ES256", "EdDSA"]
CLAIMS = {"iss": "https://idp.example", "sub": "c1", "aud": "https://mcp.example/mcp", "client_id": "c1",
          "iat": 1_800_000_000, "exp": 1_800_000_300, "jti": "j-1", "scope": "tools/call:git-*"}

# RFC 8037 Appendix A
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"  # A.1
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"  # A.1 / A.2
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"  # A.3
RFC8037_A4_JWS = ("eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
                  "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg")  # A.4


def _joserfc_decode(token: str, key: Any, alg: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc flags "EdDSA" as deprecated by RFC 9864
        return jwt.decode(token, key, algorithms=[alg])


def _joserfc_encode(header: dict[str, Any], claims: dict[str, Any], key: Any, alg: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return jwt.encode(header, claims, key, algorithms=[alg])


def raw_sign(key: PrivateKey, header: Any, payload: bytes | Any) -> str:
    """Sign arbitrary header/payload with ``cryptography`` (independent of jws.PrivateKey.sign)."""
    h = b64url_encode(header if isinstance(header, bytes) else json.dumps(header).encode())
    p = b64url_encode(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
    signing_input = f"{h}.{p}".encode()
    if isinstance(key.key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        sig = key.key.sign(signing_input)
    return f"{h}.{p}.{b64url_encode(sig)}"


@pytest.fixture(params=ALGS)
def key(request: pytest.FixtureRequest) -> PrivateKey:
    return PrivateKey.generate(request.param)


def keys_of(*keys: PrivateKey) -> dict[str, PublicKey]:
    return {k.kid: k.public for k in keys}


def header_for(key: PrivateKey, **extra: Any) -> dict[str, Any]:
    return {"alg": key.alg, "kid": key.kid, "typ": "at+jwt", **extra}


# ---------------------------------------------------------------------------------------------
# Round trips and interoperability
# ---------------------------------------------------------------------------------------------


def test_sign_verify_round_trip(key: PrivateKey) -> None:
    token = key.sign(CLAIMS)
    verified = jws.verify(token, keys_of(key))
    assert verified.claims == CLAIMS
    assert verified.header == {"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}
    assert verified.key.kid == key.kid


def test_raw_signer_guard_produces_tokens_the_module_accepts(key: PrivateKey) -> None:
    """Guard for the refusal tests: a plain header signed by raw_sign verifies."""
    assert jws.verify(raw_sign(key, header_for(key), CLAIMS), keys_of(key)).claims == CLAIMS


def test_kid_is_rfc7638_thumbprint(key: PrivateKey) -> None:
    jwk = key.public.to_jwk()
    required = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}[jwk["kty"]]
    canonical = json.dumps({m: jwk[m] for m in required}, separators=(",", ":"), sort_keys=True).encode()
    assert key.kid == b64url_encode(hashlib.sha256(canonical).digest())
    imported = (ECKey if key.alg == "ES256" else OKPKey).import_key({m: jwk[m] for m in required})
    assert imported.thumbprint() == key.kid  # joserfc computes the same RFC 7638 thumbprint


def test_joserfc_verifies_our_tokens(key: PrivateKey) -> None:
    jwk = key.public.to_jwk()
    assert jwk["use"] == "sig" and jwk["alg"] == key.alg and "d" not in jwk
    their_key = (ECKey if key.alg == "ES256" else OKPKey).import_key(jwk)
    token = key.sign(CLAIMS)
    decoded = _joserfc_decode(token, their_key, key.alg)
    assert decoded.claims == CLAIMS
    assert decoded.header == {"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}


@pytest.mark.parametrize("alg", ALGS)
def test_we_verify_joserfc_tokens_given_the_jwk(alg: str) -> None:
    their = ECKey.generate_key("P-256") if alg == "ES256" else OKPKey.generate_key("Ed25519")
    token = _joserfc_encode({"alg": alg, "kid": "theirs-1", "typ": "at+jwt"}, CLAIMS, their, alg)
    public = PublicKey.from_jwk({**their.as_dict(private=False), "kid": "theirs-1", "alg": alg})
    assert jws.verify(token, {"theirs-1": public}).claims == CLAIMS
    # And a joserfc token signed by another joserfc key with the same kid is refused.
    other = ECKey.generate_key("P-256") if alg == "ES256" else OKPKey.generate_key("Ed25519")
    forged = _joserfc_encode({"alg": alg, "kid": "theirs-1", "typ": "at+jwt"}, CLAIMS, other, alg)
    with pytest.raises(BadSignature):
        jws.verify(forged, {"theirs-1": public})


def test_private_key_pkcs8_round_trip_keeps_kid_and_signatures(key: PrivateKey) -> None:
    again = PrivateKey.from_pkcs8(key.to_pkcs8(), key.alg)
    assert again.kid == key.kid
    assert jws.verify(again.sign(CLAIMS), keys_of(key)).claims == CLAIMS


def test_non_ascii_claims_round_trip(key: PrivateKey) -> None:
    claims = {**CLAIMS, "sub": "ünïcødé ✓", "scope": "prompts/get:r%C3%A9sum%C3%A9"}
    token = key.sign(claims)
    assert jws.verify(token, keys_of(key)).claims == claims
    their_key = (ECKey if key.alg == "ES256" else OKPKey).import_key(key.public.to_jwk())
    assert _joserfc_decode(token, their_key, key.alg).claims == claims


# ---------------------------------------------------------------------------------------------
# RFC 8037 Appendix A vectors (Ed25519)
# ---------------------------------------------------------------------------------------------


def _rfc8037_private() -> PrivateKey:
    sk = ed25519.Ed25519PrivateKey.from_private_bytes(b64url_decode(RFC8037_D))
    der = sk.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return PrivateKey.from_pkcs8(der, "EdDSA")


def test_rfc8037_a2_a3_public_jwk_and_thumbprint() -> None:
    key = _rfc8037_private()
    assert key.public.to_jwk()["x"] == RFC8037_X  # A.2
    assert jwk_thumbprint({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}) == RFC8037_THUMBPRINT  # A.3
    assert key.kid == RFC8037_THUMBPRINT


def test_rfc8037_a4_signature_is_reproduced_and_a5_verifies() -> None:
    h64, p64, s64 = RFC8037_A4_JWS.split(".")
    assert h64 == b64url_encode(b'{"alg":"EdDSA"}') and p64 == b64url_encode(b"Example of Ed25519 signing")
    key = _rfc8037_private()
    signing_input = f"{h64}.{p64}".encode()
    assert b64url_encode(key.key.sign(signing_input)) == s64  # A.4: Ed25519 is deterministic
    public = PublicKey.from_jwk(
        {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "kid": RFC8037_THUMBPRINT, "alg": "EdDSA"})
    public.verify(b64url_decode(s64), signing_input)  # A.5: validation succeeds
    bad = bytearray(b64url_decode(s64))
    bad[0] ^= 1
    with pytest.raises(BadSignature):
        public.verify(bytes(bad), signing_input)
    with pytest.raises(BadSignature):
        public.verify(b64url_decode(s64), signing_input + b"x")


def test_rfc8037_a4_token_lacks_kid_and_typ_so_the_access_token_verifier_refuses_it() -> None:
    public = PublicKey.from_jwk(
        {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "kid": RFC8037_THUMBPRINT, "alg": "EdDSA"})
    with pytest.raises(UnsupportedHeader):
        jws.verify(RFC8037_A4_JWS, {RFC8037_THUMBPRINT: public}, typ=None)


# ---------------------------------------------------------------------------------------------
# Refusals: algorithms and keys
# ---------------------------------------------------------------------------------------------


def test_alg_none_is_refused(key: PrivateKey) -> None:
    for alg in ("none", "None", "NONE", ""):
        h = b64url_encode(json.dumps({"alg": alg, "kid": key.kid, "typ": "at+jwt"}).encode())
        p = b64url_encode(json.dumps(CLAIMS).encode())
        for token in (f"{h}.{p}.", f"{h}.{p}.{b64url_encode(b'x' * 64)}"):
            with pytest.raises(JWSError):
                jws.verify(token, keys_of(key))


def test_missing_alg_is_refused(key: PrivateKey) -> None:
    with pytest.raises(UnsupportedHeader):
        jws.verify(raw_sign(key, {"kid": key.kid, "typ": "at+jwt"}, CLAIMS), keys_of(key))


def test_hs256_keyed_with_the_public_key_is_refused(key: PrivateKey) -> None:
    """Key confusion: an HMAC over the token keyed with any public encoding of the verification key."""
    pub = key.key.public_key()
    secrets_ = [
        pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        json.dumps(key.public.to_jwk()).encode(),
    ]
    h = b64url_encode(json.dumps({"alg": "HS256", "kid": key.kid, "typ": "at+jwt"}).encode())
    p = b64url_encode(json.dumps(CLAIMS).encode())
    for secret in secrets_:
        sig = hmac.new(secret, f"{h}.{p}".encode(), hashlib.sha256).digest()
        with pytest.raises(UnsupportedHeader):
            jws.verify(f"{h}.{p}.{b64url_encode(sig)}", keys_of(key))


@pytest.mark.parametrize("alg", ["RS256", "ES384", "PS256", "HS512", "Ed25519", "ES256K"])
def test_other_algorithms_are_refused(key: PrivateKey, alg: str) -> None:
    with pytest.raises(UnsupportedHeader):
        jws.verify(raw_sign(key, header_for(key, alg=alg), CLAIMS), keys_of(key))


def test_alg_that_disagrees_with_the_key_is_refused() -> None:
    es, ed = PrivateKey.generate("ES256"), PrivateKey.generate("EdDSA")
    # An Ed25519-signed token claiming the ES256 key's kid, and the reverse.
    with pytest.raises(UnsupportedHeader):
        jws.verify(raw_sign(ed, {"alg": "EdDSA", "kid": es.kid, "typ": "at+jwt"}, CLAIMS), keys_of(es, ed))
    with pytest.raises(UnsupportedHeader):
        jws.verify(raw_sign(es, {"alg": "ES256", "kid": ed.kid, "typ": "at+jwt"}, CLAIMS), keys_of(es, ed))


def test_unknown_kid_is_refused(key: PrivateKey) -> None:
    other = PrivateKey.generate(key.alg)
    with pytest.raises(UnknownKey):
        jws.verify(key.sign(CLAIMS), keys_of(other))
    with pytest.raises(UnknownKey):
        jws.verify(key.sign(CLAIMS), {})


def test_right_kid_wrong_key_is_bad_signature(key: PrivateKey) -> None:
    impostor = PrivateKey(key.kid, key.alg, PrivateKey.generate(key.alg).key)
    with pytest.raises(BadSignature):
        jws.verify(impostor.sign(CLAIMS), keys_of(key))


@pytest.mark.parametrize("kid", ["", "k" * 129, "k" * 4000, 7, None, ["k"], {"k": 1}])
def test_kid_missing_empty_non_string_or_longer_than_128_is_refused(key: PrivateKey, kid: Any) -> None:
    keys = keys_of(key)
    if isinstance(kid, str) and kid:
        keys[kid] = PublicKey(kid, key.alg, key.key.public_key())  # so only the header check can refuse it
    with pytest.raises(UnsupportedHeader):
        jws.verify(raw_sign(key, {**header_for(key), "kid": kid}, CLAIMS), keys)


def test_kid_of_exactly_128_characters_is_accepted(key: PrivateKey) -> None:
    kid = "k" * 128
    assert jws.verify(raw_sign(key, {**header_for(key), "kid": kid}, CLAIMS),
                      {kid: PublicKey(kid, key.alg, key.key.public_key())}).claims == CLAIMS


@pytest.mark.parametrize("member,value", [
    ("crit", ["exp"]), ("crit", []), ("jku", "https://evil.example/jwks"), ("x5u", "https://evil.example/cert.pem"),
    ("jwk", {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}), ("x5c", ["MIIB"]), ("b64", False), ("zip", "DEF"),
])
def test_header_members_that_pick_keys_or_change_processing_are_refused(key: PrivateKey, member: str,
                                                                        value: Any) -> None:
    with pytest.raises(UnsupportedHeader):
        jws.verify(raw_sign(key, header_for(key, **{member: value}), CLAIMS), keys_of(key))


def test_embedded_jwk_of_the_attacker_is_not_used(key: PrivateKey) -> None:
    attacker = PrivateKey.generate(key.alg)
    token = raw_sign(attacker, {**header_for(attacker), "jwk": attacker.public.to_jwk()}, CLAIMS)
    with pytest.raises(JWSError):
        jws.verify(token, keys_of(key))


# ---------------------------------------------------------------------------------------------
# Refusals: typ
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jws", "application/jwt", "", None, 1, ["at+jwt"]])
def test_wrong_or_missing_typ_is_refused(key: PrivateKey, typ: Any) -> None:
    header = {"alg": key.alg, "kid": key.kid}
    if typ is not None:
        header["typ"] = typ
    with pytest.raises(UnsupportedHeader):
        jws.verify(raw_sign(key, header, CLAIMS), keys_of(key))


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT", "Application/At+Jwt"])
def test_rfc9068_typ_forms_are_accepted(key: PrivateKey, typ: str) -> None:
    assert jws.verify(raw_sign(key, header_for(key, typ=typ), CLAIMS), keys_of(key)).claims == CLAIMS


def test_typ_none_parameter_skips_the_typ_check_only(key: PrivateKey) -> None:
    token = raw_sign(key, {"alg": key.alg, "kid": key.kid, "typ": "JWT"}, CLAIMS)
    assert jws.verify(token, keys_of(key), typ=None).claims == CLAIMS
    with pytest.raises(UnsupportedHeader):
        jws.verify(raw_sign(key, {"alg": key.alg, "kid": key.kid, "jku": "x"}, CLAIMS), keys_of(key), typ=None)


# ---------------------------------------------------------------------------------------------
# Refusals: encoding and structure
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("segment", [0, 1, 2])
@pytest.mark.parametrize("bad", ["+", "/", "=", " ", "%", "\u00e9", "\n"])
def test_non_base64url_characters_are_refused(key: PrivateKey, segment: int, bad: str) -> None:
    parts = key.sign(CLAIMS).split(".")
    parts[segment] = parts[segment][:4] + bad + parts[segment][4:]
    with pytest.raises(MalformedToken):
        jws.verify(".".join(parts), keys_of(key))


def test_standard_base64_alphabet_is_refused(key: PrivateKey) -> None:
    # Find a token whose encoding uses '-' or '_' (fresh keys: EdDSA signatures are deterministic),
    # and send it in the standard alphabet.
    for _ in range(200):
        signer = PrivateKey.generate(key.alg)
        token = signer.sign(CLAIMS)
        if "-" in token or "_" in token:
            break
    std = token.replace("-", "+").replace("_", "/")
    assert std != token
    jws.verify(token, keys_of(signer))
    with pytest.raises(MalformedToken):
        jws.verify(std, keys_of(signer))


@pytest.mark.parametrize("segment", [0, 1, 2])
@pytest.mark.parametrize("padding", ["=", "==", "==="])
def test_base64_padding_is_refused(key: PrivateKey, segment: int, padding: str) -> None:
    parts = key.sign(CLAIMS).split(".")
    parts[segment] += padding
    with pytest.raises(MalformedToken):
        jws.verify(".".join(parts), keys_of(key))


def test_impossible_base64_length_is_refused(key: PrivateKey) -> None:
    parts = key.sign(CLAIMS).split(".")
    while len(parts[2]) % 4 != 1:
        parts[2] += "A"
    with pytest.raises(MalformedToken):
        jws.verify(".".join(parts), keys_of(key))


@pytest.mark.parametrize("shape", ["one", "two", "four", "five", "empty", "dots"])
def test_wrong_number_of_segments_is_refused(key: PrivateKey, shape: str) -> None:
    h, p, s = key.sign(CLAIMS).split(".")
    token = {"one": h, "two": f"{h}.{p}", "four": f"{h}.{p}.{s}.{s}", "five": f"{h}.{p}.{s}.{s}.{s}",
             "empty": "", "dots": ".."}[shape]
    with pytest.raises(MalformedToken):
        jws.verify(token, keys_of(key))


def test_oversize_token_is_refused_before_parsing(key: PrivateKey) -> None:
    big = key.sign({**CLAIMS, "pad": "x" * MAX_TOKEN_LENGTH})
    assert len(big) > MAX_TOKEN_LENGTH
    with pytest.raises(MalformedToken):
        jws.verify(big, keys_of(key))
    # Just under the limit it is fine (the limit is the only reason for the refusal above).
    fits = key.sign({**CLAIMS, "pad": "x" * (MAX_TOKEN_LENGTH * 3 // 4 - 400)})
    assert len(fits) <= MAX_TOKEN_LENGTH
    jws.verify(fits, keys_of(key))


@pytest.mark.parametrize("token", [b"a.b.c", None, 42, ["a", "b", "c"]])
def test_non_string_token_is_refused(key: PrivateKey, token: Any) -> None:
    with pytest.raises(MalformedToken):
        jws.verify(token, keys_of(key))


@pytest.mark.parametrize("header", [b"[]", b'"at+jwt"', b"1", b"null", b"true", b"not json", b"\xff\xfe",
                                    b"[" * 1500 + b"]" * 1500, b'{"alg":"ES256"'])
def test_header_that_is_not_a_json_object_is_refused(key: PrivateKey, header: bytes) -> None:
    with pytest.raises(MalformedToken):
        jws.verify(raw_sign(key, header, CLAIMS), keys_of(key))


@pytest.mark.parametrize("payload", [b"[]", b'"claims"', b"1", b"null", b"not json", b"\xff\xfe",
                                     b"[" * 1500 + b"]" * 1500])
def test_signed_payload_that_is_not_a_json_object_is_refused(key: PrivateKey, payload: bytes) -> None:
    with pytest.raises(MalformedToken):
        jws.verify(raw_sign(key, header_for(key), payload), keys_of(key))


def test_truncated_signature_is_refused(key: PrivateKey) -> None:
    h, p, s = key.sign(CLAIMS).split(".")
    raw = b64url_decode(s)
    for cut in (1, 2, 32, 63, 64):
        with pytest.raises(JWSError):
            jws.verify(f"{h}.{p}.{b64url_encode(raw[:-cut])}", keys_of(key))
    longer = b64url_encode(raw + bytes(1))
    with pytest.raises(JWSError):
        jws.verify(f"{h}.{p}.{longer}", keys_of(key))


def test_any_altered_signature_byte_is_refused(key: PrivateKey) -> None:
    h, p, s = key.sign(CLAIMS).split(".")
    raw = b64url_decode(s)
    for i in range(len(raw)):
        altered = bytearray(raw)
        altered[i] ^= 0x01
        with pytest.raises(BadSignature):
            jws.verify(f"{h}.{p}.{b64url_encode(bytes(altered))}", keys_of(key))


B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_any_altered_character_of_the_signature_is_refused(key: PrivateKey) -> None:
    """No second string for the same token: including the unused low bits of the last character
    (RFC 4648 §3.5 canonical encoding), which a lenient decoder silently drops."""
    h, p, s = key.sign(CLAIMS).split(".")
    assert len(s) % 4 == 2  # 64 bytes -> 86 chars: the last character carries 4 unused bits
    for i, ch in enumerate(s):
        for flip in (1, 2, 4, 8, 16, 32):
            altered = s[:i] + B64URL[B64URL.index(ch) ^ flip] + s[i + 1:]
            with pytest.raises(JWSError):
                jws.verify(f"{h}.{p}.{altered}", keys_of(key))


@pytest.mark.parametrize("text,ok", [("AA", True), ("AB", False), ("AP", False), ("AQ", True), ("AAA", True),
                                     ("AAB", False), ("AAE", True), ("AAAA", True), ("", True)])
def test_b64url_decode_refuses_non_canonical_trailing_bits(text: str, ok: bool) -> None:
    if ok:
        assert b64url_encode(b64url_decode(text)) == text
    else:
        with pytest.raises(MalformedToken):
            b64url_decode(text)


def test_altered_payload_or_header_is_refused(key: PrivateKey) -> None:
    h, p, s = key.sign(CLAIMS).split(".")
    forged_p = b64url_encode(json.dumps({**CLAIMS, "scope": "tools/call:**"}).encode())
    with pytest.raises(BadSignature):
        jws.verify(f"{h}.{forged_p}.{s}", keys_of(key))
    forged_h = b64url_encode(json.dumps({"alg": key.alg, "kid": key.kid, "typ": "application/at+jwt"}).encode())
    with pytest.raises(BadSignature):
        jws.verify(f"{forged_h}.{p}.{s}", keys_of(key))


def test_es256_der_encoded_signature_is_refused() -> None:
    key = PrivateKey.generate("ES256")
    h = b64url_encode(json.dumps(header_for(key)).encode())
    p = b64url_encode(json.dumps(CLAIMS).encode())
    der = key.key.sign(f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA256()))  # valid ECDSA, wrong JWS encoding
    with pytest.raises(BadSignature):
        jws.verify(f"{h}.{p}.{b64url_encode(der)}", keys_of(key))


def test_es256_zero_signature_is_refused() -> None:
    key = PrivateKey.generate("ES256")
    h, p, _ = key.sign(CLAIMS).split(".")
    with pytest.raises(BadSignature):
        jws.verify(f"{h}.{p}.{b64url_encode(bytes(64))}", keys_of(key))


# ---------------------------------------------------------------------------------------------
# JWK import
# ---------------------------------------------------------------------------------------------


def test_from_jwk_round_trips_our_public_jwk(key: PrivateKey) -> None:
    public = PublicKey.from_jwk(key.public.to_jwk())
    assert public.kid == key.kid and public.alg == key.alg
    assert jws.verify(key.sign(CLAIMS), {public.kid: public}).claims == CLAIMS


@pytest.mark.parametrize("change", ["private", "no_alg", "alg_kty_mismatch", "other_curve", "short_x", "long_kid",
                                    "no_kid", "not_mapping", "bad_b64", "hs256_oct"])
def test_from_jwk_refuses_unsuitable_keys(change: str) -> None:
    es = PrivateKey.generate("ES256")
    jwk: Any = es.public.to_jwk()
    if change == "private":
        jwk["d"] = b64url_encode(es.key.private_numbers().private_value.to_bytes(32, "big"))
    elif change == "no_alg":
        del jwk["alg"]
    elif change == "alg_kty_mismatch":
        jwk["alg"] = "EdDSA"
    elif change == "other_curve":
        jwk["crv"] = "P-384"
    elif change == "short_x":
        jwk["x"] = jwk["x"][:-4]
    elif change == "long_kid":
        jwk["kid"] = "k" * 129
    elif change == "no_kid":
        del jwk["kid"]
    elif change == "not_mapping":
        jwk = [jwk]
    elif change == "bad_b64":
        jwk["x"] = jwk["x"][:-1] + "+"
    elif change == "hs256_oct":
        jwk = {"kty": "oct", "k": b64url_encode(b"secret"), "alg": "HS256", "kid": "h"}
    with pytest.raises(JWSError):
        PublicKey.from_jwk(jwk)


def test_from_jwk_refuses_a_point_not_on_the_curve() -> None:
    jwk = PrivateKey.generate("ES256").public.to_jwk()
    y = bytearray(b64url_decode(jwk["y"]))
    y[-1] ^= 1
    with pytest.raises(JWSError):
        PublicKey.from_jwk({**jwk, "y": b64url_encode(bytes(y))})


def test_module_docstring_cites_the_repository_benchmark_it_exists_for() -> None:
    """The reason for a hand-written JWS layer is a measurement in this repository: the figures
    the docstring quotes are those of bench/results/sdk_verify.md, and nothing outside the
    repository is cited."""
    import re
    from pathlib import Path

    import sdk.jws

    doc = sdk.jws.__doc__ or ""
    assert "hazardous low-level layer" in doc.lower() and "sdk.access_token" in doc
    assert "shared/notes" not in doc and "../" not in doc
    results = (Path(__file__).resolve().parents[2] / "bench" / "results" / "sdk_verify.md").read_text()
    assert "bench/results/sdk_verify.md" in doc
    for section in results.split("## ")[1:]:
        alg = section.split()[0]
        ratios = dict(re.findall(r"^\| (sdk-core|sdk-cold|pyjwt|joserfc) \|.*\| ([0-9.]+) \|$", section, re.M))
        row = next(line for line in doc.splitlines() if re.match(rf"{alg} +[0-9]", line))
        assert row.split()[1:] == [f"{ratios[k]}x" for k in ("sdk-core", "sdk-cold", "pyjwt", "joserfc")], alg
