"""Methods the request's protocol revision does not have (issue 6, defect 11).

An unknown method, or one the 2026-07-28 revision removed (``resources/subscribe``,
``logging/setLevel``, ``ping``, ``initialize``), gets the protocol's own answer — HTTP 404 with
JSON-RPC ``-32601`` in 2026-07-28, ``-32601`` (HTTP 200) in the handshake generation — instead
of a 403 step-up challenge for a capability that cannot exist, and never reaches the server.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sdk_server_support import (
    IdP,
    MCPUnderTest,
    RecordingApp,
    legacy_headers,
    modern_headers,
    modern_meta,
    rpc,
)

from sdk.server import CBSTMiddleware, ProtectionConfig
from sdk.server.rpc import RPCRefusal, check_routing, parse_messages

RES = "http://127.0.0.1:9/mcp"
METHOD_NOT_FOUND = -32601


def _route(msg: dict[str, Any], headers: dict[str, str] | None = None) -> str | None:
    messages, is_batch = parse_messages(json.dumps(msg).encode(), max_batch=32)
    found = {k.lower().encode(): v.encode() for k, v in (headers or {}).items()}
    return check_routing(found, messages, is_batch)


def _modern(method: str, params: dict[str, Any] | None = None, id: Any = 1) -> tuple[dict[str, Any], dict[str, str]]:
    p = {**(params or {}), "_meta": modern_meta()}
    name = p.get("name") or p.get("uri")
    mirrored = method in ("tools/call", "prompts/get", "resources/read")
    return rpc(method, p, id), modern_headers(method, name if mirrored else None)


@pytest.mark.parametrize("method", ["resources/subscribe", "resources/unsubscribe", "logging/setLevel", "ping",
                                    "initialize", "tools/cal", "admin/shutdown"])
def test_modern_methods_the_revision_lacks_are_404_method_not_found(method: str) -> None:
    msg, headers = _modern(method, {"uri": "file:///docs/a.md"} if "subscribe" in method else {}, 5)
    with pytest.raises(RPCRefusal) as err:
        _route(msg, headers)
    assert (err.value.status, err.value.code, err.value.request_id) == (404, METHOD_NOT_FOUND, 5)
    assert err.value.reason == "method_not_found"


@pytest.mark.parametrize("method", ["tools/cal", "tool/call", "admin/shutdown", "server/discover",
                                    "subscriptions/listen", "notifications"])
def test_handshake_methods_the_generation_lacks_are_method_not_found(method: str) -> None:
    with pytest.raises(RPCRefusal) as err:
        _route(rpc(method, {}, "a"))
    assert (err.value.status, err.value.code, err.value.request_id) == (200, METHOD_NOT_FOUND, "a")


@pytest.mark.parametrize("msg", [
    rpc("resources/subscribe", {"uri": "file:///docs/a.md"}),
    rpc("logging/setLevel", {"level": "debug"}),
    rpc("ping"),
    rpc("completion/complete", {"ref": {"type": "ref/prompt", "name": "summarize"},
                                "argument": {"name": "a", "value": ""}}),
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "method": "notifications/whatever"},  # unknown notifications are ignored by servers
    {"jsonrpc": "2.0", "id": 3, "result": {}},
])
def test_methods_of_the_handshake_generation_pass(msg: dict[str, Any]) -> None:
    assert _route(msg) is None


@pytest.mark.parametrize("method", ["server/discover", "subscriptions/listen", "tools/list"])
def test_methods_of_the_modern_generation_pass(method: str) -> None:
    msg, headers = _modern(method)
    assert _route(msg, headers) == "2026-07-28"


def test_a_batch_with_an_unknown_method_is_refused_whole() -> None:
    body = json.dumps([rpc("tools/list", None, 1), rpc("tools/cal", {"name": "x"}, 2)]).encode()
    messages, is_batch = parse_messages(body, max_batch=32)
    with pytest.raises(RPCRefusal) as err:
        check_routing({}, messages, is_batch)
    assert (err.value.code, err.value.request_id) == (METHOD_NOT_FOUND, None)


# --- end to end: the real middleware, the example server, tokens from the real IdP ----------------

def test_removed_method_in_2026_is_404_not_a_step_up_challenge(idp: IdP, mcp_json_server: MCPUnderTest) -> None:
    client = idp.client("resources/read:** tools/call:**", mcp_json_server.resource)
    token = idp.token(client, resource=mcp_json_server.resource)
    msg, headers = _modern("resources/subscribe", {"uri": "file:///docs/readme.md"}, "mnf-11")
    resp = httpx.post(mcp_json_server.url, json=msg, headers={**headers, "Authorization": f"Bearer {token}"})
    assert resp.status_code == 404, resp.text
    assert "www-authenticate" not in resp.headers
    error = resp.json()["error"]
    assert resp.json() == {"jsonrpc": "2.0", "id": "mnf-11",
                           "error": {"code": METHOD_NOT_FOUND, "message": error["message"]}}
    assert "resources/subscribe" in resp.json()["error"]["message"]
    event = [e for e in mcp_json_server.events if e.method == "resources/subscribe" and e.request_id == "mnf-11"][-1]
    assert not event.allowed and event.reason == "method_not_found" and event.status == 404


def test_misspelt_method_in_the_handshake_generation_is_method_not_found(idp: IdP,
                                                                         mcp_json_server: MCPUnderTest) -> None:
    token = idp.new_token("tools/call:**", mcp_json_server.resource)
    resp = httpx.post(mcp_json_server.url, json=rpc("tools/cal", {"name": "echo"}, 12), headers=legacy_headers(token))
    assert resp.status_code == 200 and "www-authenticate" not in resp.headers
    assert resp.json()["id"] == 12 and resp.json()["error"]["code"] == METHOD_NOT_FOUND


@contextlib.asynccontextmanager
async def asgi(idp: IdP, app: Any) -> AsyncIterator[httpx.AsyncClient]:
    mw = CBSTMiddleware(app, ProtectionConfig(issuer=idp.url, resource=RES))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://127.0.0.1:9") as client:
        yield client
    await mw.aclose()


@pytest.mark.anyio
async def test_unknown_methods_never_reach_the_app(idp: IdP) -> None:
    app = RecordingApp()
    token = idp.new_token("tools/call:** resources/read:** logging/setLevel", RES)
    async with asgi(idp, app) as client:
        for method in ("admin/shutdown", "tools/call ", "../tools/call", "x" * 200, "notifications/../tools/call"):
            resp = await client.post("/mcp", json=rpc(method, {"name": "echo"}), headers=legacy_headers(token))
            assert resp.status_code == 200 and resp.json()["error"]["code"] == METHOD_NOT_FOUND, method
        for method, params in (("resources/subscribe", {"uri": "file:///a"}), ("logging/setLevel", {"level": "info"})):
            msg, headers = _modern(method, params)
            resp = await client.post("/mcp", json=msg, headers={**headers, "Authorization": f"Bearer {token}"})
            assert resp.status_code == 404 and resp.json()["error"]["code"] == METHOD_NOT_FOUND, method
    assert app.seen == []
