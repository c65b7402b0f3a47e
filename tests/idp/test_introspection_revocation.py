"""Token introspection (RFC 7662) and revocation (RFC 7009) over HTTP.

Introspection answers ``active: true`` only for a valid token of this IdP, and only to the client
it was issued to or to a resource-server client registered for its audience (RFC 7662 §4); to
anyone else (other clients of the same audience included), and for revoked, expired, foreign or garbage tokens, exactly ``{"active": false}``.
Revocation: a client revokes only its own tokens (RFC 7009 §2.1); invalid tokens answer 200 (§2.2).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from idp_testing import AUDIENCE, ISSUER
from test_token_endpoint import FORM, OTHER_AUDIENCE, Env, assert_oauth_error, basic, env  # noqa: F401 - env is a fixture

import idp.clock
from sdk.jws import PrivateKey


def introspect(env: Env, client: Any, secret: str | None, token: str, **form: str) -> Any:
    return env.http.post("/introspect", data={"token": token, **form}, headers={"Authorization": basic(client.client_id, secret)})


def revoke(env: Env, client: Any, secret: str | None, token: str, **form: str) -> Any:
    return env.http.post("/revoke", data={"token": token, **form}, headers={"Authorization": basic(client.client_id, secret)})


def assert_inactive(resp: Any) -> None:
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"active": False}  # RFC 7662 §2.2: nothing else about an inactive token
    assert resp.headers["cache-control"] == "no-store"


# ---------------------------------------------------------------------------------------------
# Introspection (RFC 7662)
# ---------------------------------------------------------------------------------------------


def test_rfc7662_2_2_own_token_is_active_with_its_members(env: Env) -> None:
    client, secret = env.register(capabilities="tools/call:git-*")
    token = env.token(client, secret)
    resp = introspect(env, client, secret, token)
    assert resp.status_code == 200
    assert resp.headers["cache-control"] == "no-store"
    body = resp.json()
    assert body["active"] is True
    assert body["scope"] == "tools/call:git-*"
    assert body["client_id"] == body["sub"] == client.client_id
    assert body["aud"] == AUDIENCE
    assert body["iss"] == ISSUER
    assert body["token_type"] == "Bearer"
    assert isinstance(body["jti"], str) and body["jti"]
    assert body["exp"] == body["iat"] + env.settings.access_token_ttl
    assert abs(body["iat"] - int(time.time())) <= 5


def test_rfc7662_token_type_hint_does_not_change_the_answer(env: Env) -> None:
    client, secret = env.register()
    token = env.token(client, secret)
    for hint in ("access_token", "refresh_token", "unknown_kind"):
        assert introspect(env, client, secret, token, token_type_hint=hint).json()["active"] is True


def test_rfc7662_revoked_token_is_inactive(env: Env) -> None:
    client, secret = env.register()
    token = env.token(client, secret)
    assert introspect(env, client, secret, token).json()["active"] is True
    assert revoke(env, client, secret, token).status_code == 200
    assert_inactive(introspect(env, client, secret, token))


def test_rfc7662_expired_token_is_inactive(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    client, secret = env.register()
    token = env.token(client, secret)
    issued = int(time.time())
    ttl = env.settings.access_token_ttl
    monkeypatch.setattr(idp.clock, "now", lambda: issued + ttl - 2)
    assert introspect(env, client, secret, token).json()["active"] is True  # guard: still valid just before exp
    monkeypatch.setattr(idp.clock, "now", lambda: issued + ttl + 1)
    assert_inactive(introspect(env, client, secret, token))


@pytest.mark.parametrize("garbage", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "x" * 5000, "...", "ä.ö.ü"])
def test_rfc7662_garbage_token_is_inactive(env: Env, garbage: str) -> None:
    client, secret = env.register()
    assert_inactive(introspect(env, client, secret, garbage))


def _claims_like(env: Env, client: Any, secret: str | None) -> tuple[str, dict[str, Any]]:
    token = env.token(client, secret)
    resp = introspect(env, client, secret, token).json()
    claims = {k: resp[k] for k in ("iss", "sub", "aud", "client_id", "iat", "exp", "jti", "scope")}
    return token, claims


def test_rfc7662_token_signed_by_a_foreign_key_is_inactive(env: Env) -> None:
    client, secret = env.register()
    _, claims = _claims_like(env, client, secret)
    alg = env.settings.signing_alg
    foreign = PrivateKey.generate(alg)
    assert_inactive(introspect(env, client, secret, foreign.sign({**claims, "jti": "f1"})))
    # Same, but claiming our kid: the signature does not verify with our key.
    our_kid = env.provider.keys.signer().kid
    impostor = PrivateKey(our_kid, foreign.alg, foreign.key)
    assert_inactive(introspect(env, client, secret, impostor.sign({**claims, "jti": "f2"})))


def test_rfc7662_token_with_another_issuer_or_typ_is_inactive_even_if_signed_by_us(env: Env) -> None:
    """Signed with the IdP's real key, but not a token this issuer would have issued."""
    client, secret = env.register()
    _, claims = _claims_like(env, client, secret)
    signer = env.provider.keys.signer()
    assert introspect(env, client, secret, signer.sign({**claims, "jti": "ok-1"})).json()["active"] is True  # guard
    assert_inactive(introspect(env, client, secret, signer.sign({**claims, "jti": "x1", "iss": "https://evil.example"})))
    assert_inactive(introspect(env, client, secret, signer.sign({**claims, "jti": "x2"}, typ="JWT")))
    assert_inactive(introspect(env, client, secret, signer.sign({k: v for k, v in claims.items() if k != "exp"} | {"jti": "x3"})))
    assert_inactive(introspect(env, client, secret, signer.sign({k: v for k, v in claims.items() if k != "jti"})))


