"""Client authentication over HTTP: secrets (RFC 6749 §2.3.1) and private_key_jwt (RFC 7523 §2.2, §3).

- Secrets: IdP-generated with >= 256 bits of entropy, stored only as a hash, compared in constant
  time; Basic credentials are form-urlencoded before base64 and decoded accordingly.
- A client uses only the method it registered.
- private_key_jwt: client keys made with joserfc, assertions signed with joserfc; every attack
  is refused with invalid_client and writes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from typing import Any

import pytest
import sqlalchemy as sa
from idp_testing import ISSUER
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey
from test_token_endpoint import Env, assert_oauth_error, basic, env, jwks_keyset  # noqa: F401 - env is a fixture

from idp.clients import generate_secret
from sdk.jws import b64url_encode

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SECRET_RE = re.compile(r"cbsts_([A-Za-z0-9_-]{43})")


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------


def _secret_bytes(secret: str) -> bytes:
    m = SECRET_RE.fullmatch(secret)
    assert m, secret
    raw = base64.urlsafe_b64decode(m.group(1) + "=")
    assert len(raw) == 32
    return raw


def test_secret_is_idp_generated_with_at_least_256_bits_and_unique(env: Env) -> None:
    issued = [env.register()[1] for _ in range(60)]
    assert all(isinstance(s, str) for s in issued)
    many = issued + [generate_secret() for _ in range(2000)]
    assert len(set(many)) == len(many)
    raws = [_secret_bytes(s) for s in many]  # prefix + 43 base64url chars = 32 random bytes = 256 bits
    # A broken generator (constant bytes, a counter, a small alphabet) would skew the bits.
    ones = sum(bin(int.from_bytes(r, "big")).count("1") for r in raws)
    total = 256 * len(raws)
    assert abs(ones / total - 0.5) < 0.005
    assert len({r[:8] for r in raws}) == len(raws)  # no shared prefix structure


def _all_rows_text(env: Env) -> str:
    inspector = sa.inspect(env.provider.engine)
    out = []
    with env.provider.engine.connect() as conn:
        for table in inspector.get_table_names():
            out.extend(repr(tuple(r)) for r in conn.execute(sa.text(f'SELECT * FROM "{table}"')))
    return "\n".join(out)


def test_secret_is_stored_only_as_a_hash(env: Env) -> None:
    client, secret = env.register()
    assert secret
    with env.provider.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM clients WHERE client_id = :c"), {"c": client.client_id}).one()._mapping
    assert row["secret_hash"] and row["secret_hash"] != secret
    assert secret not in row["secret_hash"] and _secret_bytes(secret).hex() not in row["secret_hash"]
    assert all(secret not in str(v) for v in row.values())
    # Nowhere in any table (audit data included) ...
    everything = _all_rows_text(env)
    assert client.client_id in everything  # guard: the scan does see this client's rows
    assert secret not in everything and secret[len("cbsts_"):] not in everything
    # ... nor in the SQLite file itself (pages, WAL), the strongest form of "not stored".
    url = env.settings.database_url
    if url.startswith("sqlite:///"):
        from pathlib import Path

        path = Path(url[len("sqlite:///"):])
        for p in (path, path.with_name(path.name + "-wal")):
            if p.exists():
                assert secret[len("cbsts_"):].encode() not in p.read_bytes()
    # And the client record in memory does not carry it either.
    assert secret not in repr(env.provider.clients.get(client.client_id))


def test_secret_comparison_uses_hmac_compare_digest(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    client, secret = env.register()
    with env.provider.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT secret_hash FROM clients WHERE client_id = :c"),
                              {"c": client.client_id}).scalar_one()
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    ok = env.http.post("/token", data={"grant_type": "client_credentials"}, headers={"Authorization": basic(client.client_id, secret)})
    assert ok.status_code == 200, ok.text
    assert any(stored in (a, b) for a, b in calls), "the correct secret was not checked with hmac.compare_digest"
    calls.clear()
    bad = env.http.post("/token", data={"grant_type": "client_credentials"},
                        headers={"Authorization": basic(client.client_id, secret[:-1] + ("A" if secret[-1] != "A" else "B"))})
    assert_oauth_error(bad, 401, "invalid_client")
    assert any(stored in (a, b) for a, b in calls), "a wrong secret was not checked with hmac.compare_digest"


def test_rfc6749_2_3_1_basic_credentials_are_form_urlencoded_before_base64(env: Env) -> None:
    client, secret = env.register()
    assert secret
    # Encode every character (%XX), as a client that escapes everything may: must decode to the same.
    enc_id = "".join(f"%{b:02X}" for b in client.client_id.encode())
    enc_secret = "".join(f"%{b:02X}" for b in secret.encode())
    header = "Basic " + base64.b64encode(f"{enc_id}:{enc_secret}".encode()).decode()
    resp = env.http.post("/token", data={"grant_type": "client_credentials"}, headers={"Authorization": header})
    assert resp.status_code == 200, resp.text
    # The decoding is the form one: a wrong escaped character still fails.
    bad = "Basic " + base64.b64encode(f"{enc_id}:{enc_secret[:-3]}%21".encode()).decode()
    assert_oauth_error(env.http.post("/token", data={"grant_type": "client_credentials"}, headers={"Authorization": bad}),
                       401, "invalid_client")


def test_rfc6749_2_3_1_client_secret_post_authenticates(env: Env) -> None:
    client, secret = env.register(auth_method="client_secret_post")
    resp = env.http.post("/token", data={"grant_type": "client_credentials", "client_id": client.client_id, "client_secret": secret})
    assert resp.status_code == 200, resp.text


def test_client_registered_for_basic_using_post_is_invalid_client(env: Env) -> None:
    client, secret = env.register(auth_method="client_secret_basic")
    before = env.counts()
    resp = env.http.post("/token", data={"grant_type": "client_credentials", "client_id": client.client_id, "client_secret": secret})
    assert_oauth_error(resp, 401, "invalid_client")
    assert env.counts() == before


def test_client_registered_for_post_using_basic_is_invalid_client_401_with_challenge(env: Env) -> None:
    client, secret = env.register(auth_method="client_secret_post")
    before = env.counts()
    resp = env.http.post("/token", data={"grant_type": "client_credentials"}, headers={"Authorization": basic(client.client_id, secret)})
    assert_oauth_error(resp, 401, "invalid_client")
    assert resp.headers["www-authenticate"].lower().startswith("basic")
    assert env.counts() == before


def test_private_key_jwt_client_cannot_use_a_secret(env: Env) -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"})
    client, secret = env.register(auth_method="private_key_jwt", jwks={"keys": [key.as_dict(private=False)]})
    assert secret is None
    before = env.counts()
    for guess in ("", "null", "None"):
        resp = env.http.post("/token", data={"grant_type": "client_credentials"}, headers={"Authorization": basic(client.client_id, guess)})
        assert_oauth_error(resp, 401, "invalid_client")
    assert env.counts() == before


# ---------------------------------------------------------------------------------------------
# private_key_jwt (RFC 7523)
# ---------------------------------------------------------------------------------------------


class KeyClient:
    def __init__(self, env: Env, key: Any, alg: str) -> None:
        self.env, self.key, self.alg = env, key, alg
        self.record, _ = env.register(auth_method="private_key_jwt", jwks={"keys": [key.as_dict(private=False)]})
        self.client_id = self.record.client_id

    def claims(self, **override: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": ISSUER + "/token",
                  "iat": now, "exp": now + 120, "jti": secrets.token_urlsafe(16)}
        claims.update(override)
        return {k: v for k, v in claims.items() if v is not None}

    def assertion(self, key: Any = None, header: dict[str, Any] | None = None, **override: Any) -> str:
        key = key or self.key
        return jwt.encode({"alg": self.alg, "kid": key.kid, **(header or {})}, self.claims(**override), key, algorithms=[self.alg])

    def post(self, assertion: str, path: str = "/token", **form: str) -> Any:
        data = {"client_assertion_type": JWT_BEARER, "client_assertion": assertion, **form}
        if path == "/token":
            data.setdefault("grant_type", "client_credentials")
        return self.env.http.post(path, data=data)


@pytest.fixture
def es_client(env: Env) -> KeyClient:
    return KeyClient(env, ECKey.generate_key("P-256", parameters={"kid": "client-es-1"}), "ES256")


def _b64json(obj: Any) -> str:
    return b64url_encode(json.dumps(obj).encode())


def test_rfc7523_valid_es256_assertion_is_accepted(es_client: KeyClient) -> None:
    resp = es_client.post(es_client.assertion())
    assert resp.status_code == 200, resp.text
    claims = jwt.decode(resp.json()["access_token"], jwks_keyset(es_client.env.http)[0],
                        algorithms=["ES256"]).claims
    assert claims["client_id"] == claims["sub"] == es_client.client_id


@pytest.mark.parametrize("aud", [ISSUER, ISSUER + "/token", [ISSUER + "/token", "https://elsewhere.example"]])
def test_rfc7523_3_aud_naming_this_server_or_its_token_endpoint_is_accepted(es_client: KeyClient, aud: Any) -> None:
    resp = es_client.post(es_client.assertion(aud=aud))
    assert resp.status_code == 200, resp.text


def test_rfc7523_rs256_client_key_is_accepted(env: Env) -> None:
    client = KeyClient(env, RSAKey.generate_key(2048, parameters={"kid": "client-rsa-1"}), "RS256")
    resp = client.post(client.assertion())
    assert resp.status_code == 200, resp.text


@pytest.mark.filterwarnings("ignore:Key size should be")  # joserfc agrees the key is weak
def test_rfc7518_3_3_rsa_client_key_under_2048_bits_is_refused_at_registration(env: Env) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from idp.clients import ClientError

    weak = RSAKey.import_key(rsa.generate_private_key(65537, 1024), parameters={"kid": "weak"})
    before = env.counts()
    with pytest.raises(ClientError, match="2048"):
        env.register(auth_method="private_key_jwt", jwks={"keys": [weak.as_dict(private=False)]})
    with pytest.raises(ClientError, match="2048"):  # also when hidden behind a strong key
        strong = RSAKey.generate_key(2048, parameters={"kid": "strong"})
        env.register(auth_method="private_key_jwt", jwks={"keys": [strong.as_dict(private=False), weak.as_dict(private=False)]})
    assert env.counts() == before


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
def test_rfc7523_eddsa_client_key_is_accepted(env: Env) -> None:
    client = KeyClient(env, OKPKey.generate_key("Ed25519", parameters={"kid": "client-ed-1"}), "EdDSA")
    resp = client.post(client.assertion())
    assert resp.status_code == 200, resp.text


def test_rfc7523_assertion_authenticates_at_introspection_too(es_client: KeyClient) -> None:
    resp = es_client.post(es_client.assertion(aud=ISSUER), path="/introspect", token="not-a-token")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"active": False}


def _refused(client: KeyClient, assertion: str, **form: str) -> dict[str, Any]:
    before = client.env.counts()
    resp = client.post(assertion, **form)
    body = assert_oauth_error(resp, 401, "invalid_client")
    assert client.env.counts() == before, "a refused assertion wrote to the database"
    return body


def test_rfc7523_3_replayed_jti_is_invalid_client(es_client: KeyClient) -> None:
    assertion = es_client.assertion()
    assert es_client.post(assertion).status_code == 200
    _refused(es_client, assertion)


def test_rfc7523_3_same_jti_in_a_new_assertion_is_invalid_client(es_client: KeyClient) -> None:
    jti = secrets.token_urlsafe(16)
    assert es_client.post(es_client.assertion(jti=jti)).status_code == 200
    _refused(es_client, es_client.assertion(jti=jti, iat=int(time.time()) + 1))


def test_rfc7523_3_jti_with_a_lone_surrogate_is_accepted_once_not_5xx(es_client: KeyClient) -> None:
    """JSON may carry "\\ud800"; the replay cache must still key it (once), not fail with a 5xx."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    jti = "j-\ud800-" + secrets.token_hex(4)
    # joserfc cannot encode a lone surrogate; sign by hand (json.dumps escapes it as \\ud800).
    signing_input = f"{_b64json({'alg': 'ES256', 'kid': es_client.key.kid})}.{_b64json(es_client.claims(jti=jti))}"
    r, s = decode_dss_signature(es_client.key.private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    assertion = signing_input + "." + b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    assert es_client.post(assertion).status_code == 200
    _refused(es_client, assertion)


def test_rfc7523_3_wrong_aud_is_invalid_client(es_client: KeyClient) -> None:
    _refused(es_client, es_client.assertion(aud="https://evil.example/token"))


def test_rfc7523_3_missing_aud_is_invalid_client(es_client: KeyClient) -> None:
    _refused(es_client, es_client.assertion(aud=None))


def test_rfc7523_3_expired_assertion_is_invalid_client(es_client: KeyClient) -> None:
    now = int(time.time())
    _refused(es_client, es_client.assertion(iat=now - 600, exp=now - 300))


def test_rfc7523_3_missing_exp_is_invalid_client(es_client: KeyClient) -> None:
    _refused(es_client, es_client.assertion(exp=None))


def test_rfc7523_3_exp_too_far_ahead_is_invalid_client(es_client: KeyClient) -> None:
    _refused(es_client, es_client.assertion(exp=int(time.time()) + 7200))


def test_rfc7523_3_nbf_in_the_future_is_invalid_client(es_client: KeyClient) -> None:
    _refused(es_client, es_client.assertion(nbf=int(time.time()) + 600))


def test_rfc7523_3_missing_jti_is_invalid_client(es_client: KeyClient) -> None:
    _refused(es_client, es_client.assertion(jti=None))


def test_rfc7523_3_iss_different_from_sub_is_invalid_client(es_client: KeyClient) -> None:
    other = KeyClient(es_client.env, es_client.key, "ES256")  # same key, another client: sub names it
    _refused(es_client, es_client.assertion(sub=other.client_id))


def test_rfc7523_3_client_id_param_different_from_iss_is_invalid_client(es_client: KeyClient) -> None:
    other = KeyClient(es_client.env, ECKey.generate_key("P-256", parameters={"kid": "o"}), "ES256")
    _refused(es_client, es_client.assertion(), client_id=other.client_id)


def test_rfc7523_3_signed_by_another_key_with_same_kid_is_invalid_client(es_client: KeyClient) -> None:
    intruder = ECKey.generate_key("P-256", parameters={"kid": es_client.key.kid})
    _refused(es_client, es_client.assertion(key=intruder))


def test_rfc7523_3_signed_by_another_key_with_other_kid_is_invalid_client(es_client: KeyClient) -> None:
    intruder = ECKey.generate_key("P-256", parameters={"kid": "intruder"})
    _refused(es_client, es_client.assertion(key=intruder))


def test_rfc7523_alg_none_assertion_is_invalid_client(es_client: KeyClient) -> None:
    for header in ({"alg": "none"}, {"alg": "none", "kid": es_client.key.kid}, {"alg": "None", "typ": "JWT"}):
        unsigned = f"{_b64json(header)}.{_b64json(es_client.claims())}."
        _refused(es_client, unsigned)


def _hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{_b64json(header)}.{_b64json(claims)}"
    return signing_input + "." + b64url_encode(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


def test_rfc7523_hs256_signed_with_the_public_key_is_invalid_client(es_client: KeyClient) -> None:
    """The classic key-confusion forgery: HMAC keyed with the client's public key (PEM, or JWK JSON)."""
    pem = es_client.key.as_pem(private=False)
    for secret in (pem, pem.strip(), json.dumps(es_client.key.as_dict(private=False)).encode()):
        _refused(es_client, _hs256({"alg": "HS256", "kid": es_client.key.kid}, es_client.claims(), secret))


def test_rfc7523_hs256_with_rsa_public_key_is_invalid_client(env: Env) -> None:
    client = KeyClient(env, RSAKey.generate_key(2048, parameters={"kid": "rsa-hs"}), "RS256")
    _refused(client, _hs256({"alg": "HS256", "kid": "rsa-hs"}, client.claims(), client.key.as_pem(private=False)))


def test_rfc7523_tampered_payload_is_invalid_client(es_client: KeyClient) -> None:
    h, _, s = es_client.assertion().split(".")
    other = KeyClient(es_client.env, ECKey.generate_key("P-256", parameters={"kid": "t"}), "ES256")
    # Same signature, payload changed to name another client, or to extend exp.
    _refused(es_client, f"{h}.{_b64json(es_client.claims(iss=other.client_id, sub=other.client_id))}.{s}")
    _refused(es_client, f"{h}.{_b64json(es_client.claims(exp=int(time.time()) + 3000))}.{s}")


def test_rfc7523_truncated_signature_is_invalid_client(es_client: KeyClient) -> None:
    a = es_client.assertion()
    _refused(es_client, a[:-4])


def test_rfc7523_wrong_assertion_type_is_invalid_client(es_client: KeyClient) -> None:
    _refused(es_client, es_client.assertion(), client_assertion_type="urn:ietf:params:oauth:client-assertion-type:saml2-bearer")


def test_rfc7523_assertion_for_a_secret_client_is_invalid_client(env: Env) -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "s"})
    secret_client, _ = env.register()
    now = int(time.time())
    claims = {"iss": secret_client.client_id, "sub": secret_client.client_id, "aud": ISSUER, "iat": now, "exp": now + 60,
              "jti": secrets.token_urlsafe(8)}
    before = env.counts()
    resp = env.http.post("/token", data={"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
                                         "client_assertion": jwt.encode({"alg": "ES256", "kid": "s"}, claims, key)})
    assert_oauth_error(resp, 401, "invalid_client")
    assert env.counts() == before


