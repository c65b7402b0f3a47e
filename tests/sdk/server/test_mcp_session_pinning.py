"""MCP transport spec, Session Management: a session belongs to the client that opened it.

The middleware pins the ``Mcp-Session-Id`` an ``initialize`` answer creates to that token's
client and subject. A session id it did not see created is never adopted by whoever presents it
first: it is answered 404 (the spec: a server MUST answer 404 to a session it does not know,
and the client MUST then start a new session), so pins lost to a restart cost a re-initialise,
never a hijack. Pins survive eviction pressure from other clients (bounded per client).

Against the official SDK server over real HTTP and a real IdP.
"""

from __future__ import annotations

from typing import Any

import httpx
from sdk_server_support import IdP, MCPUnderTest, example, legacy_headers, rpc, serve

from sdk.server import CBSTMiddleware, ProtectionConfig

INIT = rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                          "clientInfo": {"name": "t", "version": "1"}})
NOTE = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def tool(name: str, id: Any, **args: Any) -> dict[str, Any]:
    return rpc("tools/call", {"name": name, "arguments": args}, id)


def open_session(url: str, token: str) -> str:
    resp = httpx.post(url, json=INIT, headers=legacy_headers(token))
    assert resp.status_code == 200, resp.text
    sid = resp.headers["mcp-session-id"]
    assert httpx.post(url, json=NOTE, headers=legacy_headers(token, sid)).status_code == 202
    return sid


def test_a_session_is_pinned_to_the_client_that_opened_it(idp: IdP, mcp_server: MCPUnderTest) -> None:
    alice = idp.new_token("tools/call:echo", mcp_server.resource)
    mallory = idp.new_token("tools/call:echo tools/call:delete-file", mcp_server.resource)
    sid = open_session(mcp_server.url, alice)
    hijack = httpx.post(mcp_server.url, json=tool("echo", 2, text="x"), headers=legacy_headers(mallory, sid))
    assert hijack.status_code == 403 and "another client" in hijack.json()["error"]["message"]
    assert httpx.delete(mcp_server.url, headers=legacy_headers(mallory, sid)).status_code == 403
    ok = httpx.post(mcp_server.url, json=tool("echo", 3, text="x"), headers=legacy_headers(alice, sid))
    assert ok.status_code == 200 and '"x"' in ok.text
    two = httpx.post(mcp_server.url, json=tool("echo", 4, text="x"),
                     headers=[*legacy_headers(alice, sid).items(), ("Mcp-Session-Id", "other")])
    assert two.status_code == 400
    init_events = [e for e in mcp_server.events if e.method == "initialize" and e.session_id == sid]
    assert init_events and init_events[0].allowed  # the audit names the session initialize opened


class Restartable:
    """The MCP app (its sessions live on) behind a middleware that can be restarted: what a
    gateway restart in front of an HTTP upstream looks like."""

    def __init__(self, inner: Any, config: ProtectionConfig) -> None:
        self.inner, self.config = inner, config
        self.middleware = CBSTMiddleware(inner, config)

    def restart(self) -> None:
        self.middleware = CBSTMiddleware(self.inner, self.config)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.middleware(scope, receive, send)


def _restartable(idp: IdP, port: int, **options: Any) -> Restartable:
    resource = f"http://127.0.0.1:{port}/mcp"
    config = ProtectionConfig(issuer=idp.url, resource=resource, tool_rate=None, **options)
    inner = example.build_mcp().streamable_http_app(streamable_http_path="/mcp")
    return Restartable(inner, config)


def test_a_session_id_not_seen_created_is_never_adopted(idp: IdP) -> None:
    from sdk_server_support import free_port

    port = free_port()
    app = _restartable(idp, port)
    with serve(app, port) as served:
        url = served.url + "/mcp"
        alice = idp.new_token("tools/call:echo", url)
        mallory = idp.new_token("tools/call:echo", url)
        sid = open_session(url, alice)
        app.restart()  # the pins are gone; the app still knows the session
        hijack = httpx.post(url, json=tool("echo", 2, text="mine now"), headers=legacy_headers(mallory, sid))
        assert hijack.status_code == 404, hijack.text  # MCP: unknown session -> 404, start a new one
        assert "mine now" not in hijack.text and hijack.json()["error"]["code"] == -32600
        # The owner is told the same and re-initialises (the spec's client behaviour).
        assert httpx.post(url, json=tool("echo", 3, text="x"), headers=legacy_headers(alice, sid)).status_code == 404
        assert httpx.get(url, headers=legacy_headers(mallory, sid)).status_code == 404
        fresh = open_session(url, alice)
        ok = httpx.post(url, json=tool("echo", 4, text="back"), headers=legacy_headers(alice, fresh))
        assert ok.status_code == 200 and "back" in ok.text
        # A made-up session id is no better.
        made_up = httpx.post(url, json=tool("echo", 5, text="x"), headers=legacy_headers(mallory, "f" * 32))
        assert made_up.status_code == 404


def test_pins_survive_eviction_pressure_from_other_clients(idp: IdP) -> None:
    from sdk_server_support import free_port

    port = free_port()
    app = _restartable(idp, port, max_sessions=4)
    with serve(app, port) as served:
        url = served.url + "/mcp"
        alice = idp.new_token("tools/call:echo", url)
        mallory = idp.new_token("tools/call:echo", url)
        sid = open_session(url, alice)
        for _ in range(10):  # fill the session table many times over
            open_session(url, mallory)
        hijack = httpx.post(url, json=tool("echo", 2, text="x"), headers=legacy_headers(mallory, sid))
        assert hijack.status_code == 403, hijack.text
        ok = httpx.post(url, json=tool("echo", 3, text="still mine"), headers=legacy_headers(alice, sid))
        assert ok.status_code == 200 and "still mine" in ok.text


def test_sessions_per_client_are_bounded_and_the_oldest_is_refused_not_adopted(idp: IdP) -> None:
    from sdk_server_support import free_port

    port = free_port()
    app = _restartable(idp, port, max_sessions_per_client=2)
    with serve(app, port) as served:
        url = served.url + "/mcp"
        alice = idp.new_token("tools/call:echo", url)
        mallory = idp.new_token("tools/call:echo", url)
        first, second, third = (open_session(url, alice) for _ in range(3))
        assert httpx.post(url, json=tool("echo", 1, text="x"),
                          headers=legacy_headers(mallory, first)).status_code == 404
        assert httpx.post(url, json=tool("echo", 1, text="x"),
                          headers=legacy_headers(alice, first)).status_code == 404
        for sid in (second, third):
            assert httpx.post(url, json=tool("echo", 1, text="x"),
                              headers=legacy_headers(alice, sid)).status_code == 200


def test_a_deleted_session_is_forgotten(idp: IdP, mcp_server: MCPUnderTest) -> None:
    alice = idp.new_token("tools/call:echo", mcp_server.resource)
    mallory = idp.new_token("tools/call:echo", mcp_server.resource)
    sid = open_session(mcp_server.url, alice)
    assert httpx.delete(mcp_server.url, headers=legacy_headers(alice, sid)).status_code == 200
    after = httpx.post(mcp_server.url, json=tool("echo", 2, text="x"), headers=legacy_headers(mallory, sid))
    assert after.status_code == 404


def test_session_limits_are_validated() -> None:
    import pytest

    bad: Any
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_sessions_per_client"):
            ProtectionConfig(issuer="http://127.0.0.1:1", resource="http://127.0.0.1:2/mcp",
                             max_sessions_per_client=bad)