def test_rfc7662_4_other_client_without_the_audience_sees_inactive(env: Env) -> None:
    owner, owner_secret = env.register()
    stranger, stranger_secret = env.register(audiences=(OTHER_AUDIENCE,))
    token = env.token(owner, owner_secret)
    assert_inactive(introspect(env, stranger, stranger_secret, token))


def test_rfc7662_4_resource_server_holding_the_audience_sees_active(env: Env) -> None:
    owner, owner_secret = env.register()
    resource_server, rs_secret = env.register(capabilities="logging/setLevel", audiences=(AUDIENCE,), kind="resource_server")
    token = env.token(owner, owner_secret)
    body = introspect(env, resource_server, rs_secret, token).json()
    assert body["active"] is True
    assert body["client_id"] == owner.client_id and body["aud"] == AUDIENCE


def test_rfc7662_4_another_client_of_the_same_audience_sees_inactive(env: Env) -> None:
    """A client registered for the audience is not the protected resource: the owner's token,
    introspected by a fellow client, is {"active": false} with no claims (RFC 7662 §4)."""
    owner, owner_secret = env.register()
    fellow, fellow_secret = env.register(audiences=(AUDIENCE,))
    token = env.token(owner, owner_secret)
    assert introspect(env, owner, owner_secret, token).json()["active"] is True  # guard: the token is valid
    assert_inactive(introspect(env, fellow, fellow_secret, token))
    # Also when it names the token, the hint or the resource; and with client_secret_post.
    post_fellow, post_secret = env.register(audiences=(AUDIENCE, OTHER_AUDIENCE), auth_method="client_secret_post")
    resp = env.http.post("/introspect", data={"token": token, "token_type_hint": "access_token", "client_id": post_fellow.client_id,
                                              "client_secret": post_secret, "resource": AUDIENCE})
    assert_inactive(resp)


def test_rfc7662_4_resource_server_of_another_audience_sees_inactive(env: Env) -> None:
    owner, owner_secret = env.register()
    other_rs, rs_secret = env.register(capabilities="logging/setLevel", audiences=(OTHER_AUDIENCE,), kind="resource_server")
    assert_inactive(introspect(env, other_rs, rs_secret, env.token(owner, owner_secret)))


