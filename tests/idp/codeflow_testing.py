"""Helpers for the authorization code flow tests: interactive clients, resources, and codes
obtained by calling the protocol functions the pages call (parse_authorization_request, then
authorization_response), so these tests need no HTML pages."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

from idp_testing import AUDIENCE
from test_token_endpoint import Env, basic

from idp.oauth2 import pkce
from idp.oauth2.authorization_request import (
    AuthorizationRequest,
    authorization_response,
    parse_authorization_request,
)
from idp.oauth2.subject import Subject
from sdk.capabilities import CapabilitySet

REDIRECT = "https://app.example.test/callback"
LOOPBACK = "http://127.0.0.1/callback"
ALICE = Subject("alice", claims={"username": "alice", "email": "alice@example.test", "email_verified": True,
                                 "name": "Alice Example", "groups": ["ops"]})


def new_verifier() -> str:
    return secrets.token_urlsafe(48)[:64]


def ensure_resource(env: Env, uri: str = AUDIENCE) -> str:
    if env.provider.resources.get(uri) is None:
        env.provider.resources.add(uri, name="MCP " + uri.rsplit("/", 2)[-2][:20])
    return uri


def register_interactive(env: Env, *, public: bool = True, redirect_uris: tuple[str, ...] = (REDIRECT,),
                         grant_types: tuple[str, ...] = ("authorization_code", "refresh_token"),
                         capabilities: str = "") -> tuple[Any, str | None]:
    return env.provider.clients.add("i-" + secrets.token_hex(6), capabilities=capabilities,
                                    auth_method="none" if public else "client_secret_basic",
                                    redirect_uris=list(redirect_uris), grant_types=list(grant_types))


def params(client: Any, *, scope: str | None = "tools/call:echo", resource: str | None = AUDIENCE,
           redirect_uri: str | None = REDIRECT, verifier: str | None = None, state: str | None = "st-1",
           **extra: str | None) -> dict[str, list[str]]:
    verifier = verifier or new_verifier()
    values: dict[str, str | None] = {
        "response_type": "code", "client_id": client.client_id, "redirect_uri": redirect_uri, "scope": scope,
        "resource": resource, "state": state, "code_challenge": pkce.s256(verifier), "code_challenge_method": "S256",
        **extra,
    }
    return {k: [v] for k, v in values.items() if v is not None}


def parse(env: Env, p: dict[str, list[str]]) -> AuthorizationRequest:
    return asyncio.run(parse_authorization_request(env.provider, p))


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def get_code(env: Env, client: Any, *, verifier: str | None = None, granted: str | None = None,
             subject: Subject = ALICE, **kw: Any) -> tuple[str, str, AuthorizationRequest]:
    """(code, verifier, request): the person approved ``granted`` (default: everything requested)."""
    verifier = verifier or new_verifier()
    req = parse(env, params(client, verifier=verifier, **kw))
    caps = req.scope if granted is None else CapabilitySet.parse(granted)
    url = authorization_response(env.provider, req, subject=subject, granted=caps, auth_time=1_700_000_000,
                                 session_id="sess-" + secrets.token_hex(4))
    q = query(url)
    assert q["iss"] == env.settings.issuer and q.get("state") == req.state
    return q["code"], verifier, req


def token(env: Env, client: Any, secret: str | None = None, **form: str) -> Any:
    headers = {"Authorization": basic(client.client_id, secret)} if secret else {}
    data = dict(form) if secret else {"client_id": client.client_id, **form}
    return env.http.post("/token", data=data, headers=headers)


def redeem(env: Env, client: Any, code: str, verifier: str, secret: str | None = None,
           redirect_uri: str | None = REDIRECT, **form: str) -> Any:
    extra = {"redirect_uri": redirect_uri} if redirect_uri else {}
    return token(env, client, secret, grant_type="authorization_code", code=code, code_verifier=verifier,
                 **extra, **form)


def refresh(env: Env, client: Any, refresh_token: str, secret: str | None = None, **form: str) -> Any:
    return token(env, client, secret, grant_type="refresh_token", refresh_token=refresh_token, **form)


def introspect_active(env: Env, access_token: str) -> bool:
    """Introspection by the resource server of AUDIENCE (a confidential client of kind resource_server)."""
    rs = getattr(env, "_codeflow_rs", None)
    if rs is None:
        rs = env.provider.clients.add("rs-" + secrets.token_hex(6), capabilities="tools/call:x",
                                      audiences=[AUDIENCE], kind="resource_server")
        env._codeflow_rs = rs  # type: ignore[attr-defined]
    client, secret = rs
    resp = env.http.post("/introspect", data={"token": access_token},
                         headers={"Authorization": basic(client.client_id, secret)})
    assert resp.status_code == 200, resp.text
    return bool(resp.json()["active"])


def revoked_jtis(env: Env) -> set[str]:
    resp = env.http.get("/revoked")
    assert resp.status_code == 200
    return {r["jti"] for r in resp.json()["revoked"]}
