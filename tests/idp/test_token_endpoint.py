"""The token endpoint over HTTP (RFC 6749 §4.4, §5.1, §5.2; RFC 8707; RFC 9068).

Tokens are verified with an independent JOSE library (joserfc) from the JWKS the app publishes,
and every refusal is checked for its RFC 6749 §5.2 error object, its status, ``no-store``, and
for writing nothing: the row counts of the IdP's tables are compared before and after.

Most tests share one provider per database (module scope, both SQLite and PostgreSQL) because a
fresh PostgreSQL database per test costs about a second; each test registers its own clients and
compares row counts around its own requests. The helpers here are imported by the other
``test_*`` modules of the HTTP endpoints.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from idp_testing import AUDIENCE, ISSUER, _pg_admin_url, random_kek
from joserfc import jwt
from joserfc.jwk import KeySet
from starlette.testclient import TestClient

from idp.app import create_app
from idp.config import Settings
from idp.provider import Provider

TABLES = ("audit_events", "revoked_tokens", "clients", "assertion_jtis", "signing_keys")
FORM = "application/x-www-form-urlencoded"
OTHER_AUDIENCE = "https://other.example.test/mcp"


# ---------------------------------------------------------------------------------------------
# Shared environment (imported by the other endpoint test modules)
# ---------------------------------------------------------------------------------------------


@dataclass
class Env:
    provider: Provider
    http: TestClient
    settings: Settings

    def register(self, *, capabilities: str = "tools/call:* resources/read:file:///docs/**",
                 audiences: tuple[str, ...] = (AUDIENCE,), auth_method: str = "client_secret_basic",
                 jwks: dict[str, Any] | None = None, kind: str | None = None) -> tuple[Any, str | None]:
        name = "c-" + secrets.token_hex(6)
        extra = {"kind": kind} if kind else {}
        return self.provider.clients.add(name, capabilities=capabilities, audiences=list(audiences),
                                         auth_method=auth_method, jwks=jwks, **extra)

    def counts(self) -> dict[str, int]:
        """Rows per table. A refused authentication's own audit record (``client.auth_failed``) is
        not counted: "writes nothing" means nothing else (tests/idp/test_auth_throttle.py checks it)."""
        with self.provider.engine.connect() as conn:
            counts = {t: conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in TABLES}
            counts["audit_events"] -= conn.execute(
                sa.text("SELECT COUNT(*) FROM audit_events WHERE event = 'client.auth_failed'")).scalar_one()
        return counts

    def audit(self, event: str, **where: str) -> list[dict[str, Any]]:
        query = "SELECT event, actor, client_id, jti, data FROM audit_events WHERE event = :event"
        for column in where:
            query += f" AND {column} = :{column}"
        with self.provider.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(query), {"event": event, **where})]

    def token(self, client: Any, secret: str | None, **form: str) -> str:
        resp = self.http.post("/token", data={"grant_type": "client_credentials", **form}, auth=(client.client_id, secret))
        assert resp.status_code == 200, resp.text
        return resp.json()["access_token"]


def make_env(settings: Settings) -> Iterator[Env]:
    provider = Provider.open(settings)
    try:
        with TestClient(create_app(provider=provider, maintenance=False), base_url=ISSUER) as http:
            yield Env(provider, http, settings)
    finally:
        provider.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One provider + app per database for the whole module (both SQLite and PostgreSQL)."""
    tmp: Path = tmp_path_factory.mktemp("env")
    if request.param == "sqlite":
        url, drop = f"sqlite:///{tmp / 'idp.db'}", None
    else:
        server = request.getfixturevalue("pg_server")
        name = "cbst_t_" + secrets.token_hex(6)
        admin = sa.create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url, drop = sa.engine.make_url(server).set(database=name).render_as_string(hide_password=False), name
    # One test client address for the whole module, which refuses many authentications on purpose:
    # failure limits out of the way here (tests/idp/test_auth_throttle.py tests them).
    settings = Settings(issuer=ISSUER, database_url=url, keys_dir=tmp / "keys", keystore_kek=random_kek(),
                        auth_fail_client=0, auth_fail_address=0)
    try:
        yield from make_env(settings)
    finally:
        if drop:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{drop}" WITH (FORCE)')
            admin.dispose()


