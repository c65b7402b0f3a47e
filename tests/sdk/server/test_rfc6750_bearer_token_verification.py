"""Bearer token verification (RFC 6750, RFC 9068, RFC 8707) — each check with its attack, over
real HTTP against the protected example server and a real IdP. A refusal is always 401 with a
``WWW-Authenticate`` challenge (or 400 for a malformed request), never a 500 and never a pass."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import httpx
import pytest

from sdk.jws import PrivateKey, b64url_encode
from sdk_server_support import IdP, MCPUnderTest, claims_for, legacy_headers, rpc, sign_raw


def call(srv: MCPUnderTest, token: str | None, body: object | None = None, **headers: str) -> httpx.Response:
    h = legacy_headers(token)
    h.update(headers)
    return httpx.post(srv.url, json=body if body is not None else rpc("tools/list"), headers=h, timeout=10)


def assert_invalid(resp: httpx.Response, text: str | None = None) -> None:
    assert resp.status_code == 401, resp.text
    challenge = resp.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
    assert "resource_metadata=" in challenge
    if text:
        assert text in resp.json()["error"]["message"]


def signer(idp: IdP) -> PrivateKey:
    return idp.provider.keys.signer()


# --- RFC 9728 metadata and the 401 challenge -----------------------------------------------------

def test_resource_metadata_at_path_and_root_well_known(mcp_server: MCPUnderTest, idp: IdP) -> None:
    for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
        resp = httpx.get(mcp_server.base + path)
        assert resp.status_code == 200
        doc = resp.json()
        assert doc["resource"] == mcp_server.resource
        assert doc["authorization_servers"] == [idp.url]
        assert doc["bearer_methods_supported"] == ["header"]
        assert doc["scopes_supported"] == ["tools/call:echo"]
    assert httpx.post(mcp_server.base + "/.well-known/oauth-protected-resource").status_code == 405


def test_missing_token_is_401_with_resource_metadata_and_needed_scope(mcp_server: MCPUnderTest) -> None:
    resp = call(mcp_server, None, rpc("tools/call", {"name": "delete-file", "arguments": {}}))
    assert resp.status_code == 401
    challenge = resp.headers["www-authenticate"]
    assert f'resource_metadata="{mcp_server.base}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert 'scope="tools/call:delete-file"' in challenge
    assert "error=" not in challenge  # RFC 6750 §3.1: no error code when no credentials were sent
    assert resp.json()["error"]["code"] == -32005
    # a request needing no capability (initialize) gets the advertised scopes
    resp = call(mcp_server, None, rpc("initialize", {}))
    assert 'scope="tools/call:echo"' in resp.headers["www-authenticate"]


def test_get_and_delete_need_a_token_too(mcp_server: MCPUnderTest) -> None:
    assert httpx.get(mcp_server.url, headers={"Accept": "text/event-stream"}).status_code == 401
    assert httpx.delete(mcp_server.url, headers={"Mcp-Session-Id": "x"}).status_code == 401


def test_other_paths_of_the_app_need_a_token(mcp_server: MCPUnderTest, idp: IdP) -> None:
    assert httpx.get(mcp_server.base + "/anything").status_code == 401
    token = idp.new_token("tools/call:echo", mcp_server.resource)
    # authenticated: the app answers (404: it has no such route)
    assert httpx.get(mcp_server.base + "/anything", headers={"Authorization": f"Bearer {token}"}).status_code == 404


# --- the token's own claims -----------------------------------------------------------------------

def test_token_for_another_audience_is_refused(idp: IdP, mcp_json_server: MCPUnderTest) -> None:
    other = "http://127.0.0.1:1/other-mcp"
    token = idp.new_token("tools/call:echo", other)
    assert_invalid(call(mcp_json_server, token), "aud")


def test_token_with_audience_list_containing_us_is_accepted_other_list_refused(idp: IdP, mcp_json_server: MCPUnderTest) -> None:
    key = signer(idp)
    good = key.sign(claims_for(idp, [mcp_json_server.resource, "https://x.example"]))  # type: ignore[arg-type]
    assert call(mcp_json_server, good).status_code == 200
    bad = key.sign(claims_for(idp, ["https://x.example"]))  # type: ignore[arg-type]
    assert_invalid(call(mcp_json_server, bad), "aud")


def test_expired_token_is_refused_beyond_the_skew(idp: IdP, mcp_json_server: MCPUnderTest) -> None:
    key = signer(idp)
    now = int(time.time())
    expired = key.sign(claims_for(idp, mcp_json_server.resource, iat=now - 600, exp=now - 61))
    assert_invalid(call(mcp_json_server, expired), "expired")
    within_skew = key.sign(claims_for(idp, mcp_json_server.resource, iat=now - 600, exp=now - 30))
    assert call(mcp_json_server, within_skew).status_code == 200


def test_not_yet_valid_and_future_iat_are_refused(idp: IdP, mcp_json_server: MCPUnderTest) -> None:
    key = signer(idp)
    now = int(time.time())
    assert_invalid(call(mcp_json_server, key.sign(claims_for(idp, mcp_json_server.resource, nbf=now + 120))), "nbf")
    assert_invalid(call(mcp_json_server, key.sign(claims_for(idp, mcp_json_server.resource, iat=now + 120))), "iat")


@pytest.mark.parametrize("claims", [
    {"iss": "http://127.0.0.1:1"},  # another issuer
    {"exp": None},  # no exp
    {"exp": "9999999999"},  # exp as a string
    {"exp": True},
    {"sub": None},
    {"client_id": None},
    {"jti": None},
    {"scope": ["tools/call:echo"]},  # not a string
    {"scope": "tools/call"},  # not a capability (needs a target)
    {"cnf": {"jkt": "abc"}},  # sender-constrained: refused by a bearer-only verifier
])
def test_bad_claims_are_refused(idp: IdP, mcp_json_server: MCPUnderTest, claims: dict) -> None:
    base = claims_for(idp, mcp_json_server.resource)
    if "iss" in claims:
        base["iss"] = claims["iss"]
        claims = {}
    base.update(claims)
    token = signer(idp).sign({k: v for k, v in base.items() if v is not None})
    assert_invalid(call(mcp_json_server, token))


# --- the token's signature and header (hostile JOSE) ----------------------------------------------

def _b64(obj: object) -> str:
    return b64url_encode(json.dumps(obj).encode())


def test_tampered_signature_and_payload_are_refused(idp: IdP, mcp_json_server: MCPUnderTest) -> None:
    token = idp.new_token("tools/call:echo", mcp_json_server.resource)
    h, p, s = token.split(".")
    sig = bytearray(base64.urlsafe_b64decode(s + "=="))
    sig[5] ^= 1
    assert_invalid(call(mcp_json_server, f"{h}.{p}.{b64url_encode(bytes(sig))}"))
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    claims["scope"] = "tools/call:**"
    assert_invalid(call(mcp_json_server, f"{h}.{_b64(claims)}.{s}"))


def test_token_signed_by_another_key_with_the_real_kid_is_refused(idp: IdP, mcp_json_server: MCPUnderTest) -> None:
    real = signer(idp)
    attacker = PrivateKey.generate("ES256")
    token = sign_raw(attacker, {"alg": "ES256", "kid": real.kid, "typ": "at+jwt"}, claims_for(idp, mcp_json_server.resource))
    assert_invalid(call(mcp_json_server, token), "signature")


def test_alg_none_is_refused(idp: IdP, mcp_json_server: MCPUnderTest) -> None:
    kid = signer(idp).kid
    token = f"{_b64({'alg': 'none', 'kid': kid, 'typ': 'at+jwt'})}.{_b64(claims_for(idp, mcp_json_server.resource))}."
    assert_invalid(call(mcp_json_server, token), "alg")


def test_hs256_with_the_public_key_as_secret_is_refused(idp: IdP, mcp_json_server: MCPUnderTest) -> None:
    key = signer(idp)
    jwk = json.dumps(key.public.to_jwk()).encode()
    from cryptography.hazmat.primitives import serialization

    pem = key.public.key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for secret in (jwk, pem):
        signing_input = f"{_b64({'alg': 'HS256', 'kid': key.kid, 'typ': 'at+jwt'})}.{_b64(claims_for(idp, mcp_json_server.resource))}"
        sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert_invalid(call(mcp_json_server, f"{signing_input}.{b64url_encode(sig)}"), "alg")


def test_alg_that_disagrees_with_the_key_is_refused(idp: IdP, mcp_json_server: MCPUnderTest) -> None:
    key = signer(idp)
    other_alg = "EdDSA" if key.alg == "ES256" else "ES256"
    token = sign_raw(key, {"alg": other_alg, "kid": key.kid, "typ": "at+jwt"}, claims_for(idp, mcp_json_server.resource))
    assert_invalid(call(mcp_json_server, token))


@pytest.mark.parametrize("extra", [
    {"crit": ["exp"], "exp": 1},
    {"crit": ["urn:unknown"]},
    {"jku": "http://127.0.0.1:1/jwks"},
    {"x5u": "http://127.0.0.1:1/cert"},
    {"jwk": {"kty": "EC"}},
    {"x5c": ["MIIB"]},
    {"b64": False},
])
def test_hostile_header_members_are_refused_even_with_a_valid_signature(idp: IdP, mcp_json_server: MCPUnderTest, extra: dict) -> None:
    key = signer(idp)
    token = sign_raw(key, {"alg": key.alg, "kid": key.kid, "typ": "at+jwt", **extra}, claims_for(idp, mcp_json_server.resource))
    assert_invalid(call(mcp_json_server, token), "header")


@pytest.mark.parametrize("header", [
    {"typ": "JWT"},  # an ID token or other JWT must not pass as an access token (RFC 9068 §4)
    {"typ": None},
    {"kid": "k" * 5000},  # huge kid
    {"kid": 12},
    {"kid": None},
])
def test_wrong_typ_and_bad_kid_are_refused(idp: IdP, mcp_json_server: MCPUnderTest, header: dict) -> None:
    key = signer(idp)
    h = {"alg": key.alg, "kid": key.kid, "typ": "at+jwt", **header}
    token = sign_raw(key, {k: v for k, v in h.items() if v is not None}, claims_for(idp, mcp_json_server.resource))
    assert_invalid(call(mcp_json_server, token))


@pytest.mark.parametrize("raw", [
    "not-a-jwt", "a.b", "a.b.c.d", "!!!.???.###", "e30.e30.", "x" * 20_000,
    _b64([1, 2]) + ".e30.AAAA", "eyJhbGciOiJFUzI1NiJ9.%%%%.AAAA",
])
def test_malformed_tokens_are_refused(mcp_json_server: MCPUnderTest, raw: str) -> None:
    resp = call(mcp_json_server, raw)
    assert resp.status_code == 401, resp.text
    assert "invalid_token" in resp.headers["www-authenticate"]


def test_authorization_header_variants(idp: IdP, mcp_json_server: MCPUnderTest) -> None:
    token = idp.new_token("tools/call:echo", mcp_json_server.resource)
    assert call(mcp_json_server, None, Authorization=f"bearer {token}").status_code == 200  # scheme is case-insensitive
    resp = call(mcp_json_server, None, Authorization=f"Basic {token}")
    assert resp.status_code == 401 and 'error="invalid_request"' in resp.headers["www-authenticate"]
    resp = call(mcp_json_server, None, Authorization="Bearer")
    assert resp.status_code == 401
    # two Authorization headers: refused outright (RFC 6750 §3.1 invalid_request)
    resp = httpx.post(mcp_json_server.url, content=json.dumps(rpc("tools/list")),
                      headers=[("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream"),
                               ("Authorization", f"Bearer {token}"), ("Authorization", "Bearer x")])
    assert resp.status_code == 400
    # a token in the query string is not a credential here (RFC 6750 §2.3 is not supported)
    resp = httpx.post(mcp_json_server.url + f"?access_token={token}", json=rpc("tools/list"), headers=legacy_headers())
    assert resp.status_code == 401


def test_a_cached_token_stops_working_when_it_expires(idp: IdP) -> None:
    from sdk_server_support import protected_example

    with protected_example(idp, stateless=True, json_response=True, clock_skew=0, tool_rate=None) as srv:
        now = int(time.time())
        token = signer(idp).sign(claims_for(idp, srv.resource, iat=now, exp=now + 2))
        assert call(srv, token).status_code == 200
        assert call(srv, token).status_code == 200  # from the verified-token cache
        assert len(srv.middleware.verifier.cache) >= 1
        time.sleep(max(0.0, now + 2 - time.time()) + 0.1)
        assert_invalid(call(srv, token), "expired")


def test_websockets_are_closed_and_public_paths_need_no_token(idp: IdP) -> None:
    import anyio

    from sdk.server import CBSTMiddleware, ProtectionConfig

    reached: list[str] = []

    async def app(scope: dict, receive: object, send: object) -> None:
        reached.append(scope["type"] + " " + scope.get("path", ""))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
            await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]

    mw = CBSTMiddleware(app, ProtectionConfig(issuer=idp.url, resource="http://127.0.0.1:9/mcp",
                                              public_paths=["/healthz"]))

    async def main() -> None:
        sent: list[dict] = []

        async def send(m: dict) -> None:
            sent.append(m)

        async def receive() -> dict:
            return {"type": "websocket.connect"}

        await mw({"type": "websocket", "path": "/mcp", "headers": []}, receive, send)
        assert sent == [{"type": "websocket.close", "code": 1008}]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://127.0.0.1:9") as c:
            assert (await c.get("/healthz")).status_code == 200
            assert (await c.get("/healthz/x")).status_code == 401
        await mw.aclose()

    anyio.run(main)
    assert reached == ["http /healthz"]
