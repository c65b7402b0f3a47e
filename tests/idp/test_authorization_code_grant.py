"""The authorization code grant (RFC 6749 §4.1) end to end through the real ASGI app, on SQLite
and PostgreSQL: codes come from parse_authorization_request + authorization_response (what the
pages call), tokens from POST /token. Each attack is sent and seen refused; a refusal before
redemption spends nothing (the legitimate client still redeems its code afterwards).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import sqlalchemy as sa
from codeflow_testing import (
    ALICE,
    LOOPBACK,
    REDIRECT,
    ensure_resource,
    get_code,
    introspect_active,
    new_verifier,
    params,
    parse,
    query,
    redeem,
    refresh,
    register_interactive,
    revoked_jtis,
    token,
)
from idp_testing import AUDIENCE
from test_token_endpoint import Env, assert_oauth_error, env  # noqa: F401 - env is a fixture

import idp.clock
from idp.oauth2.authorization_request import AuthorizationError, InvalidAuthorizationRequest
from sdk.jws import b64url_decode


def claims_of(jwt: str) -> dict[str, Any]:
    return json.loads(b64url_decode(jwt.split(".")[1]))


@pytest.fixture(autouse=True)
def _resource(env: Env) -> None:
    ensure_resource(env)


def count(env: Env, table: str) -> int:
    with env.provider.engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


def test_rfc6749_4_1_public_client_gets_a_token_for_the_registered_resource(env: Env) -> None:
    client, _ = register_interactive(env)
    code, verifier, _ = get_code(env, client, scope="tools/call:echo")
    resp = redeem(env, client, code, verifier)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert resp.headers["cache-control"] == "no-store"
    assert body["token_type"] == "Bearer" and body["scope"] == "tools/call:echo"
    assert "refresh_token" not in body and "id_token" not in body  # neither offline_access nor openid asked
    claims = claims_of(body["access_token"])
    assert (claims["sub"], claims["aud"], claims["client_id"], claims["scope"]) == (
        ALICE.id, AUDIENCE, client.client_id, "tools/call:echo")
    assert introspect_active(env, body["access_token"])
    family = env.provider.token_families.family_of(claims["jti"])
    assert family is not None and family["subject"] == ALICE.id and family["revoked_at"] is None


def test_the_person_may_grant_less_than_requested(env: Env) -> None:
    client, _ = register_interactive(env)
    code, verifier, _ = get_code(env, client, scope="tools/call:echo tools/call:deploy", granted="tools/call:echo")
    body = redeem(env, client, code, verifier).json()
    assert claims_of(body["access_token"])["scope"] == "tools/call:echo"


def test_granting_more_than_requested_is_a_caller_bug_and_refused(env: Env) -> None:
    client, _ = register_interactive(env)
    with pytest.raises(ValueError):
        get_code(env, client, scope="tools/call:echo", granted="tools/call:*")


def test_confidential_client_authenticates_and_cannot_pass_as_public(env: Env) -> None:
    client, secret = register_interactive(env, public=False)
    code, verifier, _ = get_code(env, client)
    # Only its client_id (method "none"): refused, and the code is not spent.
    assert_oauth_error(redeem(env, client, code, verifier), 401, "invalid_client")
    assert_oauth_error(redeem(env, client, code, verifier, secret="wrong"), 401, "invalid_client")
    assert redeem(env, client, code, verifier, secret=secret).status_code == 200


def test_a_public_client_gets_no_client_credentials_token(env: Env) -> None:
    client, _ = register_interactive(env)
    assert_oauth_error(token(env, client, grant_type="client_credentials"), 400, "unauthorized_client")


def test_rfc6749_4_1_2_code_is_stored_only_as_a_hash(env: Env) -> None:
    client, _ = register_interactive(env)
    code, _, _ = get_code(env, client)
    with env.provider.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT code_hash, data FROM authorization_codes")).all()
    assert rows and all(code not in r.code_hash and code not in r.data for r in rows)


# --- attacks -------------------------------------------------------------------------------


def test_rfc6749_4_1_2_code_replay_revokes_every_token_issued_from_it(env: Env) -> None:
    client, _ = register_interactive(env)
    code, verifier, _ = get_code(env, client, scope="tools/call:echo offline_access")
    first = redeem(env, client, code, verifier).json()
    jti = claims_of(first["access_token"])["jti"]
    assert introspect_active(env, first["access_token"]) and "refresh_token" in first

    again = redeem(env, client, code, verifier)
    assert_oauth_error(again, 400, "invalid_grant")
    assert not introspect_active(env, first["access_token"])
    assert jti in revoked_jtis(env)  # resource servers that verify offline learn it too
    assert_oauth_error(refresh(env, client, first["refresh_token"]), 400, "invalid_grant")
    audit = env.audit("authorization_code.replayed", client_id=client.client_id)
    assert len(audit) == 1 and json.loads(audit[0]["data"])["revoked_access_tokens"] == 1


def test_code_redeemed_by_another_client_is_refused_and_not_spent(env: Env) -> None:
    victim, _ = register_interactive(env)
    thief, _ = register_interactive(env)
    code, verifier, _ = get_code(env, victim)
    assert_oauth_error(redeem(env, thief, code, verifier), 400, "invalid_grant")
    assert redeem(env, victim, code, verifier).status_code == 200


def test_rfc7636_wrong_or_missing_verifier_is_refused_and_spends_nothing(env: Env) -> None:
    client, _ = register_interactive(env)
    code, verifier, _ = get_code(env, client)
    before = count(env, "token_families")
    assert_oauth_error(redeem(env, client, code, new_verifier()), 400, "invalid_grant")
    assert_oauth_error(redeem(env, client, code, verifier[:-1] + ("A" if verifier[-1] != "A" else "B")), 400,
                       "invalid_grant")
    assert_oauth_error(token(env, client, grant_type="authorization_code", code=code, redirect_uri=REDIRECT), 400,
                       "invalid_request")  # code_verifier is required
    assert_oauth_error(redeem(env, client, code, "short"), 400, "invalid_grant")
    assert count(env, "token_families") == before
    assert redeem(env, client, code, verifier).status_code == 200


def test_rfc6749_4_1_3_redirect_uri_must_equal_the_authorization_requests(env: Env) -> None:
    client, _ = register_interactive(env, redirect_uris=(REDIRECT, "https://app.example.test/other"))
    code, verifier, _ = get_code(env, client)
    for wrong in ("https://app.example.test/other", REDIRECT + "/", REDIRECT + "?x=1", "https://evil.test/callback"):
        assert_oauth_error(redeem(env, client, code, verifier, redirect_uri=wrong), 400, "invalid_grant")
    # Omitted although the client has several: required.
    assert_oauth_error(redeem(env, client, code, verifier, redirect_uri=None), 400, "invalid_grant")
    assert redeem(env, client, code, verifier).status_code == 200


def test_redirect_uri_may_be_omitted_only_when_it_is_the_only_registered_one(env: Env) -> None:
    client, _ = register_interactive(env)
    code, verifier, _ = get_code(env, client, redirect_uri=None)
    assert redeem(env, client, code, verifier, redirect_uri=None).status_code == 200
    # A loopback URI on a port of the moment is not the registered string: then it must be sent.
    loop, _ = register_interactive(env, redirect_uris=(LOOPBACK,))
    code, verifier, _ = get_code(env, loop, redirect_uri="http://127.0.0.1:51234/callback")
    assert_oauth_error(redeem(env, loop, code, verifier, redirect_uri=None), 400, "invalid_grant")
    assert_oauth_error(redeem(env, loop, code, verifier, redirect_uri="http://127.0.0.1:51235/callback"), 400,
                       "invalid_grant")
    assert redeem(env, loop, code, verifier, redirect_uri="http://127.0.0.1:51234/callback").status_code == 200


def test_rfc8707_resource_at_the_token_endpoint_must_be_the_bound_one(env: Env) -> None:
    other = ensure_resource(env, "https://other.example.test/mcp")
    client, _ = register_interactive(env)
    code, verifier, _ = get_code(env, client)
    assert_oauth_error(redeem(env, client, code, verifier, resource=other), 400, "invalid_target")
    body = redeem(env, client, code, verifier, resource=AUDIENCE).json()
    assert claims_of(body["access_token"])["aud"] == AUDIENCE


def test_rfc6749_4_1_2_expired_code_is_refused(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = register_interactive(env)
    code, verifier, _ = get_code(env, client)
    later = idp.clock.now() + env.settings.authorization_code_ttl + 1
    monkeypatch.setattr(idp.clock, "now", lambda: later)
    assert_oauth_error(redeem(env, client, code, verifier), 400, "invalid_grant")


def test_unknown_and_malformed_codes_are_clean_400s(env: Env) -> None:
    client, _ = register_interactive(env)
    verifier = new_verifier()
    for bad in ("nope", "x" * 300, "\u2028\u00e9", "a" * 5000):
        assert_oauth_error(redeem(env, client, bad, verifier), 400, "invalid_grant")
    resp = env.http.post("/token", content=b"grant_type=authorization_code&code=%00&code_verifier=x&client_id="
                         + client.client_id.encode(), headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_oauth_error(resp, 400, "invalid_request")
    resp = env.http.post("/token", content=b"grant_type=authorization_code&code=" + b"A" * 20000,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 413 and resp.json()["error"] == "invalid_request"


def test_concurrent_redemptions_yield_one_token_and_revoke_it(env: Env) -> None:
    """Redemptions of one code racing: exactly one wins the atomic UPDATE; the losers count as
    replays, so the winner's token ends revoked too, or (replay first) is never handed out."""
    client, _ = register_interactive(env)
    code, verifier, _ = get_code(env, client)

    async def both() -> list[Any]:
        import httpx

        transport = httpx.ASGITransport(app=env.http.app)
        async with httpx.AsyncClient(transport=transport, base_url=env.settings.issuer) as ac:
            form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
                    "redirect_uri": REDIRECT, "client_id": client.client_id}
            return list(await asyncio.gather(*(ac.post("/token", data=form) for _ in range(4))))

    results = asyncio.run(both())
    ok = [r for r in results if r.status_code == 200]
    assert len(ok) <= 1, [r.text for r in results]
    assert all(r.json()["error"] == "invalid_grant" for r in results if r.status_code != 200)
    assert all(not introspect_active(env, r.json()["access_token"]) for r in ok)
    with env.provider.engine.connect() as conn:
        families = conn.execute(sa.text("SELECT revoked_at FROM token_families WHERE client_id = :c"),
                                {"c": client.client_id}).all()
    assert len(families) == 1 and families[0].revoked_at is not None


