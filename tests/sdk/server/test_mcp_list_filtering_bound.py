"""List filtering holds its memory bound: a ``*/list`` response larger than what the filter
buffers (``max_list_response_size``: the JSON body, or one SSE event) is answered with a clear
JSON-RPC error for the list request — never buffered without bound, never passed unfiltered,
never silently dropped.

Through the real middleware (``httpx.ASGITransport``) with a token from the real IdP; the app
streams a huge ``tools/list`` result the way a hostile or broken server would.
"""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import httpx
import pytest
from sdk_server_support import IdP, legacy_headers, rpc

from sdk.server import CBSTMiddleware, ProtectionConfig

pytestmark = pytest.mark.anyio
RES = "http://127.0.0.1:9/mcp"
CHUNK = b" " * (1024 * 1024)  # one shared object: the app itself allocates nothing per chunk
HUGE_MIB = 40  # well past the 16 MiB default bound


class HugeListApp:
    """Answers tools/list with ~40 MiB (valid JSON: a small list padded with whitespace)."""

    def __init__(self, *, sse: bool) -> None:
        self.sse = sse
        self.sent_chunks = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        result = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
            {"name": "echo", "inputSchema": {}}, {"name": "delete-file", "inputSchema": {}}]}}).encode()
        ctype = b"text/event-stream" if self.sse else b"application/json"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", ctype)]})
        head = b"event: message\r\ndata: " + result[:-1] if self.sse else result[:-1]
        await send({"type": "http.response.body", "body": head, "more_body": True})
        for _ in range(HUGE_MIB):
            self.sent_chunks += 1
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b"}" + (b"\r\n\r\n" if self.sse else b""),
                    "more_body": False})


@pytest.mark.parametrize("sse", [False, True], ids=["json", "sse"])
async def test_an_oversized_list_response_is_a_jsonrpc_error_not_unbounded_memory(idp: IdP, sse: bool) -> None:
    token = idp.new_token("tools/call:echo", RES)
    app = HugeListApp(sse=sse)
    mw = CBSTMiddleware(app, ProtectionConfig(issuer=idp.url, resource=RES))
    transport = httpx.ASGITransport(app=mw)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9") as client:
        await client.post("/mcp", json=rpc("ping"), headers=legacy_headers(token))  # warm: keys fetched
        tracemalloc.start()
        try:
            resp = await client.post("/mcp", json=rpc("tools/list", id=1), headers=legacy_headers(token))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    await mw.aclose()
    assert b"delete-file" not in resp.content
    if sse:
        assert resp.status_code == 200
        events = [json.loads(line[5:]) for line in resp.content.splitlines() if line.startswith(b"data:")]
        assert len(events) == 1, resp.content[:300]
        error = events[0]
    else:
        assert resp.status_code == 502
        error = resp.json()
    assert error["id"] == 1 and error["error"]["code"] == -32603, error
    assert "tools/list" in error["error"]["message"] and "larger than" in error["error"]["message"]
    assert peak < 24 * 1024 * 1024, f"the filter buffered {peak / 2**20:.0f} MiB"


async def test_the_bound_is_configurable_and_validated(idp: IdP) -> None:
    token = idp.new_token("tools/call:echo", RES)
    app = HugeListApp(sse=False)
    mw = CBSTMiddleware(app, ProtectionConfig(issuer=idp.url, resource=RES, max_list_response_size=64 * 1024))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://127.0.0.1:9") as client:
        resp = await client.post("/mcp", json=rpc("tools/list", id=1), headers=legacy_headers(token))
    await mw.aclose()
    assert resp.status_code == 502 and str(64 * 1024) in resp.json()["error"]["message"]
    bad: Any
    for bad in (0, -1, "1", True):
        with pytest.raises(ValueError, match="max_list_response_size"):
            ProtectionConfig(issuer=idp.url, resource=RES, max_list_response_size=bad)
