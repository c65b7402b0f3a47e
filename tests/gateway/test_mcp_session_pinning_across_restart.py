"""MCP transport spec, Session Management, across a gateway restart: the upstream keeps its
sessions, the gateway's pins are gone. A session id the restarted gateway did not see created is
answered 404 (the client starts a new session), never adopted by the first client to present it.

A real ``cbst-gateway`` in front of the official SDK server, stopped and started again on the
same port; tokens from the real IdP.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from gateway_support import IdP, free_port

pytestmark = pytest.mark.slow  # real cbst-gateway and idp processes

HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}


def _auth(token: str, sid: str | None = None) -> dict[str, str]:
    h = {**HEADERS, "authorization": f"Bearer {token}", "mcp-protocol-version": "2025-06-18"}
    return {**h, "mcp-session-id": sid} if sid else h


def test_a_restarted_gateway_refuses_sessions_it_did_not_see_created(
        idp: IdP, gateway_process: Any, http_upstream: tuple[str, Any]) -> None:
    upstream, recorder = http_upstream
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    args = ("--issuer", idp.url, "--resource", resource, "--upstream", upstream, "--tool-rate", "1000",
            "--log-level", "warning")
    gw = gateway_process(*args, port=port)
    alice = idp.token("tools/call:echo", resource)
    mallory = idp.token("tools/call:echo", resource)
    r = httpx.post(resource, json=INIT, headers=_auth(alice))
    assert r.status_code == 200
    sid = r.headers["mcp-session-id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert httpx.post(resource, json=note, headers=_auth(alice, sid)).status_code == 202
    gw.stop()
    gateway_process(*args, port=port)  # the same gateway, restarted: the upstream session lives on

    before = len(recorder.seen)
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "mine"}}}
    hijack = httpx.post(resource, json=call, headers=_auth(mallory, sid))
    assert hijack.status_code == 404, hijack.text
    assert "mine" not in hijack.text
    assert len(recorder.seen) == before  # the upstream never saw it
    # The owner is refused the same way and starts a new session, as the spec tells clients to.
    assert httpx.post(resource, json=call, headers=_auth(alice, sid)).status_code == 404
    r = httpx.post(resource, json=INIT, headers=_auth(alice))
    assert r.status_code == 200
    fresh = r.headers["mcp-session-id"]
    assert httpx.post(resource, json=note, headers=_auth(alice, fresh)).status_code == 202
    ok = httpx.post(resource, json=call, headers=_auth(alice, fresh))
    assert ok.status_code == 200 and "mine" in ok.text
    assert httpx.post(resource, json=call, headers=_auth(mallory, fresh)).status_code == 403