@pytest.mark.parametrize("how", ["none", "wrong_secret", "unknown_client"])
def test_rfc7662_2_1_introspection_requires_client_authentication(env: Env, how: str) -> None:
    client, secret = env.register()
    token = env.token(client, secret)
    before = env.counts()
    if how == "none":
        resp = env.http.post("/introspect", data={"token": token})
    elif how == "wrong_secret":
        resp = introspect(env, client, "cbsts_wrong", token)
    else:
        resp = env.http.post("/introspect", data={"token": token}, headers={"Authorization": basic("nobody", "x")})
    body = assert_oauth_error(resp, 401, "invalid_client")
    assert "active" not in body
    assert env.counts() == before


def test_rfc7662_2_1_missing_token_is_invalid_request(env: Env) -> None:
    client, secret = env.register()
    resp = env.http.post("/introspect", data={}, headers={"Authorization": basic(client.client_id, secret)})
    assert_oauth_error(resp, 400, "invalid_request")


@pytest.mark.parametrize("path", ["/introspect", "/revoke"])
def test_rfc6749_3_1_token_repeated_after_an_empty_one_is_invalid_request(env: Env, path: str) -> None:
    """``token=&token=<real token>``: the parameter is repeated, whatever the first copy holds."""
    client, secret = env.register()
    token = env.token(client, secret)
    before = env.counts()
    resp = env.http.post(path, content=f"token=&token={token}".encode(),
                         headers={"Authorization": basic(client.client_id, secret), "Content-Type": FORM})
    assert_oauth_error(resp, 400, "invalid_request")
    assert env.counts() == before
    assert introspect(env, client, secret, token).json()["active"] is True  # not revoked


def test_rfc7662_introspection_writes_nothing(env: Env) -> None:
    client, secret = env.register()
    token = env.token(client, secret)
    before = env.counts()
    for t in (token, "garbage"):
        introspect(env, client, secret, t)
    assert env.counts() == before


# ---------------------------------------------------------------------------------------------
# Revocation (RFC 7009)
# ---------------------------------------------------------------------------------------------


def test_rfc7009_2_1_own_token_revoked_then_inactive_with_audit_record(env: Env) -> None:
    client, secret = env.register()
    token = env.token(client, secret)
    jti = introspect(env, client, secret, token).json()["jti"]
    before = env.counts()
    resp = revoke(env, client, secret, token)
    assert resp.status_code == 200
    assert resp.headers["cache-control"] == "no-store"
    after = env.counts()
    assert after["revoked_tokens"] == before["revoked_tokens"] + 1
    assert after["audit_events"] == before["audit_events"] + 1
    [record] = env.audit("token.revoked", jti=jti)
    assert record["client_id"] == client.client_id
    assert_inactive(introspect(env, client, secret, token))


def test_rfc7009_revoked_token_is_refused_for_a_resource_server_too(env: Env) -> None:
    owner, owner_secret = env.register()
    rs, rs_secret = env.register(capabilities="logging/setLevel", kind="resource_server")
    token = env.token(owner, owner_secret)
    assert introspect(env, rs, rs_secret, token).json()["active"] is True
    revoke(env, owner, owner_secret, token)
    assert_inactive(introspect(env, rs, rs_secret, token))


def test_rfc7009_2_1_another_clients_token_is_unauthorized_client_and_nothing_written(env: Env) -> None:
    owner, owner_secret = env.register()
    other, other_secret = env.register(kind="resource_server")  # it may introspect, but not revoke
    token = env.token(owner, owner_secret)
    before = env.counts()
    assert_oauth_error(revoke(env, other, other_secret, token), 400, "unauthorized_client")
    assert env.counts() == before
    assert introspect(env, owner, owner_secret, token).json()["active"] is True


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "x" * 3000])
def test_rfc7009_2_2_invalid_token_is_200_and_nothing_written(env: Env, token: str) -> None:
    client, secret = env.register()
    before = env.counts()
    resp = revoke(env, client, secret, token)
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    assert env.counts() == before


