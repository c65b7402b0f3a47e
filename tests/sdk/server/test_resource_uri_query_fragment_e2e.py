"""End to end (issue 6, defect 2): a resource URI whose fragment or query carries dot-segments is
refused by the real middleware in front of the example MCP server, with a token from the real
IdP, and never reaches the server."""

from __future__ import annotations

import httpx
import pytest
from sdk_server_support import IdP, MCPUnderTest, legacy_headers, modern_headers, modern_meta, rpc


@pytest.mark.parametrize("uri", [
    "file:///docs/readme.md#/../../private/salaries.csv",
    "file:///docs/readme.md?/../../private/salaries.csv",
    "file:///docs/readme.md?/%2e%2e/%2e%2e/private/salaries.csv",
    "file:///docs/%252e%252e/private/salaries.csv",
])
def test_query_or_fragment_traversal_is_refused_before_the_server(idp: IdP, mcp_json_server: MCPUnderTest,
                                                                   uri: str) -> None:
    client = idp.client("resources/read:file:///docs/**", mcp_json_server.resource)
    token = idp.token(client, resource=mcp_json_server.resource)
    resp = httpx.post(mcp_json_server.url, json=rpc("resources/read", {"uri": uri}, 7), headers=legacy_headers(token))
    assert resp.status_code == 403, resp.text
    assert resp.json()["id"] == 7 and resp.json()["error"]["code"] == -32003
    assert "alice" not in resp.text
    events = mcp_json_server.events_for(client[0])
    assert events and not events[-1].allowed and events[-1].reason == "insufficient_scope"
    # the modern generation: the same body, mirrored in Mcp-Name, is refused the same way
    params = {"uri": uri, "_meta": modern_meta()}
    resp = httpx.post(mcp_json_server.url, json=rpc("resources/read", params, 8),
                      headers=modern_headers("resources/read", uri, token))
    assert resp.status_code == 403, resp.text
    # a benign fragment is still allowed under the prefix and reaches the server
    ok = httpx.post(mcp_json_server.url, json=rpc("resources/read", {"uri": "file:///docs/readme.md"}, 9),
                    headers=legacy_headers(token))
    assert ok.status_code == 200 and "A protected MCP server" in ok.text
