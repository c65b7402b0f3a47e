"""Discovery over HTTP: RFC 8414 metadata, OpenID Connect Discovery 1.0 §3, the JWKS (RFC 7517)
with HTTP caching (RFC 9111 max-age, RFC 9110 ETag / If-None-Match), and CORS for browser clients.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from test_token_endpoint import Env, env, make_env  # noqa: F401 - env is a fixture

from idp.config import Settings

ORIGIN = "https://app.example.test"
AUTH_METHODS = {"client_secret_basic", "client_secret_post", "private_key_jwt"}
RFC8414 = "/.well-known/oauth-authorization-server"
OIDC = "/.well-known/openid-configuration"


def _doc(env: Env, path: str) -> tuple[Any, dict[str, Any]]:
    resp = env.http.get(path)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    return resp, resp.json()


def _assert_issuer_byte_equal(resp: Any, issuer: str) -> None:
    doc = json.loads(resp.content)
    assert doc["issuer"] == issuer
    assert not doc["issuer"].endswith("/")
    # Byte-equal on the wire, as MCP clients compare it (no escaping like "http:\/\/").
    assert b'"issuer":' in resp.content and json.dumps(issuer).encode() in resp.content


@pytest.mark.parametrize("path", [RFC8414, OIDC])
def test_rfc8414_3_issuer_is_byte_equal_to_configured_issuer(env: Env, path: str) -> None:
    resp, _ = _doc(env, path)
    _assert_issuer_byte_equal(resp, env.settings.issuer)


@pytest.fixture
def other_issuer_env(tmp_path: Path) -> Iterator[Env]:
    yield from make_env(Settings(issuer="https://idp.example.test:8443", database_url=f"sqlite:///{tmp_path / 'm.db'}",
                                 keys_dir=tmp_path / "keys", keystore_kek="A" * 43))


def test_rfc8414_3_metadata_follows_the_configured_issuer(other_issuer_env: Env) -> None:
    for path in (RFC8414, OIDC):
        resp, doc = _doc(other_issuer_env, path)
        _assert_issuer_byte_equal(resp, "https://idp.example.test:8443")
        assert doc["token_endpoint"] == "https://idp.example.test:8443/token"
        assert doc["jwks_uri"] == "https://idp.example.test:8443/jwks"


def test_rfc8414_2_authorization_server_metadata_members(env: Env) -> None:
    _, doc = _doc(env, RFC8414)
    issuer = env.settings.issuer
    assert doc["token_endpoint"] == issuer + "/token"
    assert doc["jwks_uri"] == issuer + "/jwks"
    assert doc["introspection_endpoint"] == issuer + "/introspect"
    assert doc["revocation_endpoint"] == issuer + "/revoke"
    assert "client_credentials" in doc["grant_types_supported"]
    assert isinstance(doc["response_types_supported"], list)  # REQUIRED by RFC 8414 §2
    for prefix in ("token_endpoint", "introspection_endpoint", "revocation_endpoint"):
        # Public clients ("none") get and revoke tokens; introspection needs an authenticated caller.
        public = set() if prefix == "introspection_endpoint" else {"none"}
        assert set(doc[f"{prefix}_auth_methods_supported"]) == AUTH_METHODS | public
        # §2: required when private_key_jwt is listed; "none" MUST NOT be used.
        algs = doc[f"{prefix}_auth_signing_alg_values_supported"]
        assert algs and "none" not in algs and "HS256" not in algs
        assert {"ES256", "RS256"} <= set(algs)
    # Exactly what the server does (the authorization code flow, docs/authorization.md).
    assert doc["authorization_endpoint"] == issuer + "/authorize"
    assert set(doc["grant_types_supported"]) == {"client_credentials", "authorization_code", "refresh_token"}
    assert doc["response_types_supported"] == ["code"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["authorization_response_iss_parameter_supported"] is True


def test_oidc_discovery_3_openid_configuration_members(env: Env) -> None:
    _, doc = _doc(env, OIDC)
    _, as_doc = _doc(env, RFC8414)
    assert {k: doc[k] for k in as_doc} == as_doc  # same server, same answers
    assert doc["jwks_uri"] == env.settings.issuer + "/jwks"
    assert doc["subject_types_supported"] and all(isinstance(s, str) for s in doc["subject_types_supported"])
    algs = doc["id_token_signing_alg_values_supported"]
    assert algs and all(isinstance(a, str) for a in algs) and "none" not in algs
    assert "client_credentials" in doc["grant_types_supported"]
    assert AUTH_METHODS <= set(doc["token_endpoint_auth_methods_supported"])


@pytest.mark.parametrize("path", [RFC8414, OIDC])
def test_rfc8414_advertised_endpoints_are_served_by_this_app(env: Env, path: str) -> None:
    _, doc = _doc(env, path)
    issuer = urlsplit(env.settings.issuer)
    for member in ("token_endpoint", "introspection_endpoint", "revocation_endpoint"):
        url = urlsplit(doc[member])
        assert (url.scheme, url.netloc) == (issuer.scheme, issuer.netloc)
        resp = env.http.post(url.path, data={"token": "x", "grant_type": "client_credentials"})
        assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"  # the endpoint, not a 404
    jwks = env.http.get(urlsplit(doc["jwks_uri"]).path)
    assert jwks.status_code == 200 and jwks.json()["keys"]


# ---------------------------------------------------------------------------------------------
# JWKS
# ---------------------------------------------------------------------------------------------


def test_rfc7517_jwks_publishes_public_signing_keys_only(env: Env) -> None:
    resp = env.http.get("/jwks")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/jwk-set+json")  # RFC 7517 §8.5.1
    keys = resp.json()["keys"]
    assert keys
    for jwk in keys:
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & set(jwk)
        assert jwk["use"] == "sig" and jwk["alg"] == env.settings.signing_alg and jwk["kid"]
        assert jwk["kty"] == {"ES256": "EC", "EdDSA": "OKP"}[jwk["alg"]]


def test_rfc9111_jwks_has_cache_control_max_age_and_etag(env: Env) -> None:
    resp = env.http.get("/jwks")
    directives = [d.strip() for d in resp.headers["cache-control"].split(",")]
    assert f"max-age={env.settings.jwks_max_age}" in directives
    assert "no-store" not in directives
    etag = resp.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 2  # RFC 9110 §8.8.3 entity-tag
    assert env.http.get("/jwks").headers["etag"] == etag  # stable while the key set is


def test_rfc9110_13_1_2_if_none_match_with_current_etag_is_304(env: Env) -> None:
    first = env.http.get("/jwks")
    etag = first.headers["etag"]
    resp = env.http.get("/jwks", headers={"If-None-Match": etag})
    assert resp.status_code == 304
    assert resp.content == b""
    assert resp.headers["etag"] == etag  # RFC 9110 §15.4.5: 304 repeats ETag and Cache-Control
    assert f"max-age={env.settings.jwks_max_age}" in resp.headers["cache-control"]
    stale = env.http.get("/jwks", headers={"If-None-Match": '"not-the-etag"'})
    assert stale.status_code == 200 and stale.content == first.content


@pytest.mark.parametrize("form", ["list", "weak", "star"])
def test_rfc9110_13_1_2_if_none_match_lists_and_weak_tags_are_honoured(env: Env, form: str) -> None:
    """If-None-Match takes a list of entity-tags compared weakly, or ``*`` (RFC 9110 §13.1.2)."""
    etag = env.http.get("/jwks").headers["etag"]
    value = {"list": f'"other", {etag}', "weak": f"W/{etag}", "star": "*"}[form]
    assert env.http.get("/jwks", headers={"If-None-Match": value}).status_code == 304


def test_jwks_etag_changes_when_a_key_is_added(env: Env) -> None:
    before = env.http.get("/jwks")
    env.provider.keys.rotate(actor="test")  # pre-published: in the JWKS, not yet signing
    after = env.http.get("/jwks", headers={"If-None-Match": before.headers["etag"]})
    assert after.status_code == 200
    assert after.headers["etag"] != before.headers["etag"]
    assert len(after.json()["keys"]) == len(before.json()["keys"]) + 1


# ---------------------------------------------------------------------------------------------
# CORS (browser-based MCP clients)
# ---------------------------------------------------------------------------------------------


def _allows(resp: Any, origin: str = ORIGIN) -> bool:
    return resp.headers.get("access-control-allow-origin") in ("*", origin)


@pytest.mark.parametrize("path", [RFC8414, OIDC, "/jwks"])
def test_cors_discovery_documents_readable_from_a_browser_origin(env: Env, path: str) -> None:
    resp = env.http.get(path, headers={"Origin": ORIGIN})
    assert resp.status_code == 200 and _allows(resp)
    # No cookies are involved: credentials must not be allowed together with a wildcard.
    assert not (resp.headers.get("access-control-allow-origin") == "*"
                and resp.headers.get("access-control-allow-credentials") == "true")


def test_cors_token_endpoint_answers_a_browser_origin_on_success_and_error(env: Env) -> None:
    client, secret = env.register()
    ok = env.http.post("/token", data={"grant_type": "client_credentials"}, auth=(client.client_id, secret), headers={"Origin": ORIGIN})
    assert ok.status_code == 200 and _allows(ok)
    err = env.http.post("/token", data={"grant_type": "client_credentials"}, headers={"Origin": ORIGIN})
    assert err.status_code == 401 and _allows(err)  # the browser client must be able to read the error


@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
def test_cors_preflight_for_oauth_endpoints_allows_post_with_authorization(env: Env, path: str) -> None:
    resp = env.http.options(path, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                           "Access-Control-Request-Headers": "authorization, content-type"})
    assert resp.status_code in (200, 204)
    assert _allows(resp)
    assert "POST" in resp.headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in resp.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed


def test_cors_preflight_for_metadata_get(env: Env) -> None:
    resp = env.http.options(RFC8414, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET",
                                              "Access-Control-Request-Headers": "mcp-protocol-version"})
    assert resp.status_code in (200, 204) and _allows(resp)
