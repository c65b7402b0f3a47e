"""Registered without the operator, then through the authorization code flow: a Client ID
Metadata Document client and a dynamically registered client are usable by
``parse_authorization_request`` and redeem their codes at the token endpoint (which finds them
with the ordinary client lookup); their redirect URIs are enforced; a document that cannot be
used is a non-redirectable ``invalid_client``; a client that got a token is never evicted.
Real HTTPS document server on loopback; SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
import trustme
from cimd_testing import DocumentServer
from codeflow_testing import ALICE, ensure_resource, params, query, redeem
from idp_testing import AUDIENCE
from registration_testing import PYTHON_SDK_REQUEST, count_clients, idp
from test_token_endpoint import Env

from idp.oauth2.authorization_request import (
    InvalidAuthorizationRequest,
    authorization_response,
    parse_authorization_request,
)

LOOPBACK = "http://127.0.0.1:3000/callback"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server(ca: trustme.CA, tmp_path: Path) -> Iterator[DocumentServer]:
    srv = DocumentServer(ca, tmp_path)
    yield srv
    srv.close()


@pytest.fixture
def env(db_url: str, tmp_path: Path, ca: trustme.CA) -> Iterator[Env]:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with idp(db_url, tmp_path, cimd_allowed_hosts=["localhost"], cimd_ca_file=ca_file, unused_client_max=2) as (
            prov, http):
        e = Env(prov, http, prov.settings)
        ensure_resource(e)
        yield e


def _code(env: Env, client_id: str, redirect_uri: str, verifier: str) -> str:
    p = params(SimpleNamespace(client_id=client_id), redirect_uri=redirect_uri, verifier=verifier)
    req = asyncio.run(parse_authorization_request(env.provider, p))
    assert req.client_id == client_id and req.redirect_uri == redirect_uri
    url = authorization_response(env.provider, req, subject=ALICE, granted=req.scope, auth_time=1_700_000_000,
                                 session_id="sess-1")
    assert url.startswith(redirect_uri)
    return query(url)["code"]


def _claims(resp: Any) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    return dict(jwt.decode(resp.json()["access_token"], options={"verify_signature": False}))


def test_metadata_document_client_completes_the_code_flow(env: Env, server: DocumentServer) -> None:
    url = server.document("/client.json", redirect_uris=[LOOPBACK], grant_types=["authorization_code"])
    code = _code(env, url, LOOPBACK, verifier := "v" * 50)
    claims = _claims(redeem(env, SimpleNamespace(client_id=url), code, verifier, redirect_uri=LOOPBACK))
    assert claims["client_id"] == url and claims["aud"] == AUDIENCE and claims["sub"] == ALICE.id
    assert server.hits["/client.json"] == 1  # the token endpoint used the stored client, no fetch


def test_loopback_redirect_on_another_port_matches(env: Env, server: DocumentServer) -> None:
    url = server.document("/client.json", redirect_uris=["http://127.0.0.1/callback"])
    _code(env, url, "http://127.0.0.1:49152/callback", "w" * 50)  # RFC 8252 section 7.3


def test_metadata_document_redirect_uris_are_enforced(env: Env, server: DocumentServer) -> None:
    url = server.document("/client.json", redirect_uris=[LOOPBACK])
    for wrong in ("https://evil.example/callback", "http://127.0.0.1:3000/other", LOOPBACK + "#x"):
        p = params(SimpleNamespace(client_id=url), redirect_uri=wrong)
        with pytest.raises(InvalidAuthorizationRequest):  # shown on the error page, never redirected to
            asyncio.run(parse_authorization_request(env.provider, p))


@pytest.mark.parametrize("make_url", [
    lambda s: s.url("/client.json", "127.0.0.1"),  # a loopback address, not allowed
    lambda s: "https://169.254.169.254/latest/meta-data/client.json",
    lambda s: s.url("/missing.json"),
    lambda s: s.url("/client.json") + "#frag",
    lambda s: s.url("/client.json").replace("https:", "http:"),
])
def test_unusable_document_is_a_non_redirectable_invalid_client(env: Env, server: DocumentServer,
                                                                make_url: Any) -> None:
    server.document("/client.json", host="127.0.0.1")
    url = make_url(server)
    p = params(SimpleNamespace(client_id=url), redirect_uri=LOOPBACK)
    with pytest.raises(InvalidAuthorizationRequest) as info:
        asyncio.run(parse_authorization_request(env.provider, p))
    assert info.value.error == "invalid_client" and not hasattr(info.value, "redirect_url")


def test_dynamic_client_completes_the_code_flow_and_is_never_evicted(env: Env) -> None:
    reg = env.http.post("/register", json={**PYTHON_SDK_REQUEST, "redirect_uris": [LOOPBACK]}).json()
    code = _code(env, reg["client_id"], LOOPBACK, verifier := "x" * 50)
    claims = _claims(redeem(env, SimpleNamespace(client_id=reg["client_id"]), code, verifier, redirect_uri=LOOPBACK))
    assert claims["client_id"] == reg["client_id"]
    for _ in range(5):  # the cap is 2 unused clients: the used one is not among them
        assert env.http.post("/register", json=PYTHON_SDK_REQUEST).status_code == 201
    assert env.provider.clients.get(reg["client_id"]) is not None
    assert count_clients(env.provider) == 3


def test_confidential_dynamic_client_authenticates_with_its_secret(env: Env) -> None:
    reg = env.http.post("/register", json={**PYTHON_SDK_REQUEST, "redirect_uris": [LOOPBACK],
                                           "token_endpoint_auth_method": "client_secret_basic"}).json()
    code = _code(env, reg["client_id"], LOOPBACK, verifier := "y" * 50)
    client = SimpleNamespace(client_id=reg["client_id"])
    wrong = redeem(env, client, code, verifier, secret="cbsts_wrong", redirect_uri=LOOPBACK)
    assert wrong.status_code == 401
    code = _code(env, reg["client_id"], LOOPBACK, verifier)
    _claims(redeem(env, client, code, verifier, secret=reg["client_secret"], redirect_uri=LOOPBACK))


def test_deleted_dynamic_client_cannot_redeem(env: Env) -> None:
    reg = env.http.post("/register", json={**PYTHON_SDK_REQUEST, "redirect_uris": [LOOPBACK]}).json()
    code = _code(env, reg["client_id"], LOOPBACK, verifier := "z" * 50)
    gone = env.http.delete(f"/register/{reg['client_id']}",
                           headers={"Authorization": f"Bearer {reg['registration_access_token']}"})
    assert gone.status_code == 204
    resp = redeem(env, SimpleNamespace(client_id=reg["client_id"]), code, verifier, redirect_uri=LOOPBACK)
    assert resp.status_code in (400, 401) and resp.json()["error"] in ("invalid_client", "invalid_grant")


def test_authorize_page_shows_an_unusable_document_as_an_error_page(env: Env, server: DocumentServer) -> None:
    """Through the real /authorize page: a 400 error page, never a redirect, never a 500."""
    url = "https://169.254.169.254/latest/meta-data/client.json"
    p = {k: v[0] for k, v in params(SimpleNamespace(client_id=url), redirect_uri="https://evil.example/cb").items()}
    resp = env.http.get("/authorize", params=p, follow_redirects=False)
    assert resp.status_code == 400 and "location" not in resp.headers
    assert "text/html" in resp.headers["content-type"] and "non-public address" in resp.text


def test_authorize_page_accepts_a_document_client(env: Env, server: DocumentServer) -> None:
    url = server.document("/client.json", client_name="Doc Client", redirect_uris=[LOOPBACK])
    p = {k: v[0] for k, v in params(SimpleNamespace(client_id=url), redirect_uri=LOOPBACK).items()}
    resp = env.http.get("/authorize", params=p, follow_redirects=False)
    assert resp.status_code in (200, 302, 303), resp.text  # on to login: the client was accepted
    assert env.provider.clients.get(url) is not None and server.hits["/client.json"] == 1
