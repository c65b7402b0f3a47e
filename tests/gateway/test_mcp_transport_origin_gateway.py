"""MCP transport spec, Streamable HTTP → Security Warning (DNS rebinding), at the gateway: it
forwards neither ``Origin`` nor ``Host`` upstream (the upstream is another authority), so the
upstream's own check can never run — the gateway checks them itself, with and without auth.

A real ``cbst-gateway`` in front of the official SDK server; a valid token from the real IdP,
as a rebinding page riding on a local client would have.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from gateway_support import IdP, free_port

pytestmark = pytest.mark.slow  # real cbst-gateway and idp processes

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@pytest.mark.parametrize("auth", [True, False], ids=["protected", "no-auth"])
def test_the_gateway_refuses_foreign_origins_and_rebound_hosts(idp: IdP, gateway_process: Any,
                                                               http_upstream: tuple[str, Any], auth: bool) -> None:
    upstream, recorder = http_upstream
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    gateway_process("--issuer", idp.url, "--resource", resource, "--upstream", upstream, "--log-level", "warning",
                    *(() if auth else ("--no-auth",)), port=port)
    headers = {**HEADERS, "authorization": f"Bearer {idp.token('tools/call:echo', resource)}"} if auth else HEADERS
    before = len(recorder.seen)
    evil = httpx.post(resource, json=INIT, headers={**headers, "origin": "http://evil.example"})
    assert evil.status_code == 403 and evil.json()["id"] is None, evil.text
    rebound = httpx.post(resource, json=INIT, headers={**headers, "host": f"evil.example:{port}"})
    assert rebound.status_code == 421, rebound.text
    both = httpx.get(resource, headers={**headers, "host": f"evil.example:{port}",
                                        "origin": f"http://evil.example:{port}"})
    assert both.status_code in (403, 421)
    assert len(recorder.seen) == before  # none of them reached the upstream
    for origin in (f"http://127.0.0.1:{port}", "http://localhost:6274"):  # own origin; a local inspector
        ok = httpx.post(resource, json=INIT, headers={**headers, "origin": origin})
        assert ok.status_code == 200, ok.text
    assert all("origin" not in h for h in recorder.seen[before:])  # not forwarded
