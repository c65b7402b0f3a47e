"""Keys and revocation as the resource server sees them, with real IdP processes: JWKS rotation
(unknown kid → one refetch, bounded rate), revocation within the documented bound (the poll
interval), and failure modes when the IdP is unreachable (503, fail closed; never a 500)."""

from __future__ import annotations

import json
import secrets
import time

import httpx
import pytest

from sdk.jws import PrivateKey
from sdk_server_support import (
    IdP,
    MCPUnderTest,
    ServerProcess,
    claims_for,
    env_for,
    free_port,
    legacy_headers,
    protected_example,
    random_kek,
    rpc,
    sign_raw,
)


def call(srv: MCPUnderTest, token: str) -> httpx.Response:
    return httpx.post(srv.url, json=rpc("tools/call", {"name": "echo", "arguments": {"text": "x"}}),
                      headers=legacy_headers(token), timeout=10)


def _jti(token: str) -> str:
    import base64
    import json

    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]


def test_revoked_token_stops_working_within_the_poll_interval(idp: IdP) -> None:
    poll = 1.0
    with protected_example(idp, stateless=True, json_response=True, revocation_poll_interval=poll,
                           revocation_fail_closed_after=30, tool_rate=None) as srv:
        client = idp.client("tools/call:echo", srv.resource)
        token = idp.token(client, resource=srv.resource)
        assert call(srv, token).status_code == 200  # verified and cached
        assert call(srv, token).status_code == 200
        jti = _jti(token)
        idp.provider.revocations.revoke(jti, client_id=client[0], expires_at=int(time.time()) + 300, actor="test")
        revoked_at = time.monotonic()
        while call(srv, token).status_code == 200:
            assert time.monotonic() - revoked_at < poll + 1.0, "revocation not honoured within the bound"
            time.sleep(0.05)
        elapsed = time.monotonic() - revoked_at
        resp = call(srv, token)
        assert resp.status_code == 401 and "revoked" in resp.json()["error"]["message"]
        assert elapsed <= poll + 1.0
        # other tokens of the same client still work
        assert call(srv, idp.token(client, resource=srv.resource)).status_code == 200


def test_jwks_rotation_unknown_kid_triggers_one_refetch_at_a_bounded_rate(idp: IdP) -> None:
    with protected_example(idp, stateless=True, json_response=True, jwks_min_refetch_interval=1.0, tool_rate=None) as srv:
        issuer = srv.middleware.verifier.issuer
        client = idp.client("tools/call:echo", srv.resource)
        assert call(srv, idp.token(client, resource=srv.resource)).status_code == 200
        fetches = issuer.stats["jwks_fetches"]
        old_kid = idp.provider.keys.signer().kid
        idp.provider.keys.rotate(actor="test", immediate=True)
        # the IdP process re-reads keys every second (IDP_KEY_REFRESH_INTERVAL=1)
        deadline = time.monotonic() + 10
        while True:
            token = idp.token(client, resource=srv.resource)
            if sign_kid(token) != old_kid:
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(1.0)  # past the minimum refetch interval since the first fetch
        assert call(srv, token).status_code == 200
        assert issuer.stats["unknown_kid_refetches"] == 1
        assert issuer.stats["jwks_fetches"] == fetches + 1
        # a flood of tokens with unknown kids: all refused, at most one more JWKS fetch per
        # refetch interval (1 s) the flood lasts — on a loaded machine 25 requests may take longer
        attacker = PrivateKey.generate("ES256")
        flood_started = time.monotonic()
        for _ in range(25):
            forged = sign_raw(attacker, {"alg": "ES256", "kid": secrets.token_urlsafe(8), "typ": "at+jwt"},
                              claims_for(idp, srv.resource))
            resp = call(srv, forged)
            assert resp.status_code == 401 and "unknown key" in resp.json()["error"]["message"]
        flood_seconds = time.monotonic() - flood_started
        assert issuer.stats["jwks_fetches"] <= fetches + 2 + int(flood_seconds / 1.0)
        assert issuer.stats["unknown_kid_throttled"] >= 20 - int(flood_seconds / 1.0)


def sign_kid(token: str) -> str:
    import base64
    import json

    h = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))["kid"]


