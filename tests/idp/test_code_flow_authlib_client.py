"""An independent OAuth client (Authlib's httpx OAuth2Client, code flow with PKCE S256) against a
real ``idp serve`` process, on SQLite and PostgreSQL: code exchange, refresh with rotation, and
RFC 7009 revocation. The code is issued by the same calls the pages make, on the server's database."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from codeflow_testing import ALICE, REDIRECT
from idp_testing import AUDIENCE, ServerProcess, env_for, free_port, random_kek

from idp.config import Settings
from idp.oauth2.authorization_request import authorization_response, parse_authorization_request
from idp.provider import Provider


@pytest.fixture
def served(db_url: str, tmp_path: Path) -> Any:
    port = free_port()
    settings = Settings(issuer=f"http://127.0.0.1:{port}", database_url=db_url, keys_dir=tmp_path / "keys",
                        keystore_kek=random_kek())
    prov = Provider.open(settings)
    server = ServerProcess(env_for(settings), port)
    try:
        yield prov, server
    finally:
        server.stop()
        prov.close()


def _authorize(prov: Provider, url: str) -> str:
    """What the pages do with the browser's GET /authorize: parse, (log in, consent), redirect."""
    from urllib.parse import parse_qs, urlsplit

    params = parse_qs(urlsplit(url).query)
    req = asyncio.run(parse_authorization_request(prov, params))
    return authorization_response(prov, req, subject=ALICE, granted=req.scope, auth_time=1_700_000_000,
                                  session_id="s-authlib")


def test_authlib_client_code_flow_refresh_and_revocation(served: Any) -> None:
    prov, server = served
    prov.resources.add(AUDIENCE, name="MCP")
    client, _ = prov.clients.add("authlib-app", capabilities="", auth_method="none", redirect_uris=[REDIRECT],
                                 grant_types=["authorization_code", "refresh_token"])
    meta = httpx.get(server.url + "/.well-known/oauth-authorization-server", timeout=10).json()
    with OAuth2Client(client.client_id, redirect_uri=REDIRECT, scope="tools/call:echo offline_access",
                      code_challenge_method="S256", token_endpoint_auth_method="none", timeout=10) as oauth:
        verifier = "v" * 20 + "-._~" + "w" * 30
        url, state = oauth.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier,
                                                    resource=AUDIENCE)
        callback = _authorize(prov, url)
        assert f"state={state}" in callback and "iss=" in callback
        token = oauth.fetch_token(meta["token_endpoint"], authorization_response=callback, code_verifier=verifier,
                                  resource=AUDIENCE)
        assert token["token_type"] == "Bearer" and token["scope"] == "tools/call:echo offline_access"
        first_refresh = token["refresh_token"]
        refreshed = oauth.refresh_token(meta["token_endpoint"], refresh_token=first_refresh)
        assert refreshed["refresh_token"] != first_refresh and refreshed["access_token"] != token["access_token"]
        resp = oauth.revoke_token(meta["revocation_endpoint"], refreshed["refresh_token"],
                                  token_type_hint="refresh_token")
        assert resp.status_code == 200
        # (plain httpx: the session would add its Bearer token as client authentication)
        again = httpx.post(meta["token_endpoint"], timeout=10, data={"grant_type": "refresh_token", "client_id": client.client_id,
                                                          "refresh_token": refreshed["refresh_token"]})
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
