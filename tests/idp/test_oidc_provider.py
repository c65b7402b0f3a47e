"""The IdP as an OpenID Provider: discovery (OpenID Connect Discovery 1.0 §3), ID tokens (Core
§2, §3.1.3.6) verified with an independent JOSE library, and the UserInfo endpoint (Core §5.3)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from codeflow_testing import ALICE, ensure_resource, get_code, redeem, refresh, register_interactive
from idp_testing import AUDIENCE
from joserfc import jwt
from test_token_endpoint import Env, assert_oauth_error, eddsa_env, env, jwks_keyset  # noqa: F401 - fixtures

OIDC = "/.well-known/openid-configuration"
REQUIRED = ("issuer", "authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
            "response_types_supported", "subject_types_supported", "id_token_signing_alg_values_supported")


@pytest.fixture(autouse=True)
def _resource(env: Env) -> None:
    ensure_resource(env)


def test_oidc_discovery_3_every_required_member(env: Env) -> None:
    doc = env.http.get(OIDC).json()
    issuer = env.settings.issuer
    for member in REQUIRED:
        assert doc.get(member), member
    assert doc["authorization_endpoint"] == issuer + "/authorize"
    assert doc["userinfo_endpoint"] == issuer + "/userinfo"
    assert doc["response_types_supported"] == ["code"]
    assert "openid" in doc["scopes_supported"] and "offline_access" not in doc["scopes_supported"]
    assert len(doc["scopes_supported"]) <= 3  # older MCP clients request every listed scope
    assert {"sub", "iss", "aud", "email", "name"} <= set(doc["claims_supported"])
    assert "none" not in doc["id_token_signing_alg_values_supported"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert "none" in doc["token_endpoint_auth_methods_supported"]


def verify_id_token(env: Env, token: str) -> dict[str, Any]:
    keys, _ = jwks_keyset(env.http)
    verified = jwt.decode(token, keys, algorithms=["ES256", "EdDSA"])
    assert verified.header["typ"] == "JWT"  # never an at+jwt
    return dict(verified.claims)


def at_hash(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def test_core_3_1_3_6_id_token_with_nonce_at_hash_and_released_claims(env: Env) -> None:
    client, _ = register_interactive(env)
    code, verifier, _ = get_code(env, client, scope="tools/call:echo openid email", nonce="n-0S6_WzA2Mj")
    body = redeem(env, client, code, verifier).json()
    claims = verify_id_token(env, body["id_token"])
    assert claims["iss"] == env.settings.issuer and claims["aud"] == client.client_id and claims["sub"] == ALICE.id
    assert claims["nonce"] == "n-0S6_WzA2Mj" and claims["auth_time"] == 1_700_000_000
    assert claims["at_hash"] == at_hash(body["access_token"])
    assert claims["exp"] > claims["iat"]
    assert claims["email"] == "alice@example.test" and claims["email_verified"] is True
    assert "name" not in claims and "groups" not in claims  # profile not asked; groups never released
    assert set(body["scope"].split()) == {"tools/call:echo", "openid", "email"}


def test_no_id_token_without_openid(env: Env) -> None:
    client, _ = register_interactive(env)
    code, verifier, _ = get_code(env, client, scope="tools/call:echo email")
    assert "id_token" not in redeem(env, client, code, verifier).json()


def test_profile_scope_releases_name_and_username(env: Env) -> None:
    client, _ = register_interactive(env)
    code, verifier, _ = get_code(env, client, scope="tools/call:echo openid profile")
    claims = verify_id_token(env, redeem(env, client, code, verifier).json()["id_token"])
    assert claims["name"] == "Alice Example" and claims["preferred_username"] == "alice" and "email" not in claims


def test_refresh_returns_a_fresh_id_token_without_nonce(env: Env) -> None:
    client, _ = register_interactive(env)
    code, verifier, _ = get_code(env, client, scope="tools/call:echo openid offline_access", nonce="n1")
    body = refresh(env, client, redeem(env, client, code, verifier).json()["refresh_token"]).json()
    claims = verify_id_token(env, body["id_token"])
    assert claims["sub"] == ALICE.id and "nonce" not in claims and claims["at_hash"] == at_hash(body["access_token"])


def userinfo_token(env: Env, scope: str = "openid email profile") -> tuple[Any, dict[str, Any]]:
    client, _ = register_interactive(env)
    code, verifier, req = get_code(env, client, scope=scope, resource=None)
    assert req.resource == env.settings.issuer + "/userinfo"
    resp = redeem(env, client, code, verifier)
    assert resp.status_code == 200, resp.text
    return client, resp.json()


def test_core_5_3_userinfo_with_an_openid_only_token(env: Env) -> None:
    _, body = userinfo_token(env)
    for method in ("GET", "POST"):
        resp = env.http.request(method, "/userinfo", headers={"Authorization": "Bearer " + body["access_token"]})
        assert resp.status_code == 200, resp.text
        info = resp.json()
        assert info["sub"] == ALICE.id and info["email"] == "alice@example.test" and info["name"] == "Alice Example"
        assert "groups" not in info and resp.headers["cache-control"] == "no-store"


def test_userinfo_releases_only_what_the_scopes_allow(env: Env) -> None:
    _, body = userinfo_token(env, scope="openid")
    info = env.http.get("/userinfo", headers={"Authorization": "Bearer " + body["access_token"]}).json()
    assert info == {"sub": ALICE.id}


def test_userinfo_refuses_a_token_for_an_mcp_server(env: Env) -> None:
    client, _ = register_interactive(env)
    code, verifier, _ = get_code(env, client, scope="tools/call:echo openid email")
    body = redeem(env, client, code, verifier).json()
    assert body["access_token"] and __import__("json").loads(
        base64.urlsafe_b64decode(body["access_token"].split(".")[1] + "==")
    )["aud"] == AUDIENCE
    resp = env.http.get("/userinfo", headers={"Authorization": "Bearer " + body["access_token"]})
    assert resp.status_code == 401 and 'error="invalid_token"' in resp.headers["www-authenticate"]


@pytest.mark.parametrize("header", [None, "Bearer", "Basic abc", "Bearer not.a.jwt", "Bearer " + "a" * 9000,
                                    "Bearer a.b.c"])
def test_userinfo_without_a_valid_bearer_token_is_401(env: Env, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    resp = env.http.get("/userinfo", headers=headers)
    assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith("Bearer")
    assert resp.json()["error"] in ("invalid_request", "invalid_token")


def test_userinfo_refuses_a_revoked_token(env: Env) -> None:
    client, body = userinfo_token(env)
    env.http.post("/revoke", data={"token": body["access_token"], "client_id": client.client_id})
    resp = env.http.get("/userinfo", headers={"Authorization": "Bearer " + body["access_token"]})
    assert resp.status_code == 401


def test_capabilities_are_never_granted_for_the_userinfo_endpoint(env: Env) -> None:
    from codeflow_testing import params, parse

    from idp.oauth2.authorization_request import AuthorizationError

    client, _ = register_interactive(env)
    with pytest.raises(AuthorizationError) as exc:
        parse(env, params(client, scope="tools/call:echo openid", resource=env.settings.issuer + "/userinfo"))
    assert exc.value.error == "invalid_target"
    with pytest.raises(AuthorizationError):
        parse(env, params(client, scope="email", resource=None))  # no openid, no resource


def test_token_endpoint_refusal_shape_is_kept(env: Env) -> None:
    client, _ = register_interactive(env)
    assert_oauth_error(env.http.post("/token", data={"grant_type": "authorization_code", "client_id": client.client_id,
                                                     "code": "x", "code_verifier": "y" * 43}), 400, "invalid_grant")


def test_the_official_python_mcp_client_accepts_both_metadata_documents(env: Env) -> None:
    """The mcp package's own schema (it requires authorization_endpoint), for both documents."""
    from mcp.shared.auth import OAuthMetadata

    for path in ("/.well-known/oauth-authorization-server", OIDC):
        doc = OAuthMetadata.model_validate(env.http.get(path).json())
        assert str(doc.authorization_endpoint) == env.settings.issuer + "/authorize"
        assert doc.code_challenge_methods_supported == ["S256"]
        assert "none" in (doc.token_endpoint_auth_methods_supported or [])


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
def test_core_3_1_3_6_at_hash_of_an_eddsa_id_token_uses_sha512(eddsa_env: Env) -> None:
    ensure_resource(eddsa_env)
    client, _ = register_interactive(eddsa_env)
    code, verifier, _ = get_code(eddsa_env, client, scope="tools/call:echo openid")
    body = redeem(eddsa_env, client, code, verifier).json()
    keys, _ = jwks_keyset(eddsa_env.http)
    verified = jwt.decode(body["id_token"], keys, algorithms=["EdDSA"])
    digest = hashlib.sha512(body["access_token"].encode()).digest()
    assert verified.header["alg"] == "EdDSA"
    assert verified.claims["at_hash"] == base64.urlsafe_b64encode(digest[:32]).rstrip(b"=").decode()