# --- the authorization request (what /authorize validates) ----------------------------------


def test_rfc9207_iss_and_state_are_in_error_redirects(env: Env) -> None:
    client, _ = register_interactive(env)
    with pytest.raises(AuthorizationError) as exc:
        parse(env, params(client, resource="https://unregistered.example.test/mcp"))
    q = query(exc.value.redirect_url(env.settings.issuer))
    assert q == {"error": "invalid_target", "error_description": q["error_description"], "state": "st-1",
                 "iss": env.settings.issuer}
    assert exc.value.redirect_url(env.settings.issuer).startswith(REDIRECT + "?")


def test_rfc8707_a_token_for_an_unregistered_resource_is_refused(env: Env) -> None:
    client, _ = register_interactive(env)
    for resource in ("https://unregistered.example.test/mcp", AUDIENCE + "/", None):
        with pytest.raises(AuthorizationError) as exc:
            parse(env, params(client, resource=resource))
        assert exc.value.error == "invalid_target"
    p = params(client)
    p["resource"] = [AUDIENCE, "https://other.example.test/mcp"]
    with pytest.raises(AuthorizationError, match="one resource"):
        parse(env, p)


@pytest.mark.parametrize(("change", "error"), [
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"response_type": None}, "invalid_request"),
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge_method": None}, "invalid_request"),
    ({"code_challenge": None}, "invalid_request"),
    ({"code_challenge": "tooshort"}, "invalid_request"),
    ({"scope": "tools/cal:echo"}, "invalid_scope"),  # strict: a typo is an error
    ({"scope": "tools/call"}, "invalid_scope"),
    ({"response_mode": "fragment"}, "invalid_request"),
    ({"request": "eyJ..."}, "request_not_supported"),
    ({"prompt": "none login"}, "invalid_request"),
    ({"max_age": "-1"}, "invalid_request"),
    ({"nonce": "n" * 600}, "invalid_request"),
    ({"scope": "x" * 5000}, "invalid_request"),
])
def test_bad_authorization_requests_redirect_an_error_with_iss(env: Env, change: dict[str, str | None],
                                                                error: str) -> None:
    client, _ = register_interactive(env)
    p = params(client)
    for k, v in change.items():
        if v is None:
            p.pop(k, None)
        else:
            p[k] = [v]
    with pytest.raises(AuthorizationError) as exc:
        parse(env, p)
    assert exc.value.error == error
    q = query(exc.value.redirect_url(env.settings.issuer))
    assert q["iss"] == env.settings.issuer and q["error"] == error and q["state"] == "st-1"


