"""The pages served by a real ``idp serve`` (uvicorn) on loopback: a person logs in, consents,
and the client redeems the code — over real HTTP, with real cookies."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest
from idp_testing import AUDIENCE, ServerProcess, env_for, free_port

from idp.config import Settings
from idp.provider import Provider

from .conftest import CATALOGUE, PASSWORD, REDIRECT, SECRETS, make_interactive_client
from .flows import Pkce, assert_security_headers, authorize_params, consent_form, hidden, redirect_params

pytestmark = pytest.mark.slow


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[ServerProcess, str]]:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    prov = Provider.open(settings.model_copy(update={"issuer": issuer}))
    prov.resources.add(AUDIENCE, name="Example MCP server")
    prov.resources.set_catalogue(AUDIENCE, CATALOGUE, actor="test")
    prov.users.add("alice", PASSWORD)
    client_id = make_interactive_client(prov)
    prov.close()
    server = ServerProcess({**env_for(settings), "IDP_ISSUER": issuer}, port)
    try:
        yield server, client_id
    finally:
        server.stop()


def test_login_consent_and_code_over_a_real_server(served: tuple[ServerProcess, str]) -> None:
    server, client_id = served
    pkce = Pkce()
    with httpx.Client(base_url=server.url, follow_redirects=False, timeout=30) as browser:
        resp = browser.get("/authorize?" + urlencode(authorize_params(client_id, "tools/call:git-*", pkce)))
        assert resp.status_code == 303
        resp = browser.get(resp.headers["location"])  # /interaction/{id}: pre-session cookie, then the login page
        assert resp.status_code == 303 and "cbst_session=" in resp.headers["set-cookie"]
        page = browser.get(resp.headers["location"])
        assert page.status_code == 200 and "<h1>Log in</h1>" in page.text
        assert_security_headers(page)
        pre = browser.cookies["cbst_session"]
        resp = browser.post("/login/password", data={"interaction": hidden(page.text, "interaction"),
                                                     "csrf": hidden(page.text, "csrf"), "username": "alice",
                                                     "password": PASSWORD})
        assert resp.status_code == 303 and browser.cookies["cbst_session"] != pre
        consent_page = browser.get(resp.headers["location"])
        consent = consent_form(consent_page)
        assert consent.offered == {"tools/call:git-status": True, "tools/call:git-log": True,
                                   "tools/call:git-push": False}
        resp = browser.post("/consent", data={"interaction": consent.interaction, "csrf": consent.csrf,
                                              "action": "approve", "grant": ["tools/call:git-log"]})
        got = redirect_params(resp)
        assert got["iss"] == server.url
        token = browser.post("/token", data={"grant_type": "authorization_code", "code": got["code"],
                                             "redirect_uri": REDIRECT, "code_verifier": pkce.verifier,
                                             "resource": AUDIENCE}, auth=(client_id, SECRETS[client_id]))
        assert token.status_code == 200, token.text
        assert token.json()["scope"] == "tools/call:git-log"
        # the page a frame would show is refused by the headers, and the stylesheet is our own
        css = browser.get("/static/cbst.css")
        assert css.status_code == 200 and css.headers["x-content-type-options"] == "nosniff"