def test_issuer_unreachable_is_503_and_revocation_fails_closed(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A second IdP, stopped mid-test: tokens keep working on cached keys and the last revocation
    list until ``revocation_fail_closed_after``, then every request is 503 — never a 500, never a
    pass on a revocation status nobody can vouch for."""
    from idp.config import Settings
    from idp.provider import Provider

    d = tmp_path_factory.mktemp("idp2")
    port = free_port()
    settings = Settings(issuer=f"http://127.0.0.1:{port}", database_url=f"sqlite:///{d / 'idp.db'}",
                        keys_dir=d / "keys", keystore_kek=random_kek(), log_json=True)
    provider = Provider.open(settings)
    proc = ServerProcess(env_for(settings), port)
    other = IdP(proc.url, settings, provider, proc)
    try:
        with protected_example(other, stateless=True, json_response=True, revocation_poll_interval=0.5,
                               revocation_fail_closed_after=2.0, http_timeout=1.0, tool_rate=None) as srv:
            token = other.new_token("tools/call:echo", srv.resource)
            assert call(srv, token).status_code == 200
            proc.stop()
            stopped = time.monotonic()
            statuses = []
            while time.monotonic() - stopped < 4.0:
                statuses.append(call(srv, token).status_code)
                time.sleep(0.1)
            assert set(statuses) <= {200, 503}
            assert statuses[0] == 200 and statuses[-1] == 503
            resp = call(srv, token)
            assert resp.status_code == 503 and resp.headers["retry-after"]
            assert resp.json()["error"]["code"] == -32006
    finally:
        proc.stop()
        provider.engine.dispose()


def test_issuer_never_reachable_is_503(idp: IdP) -> None:
    port = free_port()  # nothing listens there
    from sdk.server import ProtectionConfig

    from sdk_server_support import example, serve

    srv_port = free_port()
    config = ProtectionConfig(issuer=f"http://127.0.0.1:{port}", resource=f"http://127.0.0.1:{srv_port}/mcp",
                              http_timeout=1.0)
    with serve(example.create_app(config, stateless=True, json_response=True), srv_port) as served:
        token = idp.new_token("tools/call:echo", config.resource)
        resp = httpx.post(served.url + "/mcp", json=rpc("tools/list"), headers=legacy_headers(token), timeout=10)
        assert resp.status_code == 503
        # metadata still answers (it needs no IdP)
        assert httpx.get(served.url + "/.well-known/oauth-protected-resource/mcp").status_code == 200


def test_issuer_metadata_with_another_issuer_is_refused(idp: IdP) -> None:
    """RFC 8414 §3.3: the metadata's issuer must be the configured one, byte for byte."""
    import anyio

    from sdk.server import IssuerClient, IssuerUnavailable

    async def main() -> None:
        client = IssuerClient(idp.url + "/")  # a trailing slash is another issuer
        with pytest.raises(IssuerUnavailable):
            await client.keys()
        await client.aclose()
        good = IssuerClient(idp.url)
        keys = await good.keys()
        assert idp.provider.keys.signer().kid in keys
        await good.aclose()

    anyio.run(main)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_no_valid_token_is_refused_after_keys_rotate_now(tmp_path_factory: pytest.TempPathFactory, workers: int) -> None:
    """``idp keys rotate --now`` as documented, on an IdP whose workers pick the new key up up to
    ``key_refresh_interval`` (5 s) apart, and a resource server with the default 10 s refetch
    limit that fetched the JWKS just before: every token the IdP issues is accepted."""
    from idp.config import Settings
    from idp.provider import Provider

    from idp_testing import run_cli

    d = tmp_path_factory.mktemp("idp-rotate")
    port = free_port()
    settings = Settings(issuer=f"http://127.0.0.1:{port}", database_url=f"sqlite:///{d / 'idp.db'}",
                        keys_dir=d / "keys", keystore_kek=random_kek(), log_json=True)
    provider = Provider.open(settings)
    env = env_for(settings)
    proc = ServerProcess(env, port, workers=workers)
    other = IdP(proc.url, settings, provider, proc)
    try:
        with protected_example(other, stateless=True, json_response=True, tool_rate=None) as srv:
            client = other.client("tools/call:echo", srv.resource)
            old = other.token(client, resource=srv.resource)
            assert call(srv, old).status_code == 200  # the JWKS is fetched (and cached) now
            rotated = run_cli("keys", "rotate", "--now", "--json", env=env)
            assert rotated.returncode == 0, rotated.stderr
            new_kid = json.loads(rotated.stdout)["kid"]
            kids = []
            deadline = time.monotonic() + 8  # past key_refresh_interval: every worker signs with it
            while time.monotonic() < deadline:
                token = other.token(client, resource=srv.resource)
                kids.append(sign_kid(token))
                resp = call(srv, token)
                assert resp.status_code == 200, (sign_kid(token) == new_kid, resp.text)
                time.sleep(0.1)
            assert kids[-1] == new_kid and new_kid in kids
    finally:
        proc.stop()
        provider.engine.dispose()
