"""MCP transport spec, Streamable HTTP → Security Warning (DNS rebinding): servers MUST validate
the ``Origin`` header on all incoming connections, and answer an invalid one with HTTP 403;
servers bound to loopback should not be reachable under another host name.

The middleware enforces it itself, in front of an app that checks nothing (``RecordingApp``), so
a protected app or the gateway is safe whatever is behind it: ``allowed_origins`` defaults to the
resource's own origin, plus any loopback origin when the resource is on loopback; a request
without ``Origin`` (not a browser) passes; on a loopback resource the ``Host`` must be a loopback
name (421 otherwise). Tokens are real (the real IdP); the attacker holds a valid one, as a
rebinding page riding on a local client's credentials would.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sdk_server_support import IdP, RecordingApp, legacy_headers, rpc

from sdk.server import CBSTMiddleware, ProtectionConfig

pytestmark = pytest.mark.anyio
RES = "http://127.0.0.1:9/mcp"
PING = rpc("ping")


@contextlib.asynccontextmanager
async def protected(idp: IdP, resource: str = RES,
                    **options: Any) -> AsyncIterator[tuple[httpx.AsyncClient, RecordingApp]]:
    app = RecordingApp()
    mw = CBSTMiddleware(app, ProtectionConfig(issuer=idp.url, resource=resource, allow_insecure_http=True,
                                              **options))
    base = resource.rsplit("/", 1)[0]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url=base) as client:
        yield client, app
    await mw.aclose()


@pytest.fixture(scope="module")
def token(idp: IdP) -> str:
    return idp.new_token("tools/call:echo", RES)


@pytest.mark.parametrize("origin", [
    "http://evil.example", "http://evil.example:9", "https://127.0.0.1.evil.example", "null",
    "http://127.0.0.1@evil.example", "file://", "http://127.0.0.1:9/mcp", "HTTP://EVIL.EXAMPLE", "",
])
async def test_an_invalid_origin_is_refused_with_403_before_the_app(idp: IdP, token: str, origin: str) -> None:
    async with protected(idp) as (client, app):
        for method, path in [("POST", "/mcp"), ("GET", "/mcp"), ("DELETE", "/mcp"), ("POST", "/mcp/"),
                             ("GET", "/elsewhere"), ("OPTIONS", "/mcp")]:
            resp = await client.request(method, path, json=PING if method == "POST" else None,
                                        headers={**legacy_headers(token), "Origin": origin})
            assert resp.status_code == 403, (method, path, resp.status_code, resp.text)
            body = resp.json()
            assert body["id"] is None and "origin" in body["error"]["message"].lower(), body
    assert app.seen == []


@pytest.mark.parametrize("origin", [
    "http://127.0.0.1:9", "http://localhost:5173", "http://[::1]:8080", "http://127.0.0.1", "https://localhost",
    "http://LOCALHOST:3000",
])
async def test_own_and_loopback_origins_pass_on_a_loopback_resource(idp: IdP, token: str, origin: str) -> None:
    async with protected(idp) as (client, app):
        resp = await client.post("/mcp", json=PING, headers={**legacy_headers(token), "Origin": origin})
    assert resp.status_code == 200, resp.text
    assert len(app.seen) == 1


async def test_no_origin_passes_non_browser_clients(idp: IdP, token: str) -> None:
    async with protected(idp) as (client, _):
        assert (await client.post("/mcp", json=PING, headers=legacy_headers(token))).status_code == 200


@pytest.mark.parametrize("host", ["evil.example:9", "evil.example", "127.0.0.1.nip.io:9", "localhost.evil.example"])
async def test_dns_rebinding_host_is_refused_on_a_loopback_resource(idp: IdP, token: str, host: str) -> None:
    """A page on evil.example whose name was rebound to 127.0.0.1: same-origin to the browser, so
    a GET may carry no Origin at all; the Host gives it away."""
    async with protected(idp) as (client, app):
        for headers in ({"Host": host}, {"Host": host, "Origin": f"http://{host}"}):
            resp = await client.post("/mcp", json=PING, headers={**legacy_headers(token), **headers})
            assert resp.status_code in (403, 421), resp.text
            assert resp.json()["error"]["code"] in (-32003, -32600)
        resp = await client.get("/mcp", headers={**legacy_headers(token), "Host": host})
        assert resp.status_code == 421 and "host" in resp.json()["error"]["message"].lower()
    assert app.seen == []


@pytest.mark.parametrize("host", ["127.0.0.1:9", "localhost:9", "[::1]:9", "127.0.0.1"])
async def test_loopback_host_names_pass(idp: IdP, token: str, host: str) -> None:
    async with protected(idp) as (client, _):
        resp = await client.post("/mcp", json=PING, headers={**legacy_headers(token), "Host": host})
        assert resp.status_code == 200


async def test_a_public_resource_allows_its_own_origin_only_and_any_host(idp: IdP) -> None:
    resource = "http://mcp.example/mcp"
    tok = idp.new_token("tools/call:echo", resource)
    async with protected(idp, resource) as (client, _):
        own = await client.post("/mcp", json=PING, headers={**legacy_headers(tok), "Origin": "http://mcp.example"})
        assert own.status_code == 200
        local = await client.post("/mcp", json=PING, headers={**legacy_headers(tok), "Origin": "http://localhost:3000"})
        assert local.status_code == 403
        proxied = await client.post("/mcp", json=PING, headers={**legacy_headers(tok), "Host": "internal:8080"})
        assert proxied.status_code == 200  # behind a reverse proxy the Host is the deployment's business


async def test_allowed_origins_replace_the_default(idp: IdP, token: str) -> None:
    async with protected(idp, allowed_origins=["https://app.example", "http://127.0.0.1:9"]) as (client, _):
        for origin, status in [("https://app.example", 200), ("https://app.example:443", 200),
                               ("http://127.0.0.1:9", 200), ("http://localhost:5173", 403),
                               ("https://other.example", 403)]:
            resp = await client.post("/mcp", json=PING, headers={**legacy_headers(token), "Origin": origin})
            assert resp.status_code == status, (origin, resp.text)
    async with protected(idp, allowed_origins=["*"]) as (client, _):  # explicit opt-out
        resp = await client.post("/mcp", json=PING, headers={**legacy_headers(token), "Origin": "https://any.example"})
        assert resp.status_code == 200


async def test_the_metadata_stays_readable_from_any_origin(idp: IdP) -> None:
    async with protected(idp) as (client, _):
        resp = await client.get("/.well-known/oauth-protected-resource/mcp", headers={"Origin": "https://any.example"})
    assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("bad", [["https://app.example/path"], ["app.example"], ["https://"], ["ftp://x.example"],
                                 ["https://app.example?x"], ["https://user@app.example"], "https://app.example", [1]])
def test_allowed_origins_are_validated(bad: Any) -> None:
    with pytest.raises(ValueError, match="allowed_origins"):
        ProtectionConfig(issuer="http://127.0.0.1:1", resource=RES, allowed_origins=bad)
