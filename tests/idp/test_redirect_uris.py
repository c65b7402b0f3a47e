"""Redirect URIs (RFC 6749 §3.1.2, RFC 8252 §7, OAuth 2.1): what may be registered, exact matching
with loopback ports, and open-redirect attempts at the authorization endpoint (never redirected)."""

from __future__ import annotations

import pytest
from codeflow_testing import LOOPBACK, REDIRECT, ensure_resource, params, parse, register_interactive
from idp_testing import env_for, run_cli
from test_token_endpoint import Env, env  # noqa: F401 - env is a fixture

from idp.clients import ClientError
from idp.oauth2 import redirect_uris
from idp.oauth2.authorization_request import InvalidAuthorizationRequest

GOOD = [
    "https://app.example.test/callback",
    "https://app.example.test:8443/cb?x=1",
    "http://127.0.0.1/callback",
    "http://127.0.0.1:3000/callback",
    "http://[::1]/cb",
    "http://localhost:8080/oauth/callback",
    "com.example.app:/oauth2redirect",
    "com.example.app://callback",
]
BAD = [
    "", "/callback", "callback", "app.example.test/callback",
    "http://app.example.test/callback",  # plain http off loopback
    "http://127.0.0.2/callback", "http://127.0.0.1.evil.test/cb", "http://localhost.evil.test/cb",
    "http://127.0.0.1@evil.test/cb", "https://user:pw@app.example.test/cb", "https://app.example.test@evil.test/cb",
    "https://app.example.test/cb#frag", "https://app.example.test/cb#", "com.example.app:/cb#x",
    "javascript:alert(1)", "data:text/html,hi", "file:///etc/passwd", "vbscript:x", "myapp:/cb",
    "HTTPS://app.example.test/cb", "https:///cb", "https://app.example.test:99999/cb",
    "https://app.example.test/c b", "https://app.example.test/\u00e9", "https://app.example.test\\@evil.test/",
    "https://app.example.test/" + "a" * 600, "http://127.0.0.1:0/cb", "http://127.0.0.1:65536/cb",
]


@pytest.mark.parametrize("uri", GOOD)
def test_registrable_redirect_uris(uri: str) -> None:
    assert redirect_uris.validate(uri) == uri


@pytest.mark.parametrize("uri", BAD)
def test_unregistrable_redirect_uris(uri: str) -> None:
    with pytest.raises(redirect_uris.RedirectUriError):
        redirect_uris.validate(uri)


def test_rfc8252_7_3_loopback_matches_any_port_but_nothing_else() -> None:
    reg = "http://127.0.0.1/callback"
    assert redirect_uris.matches(reg, "http://127.0.0.1:49152/callback")
    assert redirect_uris.matches("http://127.0.0.1:3000/callback", "http://127.0.0.1:5000/callback")
    assert redirect_uris.matches("http://[::1]/cb", "http://[::1]:8080/cb")
    assert redirect_uris.matches("http://localhost/cb", "http://localhost:8080/cb")
    for other in ("http://127.0.0.1:49152/callback/", "http://127.0.0.1:49152/other", "http://127.0.0.1:49152/callback?a=b",
                  "http://localhost:49152/callback", "http://[::1]:49152/callback", "https://127.0.0.1:49152/callback",
                  "http://127.0.0.1:49152@evil.test/callback", "http://127.0.0.1:49152/callback#x",
                  "http://127.0.0.1:0/callback"):
        assert not redirect_uris.matches(reg, other), other


def test_non_loopback_matching_is_exact() -> None:
    for other in ("https://app.example.test/callback/", "https://APP.example.test/callback",
                  "https://app.example.test:443/callback", "https://app.example.test/callback?x=1",
                  "https://app.example.test/Callback", "https://app.example.test/%63allback"):
        assert not redirect_uris.matches(REDIRECT, other), other