def basic(client_id: str, secret: str | None) -> str:
    """An RFC 6749 §2.3.1 Basic header: both parts form-urlencoded, then base64."""
    raw = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(secret or '')}"
    return "Basic " + base64.b64encode(raw.encode()).decode()


def assert_oauth_error(resp: Any, status: int, error: str) -> dict[str, Any]:
    """RFC 6749 §5.2: JSON object with ``error`` (and a string ``error_description``), no-store."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["error"] == error, body
    assert isinstance(body.get("error_description"), str) and body["error_description"]
    assert_rfc6749_error_charset(body)
    assert set(body) <= {"error", "error_description", "error_uri"}
    assert resp.headers.get("cache-control") == "no-store"
    return body


def assert_rfc6749_error_charset(body: dict[str, Any]) -> None:
    """RFC 6749 §5.2: error and error_description use only %x20-21 / %x23-5B / %x5D-7E (no '"', '\\', non-ASCII)."""
    for member in ("error", "error_description"):
        bad = sorted({c for c in body[member] if not (c in "\x20\x21" or "\x23" <= c <= "\x5b" or "\x5d" <= c <= "\x7e")})
        assert not bad, f"{member} contains characters RFC 6749 §5.2 forbids: {bad!r} in {body[member]!r}"


def jwks_keyset(http: TestClient) -> tuple[KeySet, dict[str, Any]]:
    resp = http.get("/jwks")
    assert resp.status_code == 200
    doc = resp.json()
    return KeySet.import_key_set(doc), doc


# ---------------------------------------------------------------------------------------------
# Issuance: RFC 9068 tokens that an independent library verifies
# ---------------------------------------------------------------------------------------------


def _check_rfc9068_token(env_http: TestClient, token: str, client: Any, alg: str, scope: str, ttl: int) -> dict[str, Any]:
    keyset, doc = jwks_keyset(env_http)
    decoded = jwt.decode(token, keyset, algorithms=[alg])  # joserfc: signature from the published JWKS
    header, claims = decoded.header, decoded.claims
    assert header["typ"] == "at+jwt"
    assert header["alg"] == alg
    assert header["kid"] in {k["kid"] for k in doc["keys"]}
    assert {"iss", "sub", "aud", "client_id", "iat", "exp", "jti", "scope"} <= set(claims)
    assert claims["iss"] == ISSUER
    assert claims["sub"] == claims["client_id"] == client.client_id
    assert claims["aud"] == AUDIENCE
    assert claims["scope"] == scope
    now = int(time.time())
    assert isinstance(claims["iat"], int) and abs(claims["iat"] - now) <= 5
    assert claims["exp"] == claims["iat"] + ttl
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    # joserfc's own claims validation agrees (iss, aud, exp, iat).
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": ISSUER}, aud={"essential": True, "value": AUDIENCE},
                          exp={"essential": True}, jti={"essential": True}).validate(claims)
    return claims


def test_rfc9068_es256_token_verifies_with_joserfc_from_published_jwks(env: Env) -> None:
    client, secret = env.register()
    resp = env.http.post("/token", data={"grant_type": "client_credentials"}, auth=(client.client_id, secret))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    # RFC 6749 §5.1: token_type, expires_in, no-store.
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == env.settings.access_token_ttl
    assert resp.headers["cache-control"] == "no-store"
    assert resp.headers["pragma"] == "no-cache"
    scope = "tools/call:* resources/read:file:///docs/**"
    assert body["scope"] == scope
    _check_rfc9068_token(env.http, body["access_token"], client, "ES256", scope, env.settings.access_token_ttl)


def test_rfc9068_token_signature_is_really_checked_by_the_independent_verifier(env: Env) -> None:
    """Guard for the test above: the same joserfc call refuses a token altered after signing."""
    from joserfc.errors import BadSignatureError

    client, secret = env.register()
    token = env.token(client, secret)
    h, p, s = token.split(".")
    claims = jwt.decode(token, jwks_keyset(env.http)[0], algorithms=["ES256"]).claims
    forged = base64.urlsafe_b64encode(json.dumps({**claims, "scope": "tools/call:**"}).encode()).rstrip(b"=").decode()
    with pytest.raises(BadSignatureError):
        jwt.decode(f"{h}.{forged}.{s}", jwks_keyset(env.http)[0], algorithms=["ES256"])


@pytest.fixture
def eddsa_env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    """A provider configured with Settings(signing_alg="EdDSA"), on both databases."""
    yield from make_env(Settings(issuer=ISSUER, database_url=db_url, keys_dir=tmp_path / "keys",
                                 keystore_kek=random_kek(), signing_alg="EdDSA"))


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
def test_rfc9068_eddsa_configured_provider_token_verifies_with_joserfc(eddsa_env: Env) -> None:
    client, secret = eddsa_env.register(capabilities="tools/call:git-*")
    token = eddsa_env.token(client, secret)
    _, doc = jwks_keyset(eddsa_env.http)
    assert [k["kty"] for k in doc["keys"]] == ["OKP"] and doc["keys"][0]["crv"] == "Ed25519"
    claims = _check_rfc9068_token(eddsa_env.http, token, client, "EdDSA", "tools/call:git-*", eddsa_env.settings.access_token_ttl)
    # The IdP's own verification path (introspection) accepts its EdDSA tokens too.
    resp = eddsa_env.http.post("/introspect", data={"token": token}, headers={"Authorization": basic(client.client_id, secret)})
    assert resp.json()["active"] is True and resp.json()["jti"] == claims["jti"]


def test_rfc6749_3_3_requested_scope_subset_is_granted_exactly(env: Env) -> None:
    client, secret = env.register(capabilities="tools/call:git-* prompts/get:summarize")
    resp = env.http.post("/token", data={"grant_type": "client_credentials", "scope": "tools/call:git-log"},
                         auth=(client.client_id, secret))
    assert resp.status_code == 200, resp.text
    assert resp.json()["scope"] == "tools/call:git-log"
    claims = jwt.decode(resp.json()["access_token"], jwks_keyset(env.http)[0], algorithms=["ES256"]).claims
    assert claims["scope"] == "tools/call:git-log"


def test_rfc8707_resource_selects_the_audience_among_several(env: Env) -> None:
    client, secret = env.register(audiences=(AUDIENCE, OTHER_AUDIENCE))
    resp = env.http.post("/token", data={"grant_type": "client_credentials", "resource": OTHER_AUDIENCE},
                         auth=(client.client_id, secret))
    assert resp.status_code == 200, resp.text
    claims = jwt.decode(resp.json()["access_token"], jwks_keyset(env.http)[0], algorithms=["ES256"]).claims
    assert claims["aud"] == OTHER_AUDIENCE


def test_issuance_writes_one_token_issued_audit_record_and_unique_jti(env: Env) -> None:
    client, secret = env.register()
    before = env.counts()
    jtis = set()
    for _ in range(3):
        token = env.token(client, secret)
        jtis.add(jwt.decode(token, jwks_keyset(env.http)[0], algorithms=["ES256"]).claims["jti"])
    assert len(jtis) == 3
    after = env.counts()
    assert after["audit_events"] == before["audit_events"] + 3
    assert {k: v for k, v in after.items() if k != "audit_events"} == {k: v for k, v in before.items() if k != "audit_events"}
    for jti in jtis:
        [record] = env.audit("token.issued", jti=jti)
        assert record["client_id"] == client.client_id


# ---------------------------------------------------------------------------------------------
# Refusals: RFC 6749 §5.2 error, right status, no-store, never a 500, nothing written
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clients(env: Env) -> dict[str, Any]:
    """Clients the refusal table uses, registered once per database."""
    basic_client, basic_secret = env.register()
    git_client, git_secret = env.register(capabilities="tools/call:git-*")
    multi_client, multi_secret = env.register(audiences=(AUDIENCE, OTHER_AUDIENCE))
    post_client, post_secret = env.register(auth_method="client_secret_post")
    noaud_client, noaud_secret = env.register(audiences=())
    disabled, disabled_secret = env.register()
    env.provider.clients.set_enabled(disabled.client_id, False)
    return {
        "basic": (basic_client.client_id, basic_secret),
        "git": (git_client.client_id, git_secret),
        "multi": (multi_client.client_id, multi_secret),
        "post": (post_client.client_id, post_secret),
        "disabled": (disabled.client_id, disabled_secret),
        "noaud": (noaud_client.client_id, noaud_secret),
    }


def _b(who: str) -> dict[str, Any]:
    return {"basic_as": who}


# name -> (request spec, status, error, WWW-Authenticate: Basic expected)
REFUSALS: dict[str, tuple[dict[str, Any], int, str, bool]] = {
    "rfc6749_5_2_unknown_client_via_basic_is_invalid_client_401": (
        {"basic_raw": ("no-such-client", "cbsts_whatever"), "form": {"grant_type": "client_credentials"}}, 401, "invalid_client", True),
    "rfc6749_5_2_unknown_client_via_post_is_invalid_client_401": (
        {"form": {"grant_type": "client_credentials", "client_id": "no-such-client", "client_secret": "x" * 49}}, 401, "invalid_client", False),
    "rfc6749_5_2_wrong_secret_via_basic_is_invalid_client_401": (
        {"basic_wrong": "basic", "form": {"grant_type": "client_credentials"}}, 401, "invalid_client", True),
    "rfc6749_5_2_wrong_secret_via_post_is_invalid_client_401": (
        {"post_wrong": "post", "form": {"grant_type": "client_credentials"}}, 401, "invalid_client", False),
    "rfc6749_5_2_disabled_client_is_invalid_client_401": (
        {**_b("disabled"), "form": {"grant_type": "client_credentials"}}, 401, "invalid_client", True),
    "rfc6749_5_2_no_client_authentication_is_invalid_client_401": (
        {"form": {"grant_type": "client_credentials", "client_id": "whoever"}}, 401, "invalid_client", False),
    "rfc6749_5_2_empty_secret_is_invalid_client_401": (
        {"basic_raw": ("@basic", ""), "form": {"grant_type": "client_credentials"}}, 401, "invalid_client", True),
    "rfc6749_5_2_bearer_authorization_scheme_is_invalid_client_401": (
        {"headers": {"Authorization": "Bearer abc"}, "form": {"grant_type": "client_credentials"}}, 401, "invalid_client", True),
    "rfc6749_5_2_malformed_basic_base64_is_invalid_client_401": (
        {"headers": {"Authorization": "Basic !!!notbase64"}, "form": {"grant_type": "client_credentials"}}, 401, "invalid_client", True),
    "rfc6749_5_2_basic_without_colon_is_invalid_client_401": (
        {"headers": {"Authorization": "Basic " + base64.b64encode(b"justanid").decode()},
         "form": {"grant_type": "client_credentials"}}, 401, "invalid_client", True),
    "rfc6749_5_2_scope_beyond_capabilities_is_invalid_scope": (
        {**_b("git"), "form": {"grant_type": "client_credentials", "scope": "tools/call:*"}}, 400, "invalid_scope", False),
    "rfc6749_5_2_scope_of_another_method_is_invalid_scope": (
        {**_b("git"), "form": {"grant_type": "client_credentials", "scope": "prompts/get:summarize"}}, 400, "invalid_scope", False),
    "rfc6749_5_2_scope_partly_beyond_capabilities_is_invalid_scope": (
        {**_b("git"), "form": {"grant_type": "client_credentials", "scope": "tools/call:git-log tools/call:rm"}}, 400, "invalid_scope", False),
    "rfc6749_5_2_malformed_scope_is_invalid_scope": (
        {**_b("basic"), "form": {"grant_type": "client_credentials", "scope": "tools/call:***"}}, 400, "invalid_scope", False),
    "rfc6749_5_2_huge_scope_is_invalid_scope": (
        {**_b("basic"), "form": {"grant_type": "client_credentials", "scope": "tools/call:" + "a" * 12000}}, 400, "invalid_scope", False),
    "rfc6749_5_2_too_many_scope_tokens_is_invalid_scope": (
        {**_b("basic"), "form": {"grant_type": "client_credentials",
                                 "scope": " ".join(f"tools/call:t{i}" for i in range(300))}}, 400, "invalid_scope", False),
    "rfc8707_unknown_resource_is_invalid_target": (
        {**_b("basic"), "form": {"grant_type": "client_credentials", "resource": "https://evil.example/mcp"}}, 400, "invalid_target", False),
    "rfc8707_several_resources_are_invalid_target": (
        {**_b("multi"), "form": [("grant_type", "client_credentials"), ("resource", AUDIENCE), ("resource", OTHER_AUDIENCE)]},
        400, "invalid_target", False),
    "rfc8707_no_resource_with_several_audiences_is_invalid_target": (
        {**_b("multi"), "form": {"grant_type": "client_credentials"}}, 400, "invalid_target", False),
    "rfc8707_client_without_audience_is_invalid_target": (
        {**_b("noaud"), "form": {"grant_type": "client_credentials"}}, 400, "invalid_target", False),
    "rfc8707_client_without_audience_naming_a_resource_is_invalid_target": (
        {**_b("noaud"), "form": {"grant_type": "client_credentials", "resource": AUDIENCE}}, 400, "invalid_target", False),
    "rfc8707_resource_differing_by_trailing_slash_is_invalid_target": (
        {**_b("basic"), "form": {"grant_type": "client_credentials", "resource": AUDIENCE + "/"}}, 400, "invalid_target", False),
    "rfc8707_relative_resource_is_invalid_target": (
        {**_b("basic"), "form": {"grant_type": "client_credentials", "resource": "/mcp"}}, 400, "invalid_target", False),
    "rfc8707_resource_with_fragment_is_invalid_target": (
        {**_b("basic"), "form": {"grant_type": "client_credentials", "resource": AUDIENCE + "#frag"}}, 400, "invalid_target", False),
    "rfc6749_5_2_unsupported_grant_type_password": (
        {**_b("basic"), "form": {"grant_type": "password", "username": "u", "password": "p"}}, 400, "unsupported_grant_type", False),
    "rfc6749_5_2_authorization_code_for_a_client_not_registered_for_it_is_unauthorized_client": (
        {**_b("basic"), "form": {"grant_type": "authorization_code", "code": "x", "code_verifier": "v" * 43}}, 400,
        "unauthorized_client", False),
    "rfc6749_5_2_missing_grant_type_is_invalid_request": (
        {**_b("basic"), "form": {"scope": "tools/call:x"}}, 400, "invalid_request", False),
    "rfc6749_5_2_empty_grant_type_is_invalid_request": (
        {**_b("basic"), "form": {"grant_type": ""}}, 400, "invalid_request", False),
    "rfc6749_3_2_duplicate_grant_type_is_invalid_request": (
        {**_b("basic"), "form": [("grant_type", "client_credentials"), ("grant_type", "client_credentials")]}, 400, "invalid_request", False),
    "rfc6749_3_2_duplicate_scope_is_invalid_request": (
        {**_b("basic"), "form": [("grant_type", "client_credentials"), ("scope", "tools/call:a"), ("scope", "tools/call:b")]},
        400, "invalid_request", False),
    # RFC 6749 §3.1: "Request and response parameters MUST NOT be included more than once" — also
    # when one of the copies is empty (an empty value counts as omitted, but the name was sent).
    "rfc6749_3_1_scope_repeated_after_an_empty_one_is_invalid_request": (
        {**_b("basic"), "form": [("grant_type", "client_credentials"), ("scope", ""), ("scope", "tools/call:a")]},
        400, "invalid_request", False),
    "rfc6749_3_1_scope_repeated_empty_after_a_value_is_invalid_request": (
        {**_b("basic"), "form": [("grant_type", "client_credentials"), ("scope", "tools/call:a"), ("scope", "")]},
        400, "invalid_request", False),
    "rfc6749_3_1_grant_type_repeated_after_an_empty_one_is_invalid_request": (
        {**_b("basic"), "form": [("grant_type", ""), ("grant_type", "client_credentials")]}, 400, "invalid_request", False),
    "rfc6749_3_1_client_secret_repeated_after_an_empty_one_is_invalid_request": (
        {"post_empty_dup": "post", "form": {"grant_type": "client_credentials"}}, 400, "invalid_request", False),
    "rfc6749_3_2_duplicate_client_secret_is_invalid_request": (
        {"post_dup": "post", "form": {"grant_type": "client_credentials"}}, 400, "invalid_request", False),
    "rfc6749_2_3_two_auth_methods_basic_and_post_is_invalid_request": (
        {"basic_and_post": "basic", "form": {"grant_type": "client_credentials"}}, 400, "invalid_request", False),
    "rfc6749_2_3_two_auth_methods_basic_and_assertion_is_invalid_request": (
        {**_b("basic"), "form": {"grant_type": "client_credentials", "client_assertion": "a.b.c",
                                 "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}},
        400, "invalid_request", False),
    "rfc6749_2_3_two_auth_methods_post_and_assertion_is_invalid_request": (
        {"form": {"grant_type": "client_credentials", "client_id": "x", "client_secret": "y", "client_assertion": "a.b.c",
                  "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}}, 400, "invalid_request", False),
    "rfc6749_2_3_1_basic_and_different_body_client_id_is_invalid_request": (
        {**_b("basic"), "form": {"grant_type": "client_credentials", "client_id": "someone-else"}}, 400, "invalid_request", False),
    "rfc7523_huge_client_assertion_is_invalid_client": (
        {"form": {"grant_type": "client_credentials", "client_assertion": "a" * 6000 + "." + "b" * 6000 + ".c",
                  "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}}, 401, "invalid_client", False),
    "rfc6749_3_2_json_content_type_is_invalid_request": (
        {**_b("basic"), "raw": b'{"grant_type":"client_credentials"}', "content_type": "application/json"}, 400, "invalid_request", False),
    "rfc6749_3_2_text_plain_content_type_is_invalid_request": (
        {**_b("basic"), "raw": b"grant_type=client_credentials", "content_type": "text/plain"}, 400, "invalid_request", False),
    "rfc6749_3_2_multipart_body_is_invalid_request": (
        {**_b("basic"), "raw": b'--x\r\nContent-Disposition: form-data; name="grant_type"\r\n\r\nclient_credentials\r\n--x--\r\n',
         "content_type": "multipart/form-data; boundary=x"}, 400, "invalid_request", False),
    "rfc6749_3_2_missing_content_type_is_invalid_request": (
        {**_b("basic"), "raw": b"grant_type=client_credentials", "content_type": None}, 400, "invalid_request", False),
    "rfc6749_appendix_b_non_utf8_body_is_invalid_request": (
        {**_b("basic"), "raw": b"grant_type=client_credentials&scope=\xff\xfe", "content_type": FORM}, 400, "invalid_request", False),
    "rfc6749_appendix_b_percent_encoded_non_utf8_is_invalid_request": (
        {**_b("basic"), "raw": b"grant_type=client_credentials&scope=%ff%fe", "content_type": FORM}, 400, "invalid_request", False),
    "rfc6749_appendix_b_field_without_equals_is_invalid_request": (
        {**_b("basic"), "raw": b"grant_type", "content_type": FORM}, 400, "invalid_request", False),
    "rfc6749_appendix_b_nul_in_value_is_invalid_request": (
        {**_b("basic"), "raw": b"grant_type=client_credentials&scope=tools/call:a%00b", "content_type": FORM}, 400, "invalid_request", False),
    "rfc6749_appendix_b_too_many_parameters_is_invalid_request": (
        {**_b("basic"), "raw": ("grant_type=client_credentials&" + "&".join(f"p{i}=v" for i in range(64))).encode(),
         "content_type": FORM}, 400, "invalid_request", False),
    "rfc6749_appendix_b_empty_body_is_invalid_request": (
        {**_b("basic"), "raw": b"", "content_type": FORM}, 400, "invalid_request", False),
    "body_over_max_body_bytes_is_413": (
        {**_b("basic"), "raw": b"grant_type=client_credentials&pad=" + b"a" * (16 * 1024), "content_type": FORM}, 413, "invalid_request", False),
    "streamed_body_over_max_body_bytes_is_413": (
        {**_b("basic"), "stream": [b"grant_type=client_credentials&pad="] + [b"a" * 4096] * 8, "content_type": FORM},
        413, "invalid_request", False),
}


def send(env: Env, clients: dict[str, Any], spec: dict[str, Any], path: str = "/token") -> Any:
    headers: dict[str, str] = dict(spec.get("headers", {}))
    form = spec.get("form")
    pairs = list(form.items()) if isinstance(form, dict) else list(form or [])
    if "basic_as" in spec:
        cid, sec = clients[spec["basic_as"]]
        headers["Authorization"] = basic(cid, sec)
    if "basic_raw" in spec:
        cid, sec = spec["basic_raw"]
        if cid.startswith("@"):
            cid = clients[cid[1:]][0]
        headers["Authorization"] = basic(cid, sec)
    if "basic_wrong" in spec:
        headers["Authorization"] = basic(clients[spec["basic_wrong"]][0], "cbsts_" + secrets.token_urlsafe(32))
    if "post_wrong" in spec:
        pairs += [("client_id", clients[spec["post_wrong"]][0]), ("client_secret", "cbsts_" + secrets.token_urlsafe(32))]
    if "post_dup" in spec:
        cid, sec = clients[spec["post_dup"]]
        pairs += [("client_id", cid), ("client_secret", sec), ("client_secret", sec)]
    if "post_empty_dup" in spec:
        cid, sec = clients[spec["post_empty_dup"]]
        pairs += [("client_id", cid), ("client_secret", ""), ("client_secret", sec)]
    if "basic_and_post" in spec:
        cid, sec = clients[spec["basic_and_post"]]
        headers["Authorization"] = basic(cid, sec)
        pairs += [("client_id", cid), ("client_secret", sec)]
    if "stream" in spec:
        chunks = spec["stream"]
        headers["Content-Type"] = spec["content_type"]
        return env.http.post(path, content=(c for c in chunks), headers=headers)
    if "raw" in spec:
        if spec["content_type"] is not None:
            headers["Content-Type"] = spec["content_type"]
        return env.http.post(path, content=spec["raw"], headers=headers)
    headers["Content-Type"] = FORM
    return env.http.post(path, content=urllib.parse.urlencode(pairs).encode(), headers=headers)


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusal_is_rfc6749_error_json_and_writes_nothing(env: Env, clients: dict[str, Any], case: str) -> None:
    spec, status, error, challenge = REFUSALS[case]
    before = env.counts()
    resp = send(env, clients, spec)
    assert_oauth_error(resp, status, error)
    if challenge:  # RFC 6749 §5.2: invalid_client after Basic -> 401 with WWW-Authenticate: Basic
        assert resp.headers["www-authenticate"].lower().startswith("basic")
    assert env.counts() == before


def test_refusal_table_guard_same_clients_get_tokens_with_a_proper_request(env: Env, clients: dict[str, Any]) -> None:
    """Guard for the refusal table: the same clients do get tokens with a proper request."""
    for who in ("basic", "git", "post"):
        cid, sec = clients[who]
        if who == "post":
            resp = env.http.post("/token", data={"grant_type": "client_credentials", "client_id": cid, "client_secret": sec})
        else:
            resp = env.http.post("/token", data={"grant_type": "client_credentials"}, headers={"Authorization": basic(cid, sec)})
        assert resp.status_code == 200, (who, resp.text)
    cid, sec = clients["multi"]
    resp = env.http.post("/token", data={"grant_type": "client_credentials", "resource": AUDIENCE},
                         headers={"Authorization": basic(cid, sec)})
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
@pytest.mark.parametrize("field", ["authorization", "content-type"])
def test_rfc9110_5_3_repeated_singleton_header_is_invalid_request(env: Env, clients: dict[str, Any], path: str,
                                                                    field: str) -> None:
    """Two Authorization (or Content-Type) fields are ambiguous: a proxy and the IdP could act on different ones."""
    cid, sec = clients["basic"]
    good = {"authorization": basic(cid, sec), "content-type": FORM}[field]
    other = {"authorization": basic("nobody", "x"), "content-type": "text/plain"}[field]
    base = [(k, v) for k, v in (("authorization", basic(cid, sec)), ("content-type", FORM)) if k != field]
    before = env.counts()
    for pair in ((other, good), (good, other), (good, good)):
        resp = env.http.post(path, content=b"grant_type=client_credentials&token=x",
                             headers=[*base, (field, pair[0]), (field, pair[1])])
        assert_oauth_error(resp, 400, "invalid_request")
    assert env.counts() == before


def test_rfc6749_2_3_1_credentials_in_the_query_string_are_not_used(env: Env, clients: dict[str, Any]) -> None:
    """The client secret MUST NOT be sent in the request URI; the server must not accept it there."""
    cid, sec = clients["post"]
    before = env.counts()
    query = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": cid, "client_secret": sec})
    assert_oauth_error(env.http.post("/token?" + query, data={"grant_type": "client_credentials"}), 401, "invalid_client")
    assert_oauth_error(env.http.post("/token?" + query, content=b"", headers={"Content-Type": FORM}), 400, "invalid_request")
    assert env.counts() == before


@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_rfc9110_15_5_6_other_methods_on_oauth_endpoints_are_405_with_allow_post(env: Env, method: str, path: str) -> None:
    before = env.counts()
    resp = env.http.request(method, path)
    assert resp.status_code == 405
    assert resp.headers["allow"] == "POST"
    assert resp.json()["error"]
    assert env.counts() == before