def test_repeated_parameters_are_refused(env: Env) -> None:
    client, _ = register_interactive(env)
    for name in ("scope", "code_challenge", "response_type", "nonce"):
        p = params(client, nonce="n1")
        p[name] = p[name] * 2
        with pytest.raises(AuthorizationError, match="repeated"):
            parse(env, p)
    for name in ("client_id", "redirect_uri"):  # before the redirect URI is trusted: no redirect
        p = params(client)
        p[name] = p[name] * 2
        with pytest.raises(InvalidAuthorizationRequest, match="repeated"):
            parse(env, p)
    p = params(client)
    p["state"] = ["a", "b"]
    with pytest.raises(AuthorizationError) as exc:
        parse(env, p)
    assert "state" not in query(exc.value.redirect_url(env.settings.issuer))


def test_unknown_or_disabled_client_is_never_redirected(env: Env) -> None:
    client, _ = register_interactive(env)
    for p in (params(client, client_id="nope"), params(client, client_id=None), params(client, client_id="\x00a"),
              params(client, client_id="c" * 600)):
        with pytest.raises(InvalidAuthorizationRequest):
            parse(env, p)
    env.provider.clients.set_enabled(client.client_id, False)
    with pytest.raises(InvalidAuthorizationRequest, match="disabled"):
        parse(env, params(client))


