"""The refresh token grant (RFC 6749 §6) with rotation and family revocation (RFC 9700 §4.14.2),
through the real ASGI app on SQLite and PostgreSQL. The retry grace rule (docs/authorization.md):
one retry of a spent refresh token within ``refresh_retry_grace`` seconds, while its successor
is unused, gets a fresh successor; anything else that presents a spent token revokes the family.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from codeflow_testing import (
    ALICE,
    ensure_resource,
    get_code,
    introspect_active,
    redeem,
    refresh,
    register_interactive,
    revoked_jtis,
)
from idp_testing import AUDIENCE
from test_authorization_code_grant import claims_of
from test_token_endpoint import Env, assert_oauth_error, env  # noqa: F401 - env is a fixture

import idp.clock
from idp.oauth2.subject import Subject

SCOPE = "tools/call:echo tools/call:deploy offline_access"


@pytest.fixture(autouse=True)
def _resource(env: Env) -> None:
    ensure_resource(env)


def login(env: Env, client: Any, scope: str = SCOPE, secret: str | None = None, **kw: Any) -> dict[str, Any]:
    code, verifier, _ = get_code(env, client, scope=scope, **kw)
    resp = redeem(env, client, code, verifier, secret=secret)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def ok(resp: Any) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_refresh_tokens_only_with_offline_access_and_the_refresh_grant(env: Env) -> None:
    client, _ = register_interactive(env)
    assert "refresh_token" not in login(env, client, scope="tools/call:echo")
    body = login(env, client)
    assert body["refresh_token"].startswith("cbstr_") and "offline_access" in body["scope"].split()
    no_grant, _ = register_interactive(env, grant_types=("authorization_code",))
    body = login(env, no_grant)
    assert "refresh_token" not in body and "offline_access" not in body["scope"].split()


def test_rfc6749_6_rotation_on_every_use(env: Env) -> None:
    client, _ = register_interactive(env)
    first = login(env, client)
    second = ok(refresh(env, client, first["refresh_token"]))
    third = ok(refresh(env, client, second["refresh_token"]))
    assert len({first["refresh_token"], second["refresh_token"], third["refresh_token"]}) == 3
    claims = claims_of(third["access_token"])
    assert (claims["sub"], claims["aud"], claims["scope"]) == (ALICE.id, AUDIENCE, "tools/call:echo tools/call:deploy")
    assert introspect_active(env, third["access_token"])
    jtis = {claims_of(b["access_token"])["jti"] for b in (first, second, third)}
    families = {env.provider.token_families.family_of(j)["family_id"] for j in jtis}  # type: ignore[index]
    assert len(families) == 1


def test_refresh_token_replay_revokes_the_whole_family(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = register_interactive(env)
    first = login(env, client)
    second = ok(refresh(env, client, first["refresh_token"]))
    # Outside the retry grace, the spent token comes back (a thief, or the client after a leak).
    later = idp.clock.now() + env.settings.refresh_retry_grace + 1
    monkeypatch.setattr(idp.clock, "now", lambda: later)
    assert_oauth_error(refresh(env, client, first["refresh_token"]), 400, "invalid_grant")
    # The legitimate holder's newest refresh token is dead too, and every access token revoked.
    assert_oauth_error(refresh(env, client, second["refresh_token"]), 400, "invalid_grant")
    revoked = revoked_jtis(env)
    for body in (first, second):
        assert not introspect_active(env, body["access_token"])
        assert claims_of(body["access_token"])["jti"] in revoked
    assert len(env.audit("refresh_token.reused", client_id=client.client_id)) == 1


def test_retry_within_grace_works_once(env: Env) -> None:
    client, _ = register_interactive(env)
    first = login(env, client)
    lost = ok(refresh(env, client, first["refresh_token"]))  # the answer the client never received
    retried = ok(refresh(env, client, first["refresh_token"]))
    assert retried["refresh_token"] not in (first["refresh_token"], lost["refresh_token"])
    assert introspect_active(env, retried["access_token"])
    assert len(env.audit("refresh_token.retried", client_id=client.client_id)) == 1
    # The successor of the retry works on.
    onward = ok(refresh(env, client, retried["refresh_token"]))
    # A second retry of the same spent token is a replay: the family is revoked.
    assert_oauth_error(refresh(env, client, first["refresh_token"]), 400, "invalid_grant")
    assert_oauth_error(refresh(env, client, onward["refresh_token"]), 400, "invalid_grant")
    assert not introspect_active(env, onward["access_token"])


def test_the_invalidated_successor_coming_back_revokes_the_family(env: Env) -> None:
    """Two parties held the refresh token: one refreshed (R2), the other retried within grace (R3).
    R2 showing up afterwards means the token was shared: the family is revoked, R3 included."""
    client, _ = register_interactive(env)
    first = login(env, client)
    r2 = ok(refresh(env, client, first["refresh_token"]))
    r3 = ok(refresh(env, client, first["refresh_token"]))
    assert_oauth_error(refresh(env, client, r2["refresh_token"]), 400, "invalid_grant")
    assert_oauth_error(refresh(env, client, r3["refresh_token"]), 400, "invalid_grant")
    assert not introspect_active(env, r3["access_token"])


def test_no_retry_once_the_successor_was_used(env: Env) -> None:
    client, _ = register_interactive(env)
    first = login(env, client)
    second = ok(refresh(env, client, first["refresh_token"]))
    third = ok(refresh(env, client, second["refresh_token"]))  # the successor was received and used
    assert_oauth_error(refresh(env, client, first["refresh_token"]), 400, "invalid_grant")
    assert_oauth_error(refresh(env, client, third["refresh_token"]), 400, "invalid_grant")


def test_no_retry_grace_when_it_is_off(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = register_interactive(env)
    first = login(env, client)
    ok(refresh(env, client, first["refresh_token"]))
    monkeypatch.setattr(env.provider.token_families._settings, "refresh_retry_grace", 0)
    assert_oauth_error(refresh(env, client, first["refresh_token"]), 400, "invalid_grant")


def test_rfc6749_6_scope_may_narrow_never_widen(env: Env) -> None:
    client, _ = register_interactive(env)
    first = login(env, client)
    narrow = ok(refresh(env, client, first["refresh_token"], scope="tools/call:echo offline_access"))
    assert claims_of(narrow["access_token"])["scope"] == "tools/call:echo"
    # The successor keeps the original scope (RFC 6749 §6).
    full = ok(refresh(env, client, narrow["refresh_token"]))
    assert claims_of(full["access_token"])["scope"] == "tools/call:echo tools/call:deploy"
    for wider in ("tools/call:*", "tools/call:echo tools/call:admin", "openid", "tools/call:echo email", "tools/cal"):
        assert_oauth_error(refresh(env, client, full["refresh_token"], scope=wider), 400, "invalid_scope")
    # A refused refresh spent nothing.
    assert ok(refresh(env, client, full["refresh_token"]))["refresh_token"]


def test_refresh_token_of_another_client_is_refused(env: Env) -> None:
    victim, _ = register_interactive(env)
    thief, _ = register_interactive(env)
    body = login(env, victim)
    assert_oauth_error(refresh(env, thief, body["refresh_token"]), 400, "invalid_grant")
    assert ok(refresh(env, victim, body["refresh_token"]))


def test_confidential_client_must_authenticate_to_refresh(env: Env) -> None:
    client, secret = register_interactive(env, public=False)
    body = login(env, client, secret=secret)
    assert_oauth_error(refresh(env, client, body["refresh_token"]), 401, "invalid_client")
    assert ok(refresh(env, client, body["refresh_token"], secret=secret))


def test_rfc8707_resource_on_refresh_must_be_the_bound_one(env: Env) -> None:
    other = ensure_resource(env, "https://other.example.test/mcp")
    client, _ = register_interactive(env)
    body = login(env, client)
    assert_oauth_error(refresh(env, client, body["refresh_token"], resource=other), 400, "invalid_target")
    assert ok(refresh(env, client, body["refresh_token"], resource=AUDIENCE))


def test_a_removed_resource_gets_no_more_tokens(env: Env) -> None:
    uri = ensure_resource(env, "https://gone.example.test/mcp")
    client, _ = register_interactive(env)
    body = login(env, client, resource=uri)
    env.provider.resources.remove(uri)
    assert_oauth_error(refresh(env, client, body["refresh_token"]), 400, "invalid_target")


def test_expired_refresh_token_is_refused(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = register_interactive(env)
    body = login(env, client)
    later = idp.clock.now() + env.settings.refresh_token_ttl + 1
    monkeypatch.setattr(idp.clock, "now", lambda: later)
    assert_oauth_error(refresh(env, client, body["refresh_token"]), 400, "invalid_grant")


def test_garbage_refresh_tokens_are_clean_400s(env: Env) -> None:
    client, _ = register_interactive(env)
    for bad in ("cbstr_nope", "x" * 300, "\u00e9\u2028", "a" * 9000):
        assert_oauth_error(refresh(env, client, bad), 400, "invalid_grant")
    assert_oauth_error(env.http.post("/token", data={"grant_type": "refresh_token", "client_id": client.client_id}),
                       400, "invalid_request")


def test_rfc7009_revoking_a_refresh_token_revokes_its_family(env: Env) -> None:
    client, _ = register_interactive(env)
    body = login(env, client)
    resp = env.http.post("/revoke", data={"token": body["refresh_token"], "client_id": client.client_id})
    assert resp.status_code == 200
    assert_oauth_error(refresh(env, client, body["refresh_token"]), 400, "invalid_grant")
    assert not introspect_active(env, body["access_token"])


def test_another_client_cannot_revoke_a_refresh_token(env: Env) -> None:
    victim, _ = register_interactive(env)
    other, _ = register_interactive(env)
    body = login(env, victim)
    assert env.http.post("/revoke", data={"token": body["refresh_token"], "client_id": other.client_id}).status_code == 200
    assert ok(refresh(env, victim, body["refresh_token"]))


def test_revoke_for_subject_client_and_resource(env: Env) -> None:
    bob = Subject("bob-" + secrets.token_hex(4))
    a, _ = register_interactive(env)
    b, _ = register_interactive(env)
    ba, bb = login(env, a, subject=bob), login(env, b, subject=bob)
    families = env.provider.token_families
    assert families.revoke_for(bob.id, client_id=a.client_id, reason="test", actor="cli") == 1
    assert_oauth_error(refresh(env, a, ba["refresh_token"]), 400, "invalid_grant")
    assert not introspect_active(env, ba["access_token"])
    assert ok(refresh(env, b, bb["refresh_token"]))  # the other client's grant is untouched
    assert families.revoke_for(bob.id, resource="https://nowhere.example.test/mcp", reason="test", actor="cli") == 0
    assert families.revoke_for(bob.id, reason="test", actor="cli") == 1
    records = [json.loads(r["data"]) for r in env.audit("token_family.revoked", client_id=b.client_id)]
    assert records and records[-1]["reason"] == "test"


def test_disabling_the_client_ends_its_refreshes(env: Env) -> None:
    client, _ = register_interactive(env)
    body = login(env, client)
    env.provider.clients.set_enabled(client.client_id, False)
    assert_oauth_error(refresh(env, client, body["refresh_token"]), 401, "invalid_client")
    assert not introspect_active(env, body["access_token"])


def test_concurrent_refreshes_of_one_token_never_fork_the_family(env: Env) -> None:
    """Several refreshes of one token at once: at most one rotation and one grace retry succeed;
    any further presentation is a replay, which revokes the family (and so every answer given, or,
    when it comes first, the answers are never handed out)."""
    import asyncio

    import httpx

    client, _ = register_interactive(env)
    body = login(env, client)

    async def race() -> list[Any]:
        transport = httpx.ASGITransport(app=env.http.app)
        async with httpx.AsyncClient(transport=transport, base_url=env.settings.issuer) as ac:
            form = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": client.client_id}
            return list(await asyncio.gather(*(ac.post("/token", data=form) for _ in range(4))))

    results = asyncio.run(race())
    good = [r.json() for r in results if r.status_code == 200]
    assert len(good) <= 2, [r.text for r in results]
    assert all(r.json()["error"] == "invalid_grant" for r in results if r.status_code != 200)
    live = [g for g in good if refresh(env, client, g["refresh_token"]).status_code == 200]
    assert len(live) <= 1  # never two live chains
    # Four presentations of one token: at least two were replays, so the family is revoked.
    assert not any(introspect_active(env, g["access_token"]) for g in good)