def test_rfc7009_2_2_expired_token_is_200_and_nothing_written(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    client, secret = env.register()
    token = env.token(client, secret)
    before = env.counts()
    monkeypatch.setattr(idp.clock, "now", lambda: int(time.time()) + env.settings.access_token_ttl + 5)
    assert revoke(env, client, secret, token).status_code == 200
    assert env.counts() == before


def test_rfc7009_revoking_twice_is_fine_and_recorded_once(env: Env) -> None:
    client, secret = env.register()
    token = env.token(client, secret)
    jti = introspect(env, client, secret, token).json()["jti"]
    before = env.counts()
    assert revoke(env, client, secret, token).status_code == 200
    assert revoke(env, client, secret, token).status_code == 200
    after = env.counts()
    assert after["revoked_tokens"] == before["revoked_tokens"] + 1
    assert len(env.audit("token.revoked", jti=jti)) == 1


def test_rfc7009_2_1_token_type_hint_refresh_token_still_revokes_an_access_token(env: Env) -> None:
    client, secret = env.register()
    token = env.token(client, secret)
    assert revoke(env, client, secret, token, token_type_hint="refresh_token").status_code == 200
    assert_inactive(introspect(env, client, secret, token))


@pytest.mark.parametrize("how", ["none", "wrong_secret"])
def test_rfc7009_2_1_revocation_requires_client_authentication(env: Env, how: str) -> None:
    client, secret = env.register()
    token = env.token(client, secret)
    before = env.counts()
    if how == "none":
        resp = env.http.post("/revoke", data={"token": token})
    else:
        resp = revoke(env, client, "cbsts_wrong", token)
    assert_oauth_error(resp, 401, "invalid_client")
    assert env.counts() == before
    assert introspect(env, client, secret, token).json()["active"] is True


def test_rfc7009_2_1_missing_token_is_invalid_request(env: Env) -> None:
    client, secret = env.register()
    before = env.counts()
    assert_oauth_error(env.http.post("/revoke", data={}, headers={"Authorization": basic(client.client_id, secret)}),
                       400, "invalid_request")
    assert env.counts() == before


def test_rfc7009_revocation_does_not_affect_other_tokens_of_the_client(env: Env) -> None:
    client, secret = env.register()
    first, second = env.token(client, secret), env.token(client, secret)
    revoke(env, client, secret, first)
    assert_inactive(introspect(env, client, secret, first))
    assert introspect(env, client, secret, second).json()["active"] is True


# ---------------------------------------------------------------------------------------------
# Key lifecycle (fresh provider per test: the conftest db_url -> settings -> provider -> http chain)
# ---------------------------------------------------------------------------------------------


def test_rfc7662_token_of_a_retired_signing_key_is_inactive(provider: Any, http: Any) -> None:
    from idp_testing import register

    client, secret = register(provider)
    auth = {"Authorization": basic(client.client_id, secret)}
    old_token = http.post("/token", data={"grant_type": "client_credentials"}, headers=auth).json()["access_token"]
    old_kid = provider.keys.signer().kid
    provider.keys.rotate(actor="test", immediate=True)
    new_token = http.post("/token", data={"grant_type": "client_credentials"}, headers=auth).json()["access_token"]
    assert provider.keys.signer().kid != old_kid
    # Both keys verify while the old one is still published ...
    for token in (old_token, new_token):
        assert http.post("/introspect", data={"token": token}, headers=auth).json()["active"] is True
    provider.keys.retire(old_kid, actor="test")
    # ... and once it is retired, its tokens are no longer active; the new key's still are.
    assert_inactive(http.post("/introspect", data={"token": old_token}, headers=auth))
    assert http.post("/introspect", data={"token": new_token}, headers=auth).json()["active"] is True
    assert old_kid not in {k["kid"] for k in http.get("/jwks").json()["keys"]}
