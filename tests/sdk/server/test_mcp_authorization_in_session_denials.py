"""``in_session_denials``: how a capability denial of one request inside a session is answered.

Default ("http"): HTTP 403 insufficient_scope with a challenge, so clients can step up.
"jsonrpc": HTTP 200 with only the JSON-RPC error, for clients that end the whole session on any
HTTP error status (the mcp 1.x Python client); the session goes on. Outside a session a denial is
a 403 either way, and the denied request never reaches the app.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sdk.server import ProtectionConfig
from sdk_server_support import IdP, legacy_headers, modern_headers, protected_example, rpc

INIT = rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}})


def tool(name: str, id: Any, **args: Any) -> dict[str, Any]:
    return rpc("tools/call", {"name": name, "arguments": args}, id)


def _session(url: str, token: str) -> str:
    resp = httpx.post(url, json=INIT, headers=legacy_headers(token))
    assert resp.status_code == 200
    sid = resp.headers["mcp-session-id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert httpx.post(url, json=note, headers=legacy_headers(token, sid)).status_code == 202
    return sid


@pytest.mark.parametrize("style", ["http", "jsonrpc"])
def test_a_denied_request_inside_a_session_and_the_session_goes_on(idp: IdP, style: str) -> None:
    with protected_example(idp, in_session_denials=style) as server:
        token = idp.new_token("tools/call:echo", server.resource)
        sid = _session(server.url, token)
        denied = httpx.post(server.url, json=tool("delete-file", 2, path="x"), headers=legacy_headers(token, sid))
        body = denied.json()
        assert body["id"] == 2 and body["error"]["code"] == -32003 and "delete-file" in body["error"]["message"]
        if style == "http":
            assert denied.status_code == 403
            assert 'error="insufficient_scope"' in denied.headers["www-authenticate"]
            assert "tools/call:delete-file" in denied.headers["www-authenticate"]
        else:
            assert denied.status_code == 200 and "www-authenticate" not in denied.headers
        ok = httpx.post(server.url, json=tool("echo", 3, text="still here"), headers=legacy_headers(token, sid))
        assert ok.status_code == 200 and "still here" in ok.text
        # The denied call never reached the app: its audit says refused, and nothing ran.
        refused = [e for e in server.events if e.target == "delete-file"]
        assert refused and not any(e.allowed for e in refused)


def test_outside_a_session_a_denial_is_always_a_403(idp: IdP) -> None:
    with protected_example(idp, stateless=True, json_response=True, in_session_denials="jsonrpc") as server:
        token = idp.new_token("tools/call:echo", server.resource)
        resp = httpx.post(server.url, json=tool("delete-file", 1, path="x"),
                          headers=modern_headers("tools/call", "delete-file", token))
        assert resp.status_code == 403 and 'error="insufficient_scope"' in resp.headers["www-authenticate"]


def test_an_unknown_denial_style_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="in_session_denials"):
        ProtectionConfig(issuer="http://127.0.0.1:1", resource="http://127.0.0.1:2/mcp", in_session_denials="silent")