OPEN_REDIRECTS = [
    "https://evil.test/callback",  # other host
    "https://app.example.test/other",  # other path
    REDIRECT + "?next=https://evil.test",  # added query
    REDIRECT + "#fragment",  # fragment
    REDIRECT + "/../evil",
    "https://app.example.test.evil.test/callback",
    "https://app.example.test@evil.test/callback",
    "http://app.example.test/callback",  # downgrade
    "http://127.0.0.1:8080/other",  # loopback, other path (registered: /callback)
    "http://127.0.0.1:8080/callback/",
    "http://localhost:8080/callback",  # loopback under another host name than registered
    "javascript:alert(1)//" + REDIRECT,
]


@pytest.mark.parametrize("attempt", OPEN_REDIRECTS)
def test_open_redirect_attempts_are_shown_never_redirected(env: Env, attempt: str) -> None:
    ensure_resource(env)
    client, _ = register_interactive(env, redirect_uris=(REDIRECT, LOOPBACK))
    with pytest.raises(InvalidAuthorizationRequest) as exc:
        parse(env, params(client, redirect_uri=attempt))
    assert not hasattr(exc.value, "redirect_url")


def test_loopback_redirect_on_an_ephemeral_port_is_accepted_and_kept(env: Env) -> None:
    ensure_resource(env)
    client, _ = register_interactive(env, redirect_uris=(LOOPBACK,))
    req = parse(env, params(client, redirect_uri="http://127.0.0.1:53124/callback"))
    assert req.redirect_uri == "http://127.0.0.1:53124/callback"


def test_redirect_uri_is_required_with_several_registered(env: Env) -> None:
    ensure_resource(env)
    client, _ = register_interactive(env, redirect_uris=(REDIRECT, LOOPBACK))
    with pytest.raises(InvalidAuthorizationRequest, match="required"):
        parse(env, params(client, redirect_uri=None))


def test_registry_refuses_bad_redirect_uris_and_inconsistent_grants(env: Env) -> None:
    add = env.provider.clients.add
    with pytest.raises(ClientError, match="loopback"):
        add("r-bad-1", capabilities="", auth_method="none", redirect_uris=["http://app.example.test/cb"])
    with pytest.raises(ClientError, match="redirect-uri"):
        add("r-bad-2", capabilities="", auth_method="none", grant_types=["authorization_code"])
    with pytest.raises(ClientError, match="public client"):
        add("r-bad-3", capabilities="tools/call:x", auth_method="none", redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "client_credentials"])
    with pytest.raises(ClientError, match="needs the authorization_code"):
        add("r-bad-4", capabilities="", auth_method="none", redirect_uris=[REDIRECT], grant_types=["refresh_token"])
    with pytest.raises(ClientError, match="unknown grant"):
        add("r-bad-5", capabilities="", auth_method="none", redirect_uris=[REDIRECT], grant_types=["password"])
    with pytest.raises(ClientError, match="at least one capability"):
        add("r-bad-6", capabilities="", audiences=["https://mcp.example.test/mcp"])


def test_cli_clients_add_interactive(settings: object) -> None:
    from idp.config import Settings

    assert isinstance(settings, Settings)
    e = env_for(settings)
    r = run_cli("clients", "add", "desktop", "--public", "--redirect-uri", "http://127.0.0.1/callback",
                "--redirect-uri", "com.example.app:/cb", "--grant-type", "authorization_code",
                "--grant-type", "refresh_token", "--json", env=e)
    assert r.returncode == 0, r.stderr
    import json

    doc = json.loads(r.stdout)
    assert doc["auth_method"] == "none" and "client_secret" not in doc
    assert doc["redirect_uris"] == ["http://127.0.0.1/callback", "com.example.app:/cb"]
    assert doc["grant_types"] == ["authorization_code", "refresh_token"]
    shown = run_cli("clients", "show", "desktop", env=e)
    assert "com.example.app:/cb" in shown.stdout and "refresh_token" in shown.stdout
    listed = run_cli("clients", "list", env=e)
    assert "authorization_code" in listed.stdout
    bad = run_cli("clients", "add", "evil", "--public", "--redirect-uri", "javascript:alert(1)", env=e)
    assert bad.returncode == 1 and "reverse domain" in bad.stderr and "Traceback" not in bad.stderr
    web = run_cli("clients", "add", "web", "--redirect-uri", "https://app.example.test/cb", "--json", env=e)
    assert web.returncode == 0 and json.loads(web.stdout)["client_secret"]