def test_rfc7523_disabled_key_client_is_invalid_client(es_client: KeyClient) -> None:
    es_client.env.provider.clients.set_enabled(es_client.client_id, False)
    _refused(es_client, es_client.assertion())


@pytest.mark.parametrize("assertion", ["", "a.b.c", "a.b", "...", "eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.AAAA",
                                       _b64json({"alg": "ES256"}) + "." + _b64json(["iss"]) + ".AAAA",
                                       _b64json({"alg": "ES256"}) + "." + _b64json({"iss": ["x"]}) + ".AAAA",
                                       _b64json({"alg": "ES256"}) + "." + _b64json({"iss": "x" * 100}) + ".AAAA"])
def test_rfc7523_malformed_assertion_is_invalid_client_never_5xx(env: Env, assertion: str) -> None:
    before = env.counts()
    resp = env.http.post("/token", data={"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
                                         "client_assertion": assertion})
    assert_oauth_error(resp, 401, "invalid_client")
    assert env.counts() == before


def test_rfc7523_3_aud_merely_prefixed_by_our_issuer_is_invalid_client(es_client: KeyClient) -> None:
    """An assertion for *another* server (aud = its token endpoint with our issuer as a prefix) is refused."""
    _refused(es_client, es_client.assertion(aud=ISSUER + ".evil.example/token"))
    _refused(es_client, es_client.assertion(aud=ISSUER + "/token/"))