def test_a_client_not_registered_for_the_code_grant_gets_unauthorized_client(env: Env) -> None:
    client, _ = env.provider.clients.add("cc-only-" + client_suffix(), capabilities="tools/call:*",
                                         audiences=[AUDIENCE])
    with pytest.raises(InvalidAuthorizationRequest):  # it has no redirect URI, so nowhere to send it
        parse(env, params(client))


def client_suffix() -> str:
    import secrets

    return secrets.token_hex(4)


def test_operator_registered_capabilities_are_a_ceiling(env: Env) -> None:
    client, _ = register_interactive(env, capabilities="tools/call:echo")
    with pytest.raises(AuthorizationError) as exc:
        parse(env, params(client, scope="tools/call:deploy"))
    assert exc.value.error == "invalid_scope"
    assert parse(env, params(client, scope="tools/call:echo")).scope.to_scope() == "tools/call:echo"
    # Without registered capabilities, policy and consent decide (no ceiling here).
    free, _ = register_interactive(env)
    assert parse(env, params(free, scope="tools/call:deploy")).scope.to_scope() == "tools/call:deploy"


def test_request_round_trips_through_json(env: Env) -> None:
    from idp.oauth2.authorization_request import AuthorizationRequest

    client, _ = register_interactive(env)
    req = parse(env, params(client, scope="tools/call:echo openid offline_access", nonce="n-1", prompt="consent",
                            max_age="300"))
    assert AuthorizationRequest.from_json(json.loads(json.dumps(req.to_json()))) == req
    assert req.other_scopes == {"openid", "offline_access"} and req.prompt == {"consent"} and req.max_age == 300


def test_rfc6749_4_1_2_the_redirect_uris_own_query_is_kept(env: Env) -> None:
    client, _ = register_interactive(env, redirect_uris=("https://app.example.test/cb?tenant=7",))
    code, _, req = get_code(env, client, redirect_uri="https://app.example.test/cb?tenant=7")
    from idp.oauth2.authorization_request import error_response

    url = error_response(env.provider, req, "access_denied", "the person said no")
    assert url.startswith("https://app.example.test/cb?tenant=7&")
    assert query(url) == {"tenant": "7", "error": "access_denied", "error_description": "the person said no",
                          "state": "st-1", "iss": env.settings.issuer}


def test_unknown_public_client_and_public_introspection_are_refused(env: Env) -> None:
    resp = env.http.post("/token", data={"grant_type": "authorization_code", "client_id": "no-such-client",
                                         "code": "x", "code_verifier": "v" * 43})
    assert_oauth_error(resp, 401, "invalid_client")
    client, _ = register_interactive(env)
    code, verifier, _ = get_code(env, client)
    access = redeem(env, client, code, verifier).json()["access_token"]
    resp = env.http.post("/introspect", data={"token": access, "client_id": client.client_id})
    assert_oauth_error(resp, 400, "unauthorized_client")


def test_token_issued_audit_names_the_person_and_the_family(env: Env) -> None:
    client, _ = register_interactive(env)
    code, verifier, _ = get_code(env, client)
    jti = claims_of(redeem(env, client, code, verifier).json()["access_token"])["jti"]
    [record] = env.audit("token.issued", jti=jti)
    data = json.loads(record["data"])
    assert data["grant_type"] == "authorization_code" and data["sub"] == ALICE.id and data["family_id"]
    [issued] = [json.loads(r["data"]) for r in env.audit("authorization_code.issued", client_id=client.client_id)]
    assert issued["family_id"] == data["family_id"] and issued["resource"] == AUDIENCE


def test_maintenance_forgets_expired_codes_and_families(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = register_interactive(env)
    code, _, _ = get_code(env, client)
    spent, verifier, _ = get_code(env, client, scope="tools/call:echo offline_access")
    assert "refresh_token" in redeem(env, client, spent, verifier).json()
    before = (count(env, "authorization_codes"), count(env, "token_families"), count(env, "refresh_tokens"))
    assert all(before)
    far = idp.clock.now() + env.settings.refresh_family_lifetime + 2 * 86400
    monkeypatch.setattr(idp.clock, "now", lambda: far)
    # (Provider.maintain runs these; its audit pruning would refuse the moved clock.)
    assert env.provider.authorization_codes.prune() >= 2 and env.provider.token_families.prune() >= 3
    assert env.provider.authorization_codes.get(code) is None and env.provider.authorization_codes.get(spent) is None
    with env.provider.engine.connect() as conn:
        left = conn.execute(sa.text("SELECT COUNT(*) FROM token_families WHERE client_id = :c"),
                            {"c": client.client_id}).scalar_one()
    assert left == 0
