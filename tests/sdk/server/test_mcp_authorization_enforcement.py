"""Capability enforcement per JSON-RPC message, list filtering, batches, the 2026-07-28 routing
headers, hostile requests, sessions, rate limits and audit.

Against the official SDK server over real HTTP where it matters (headers, sessions, 403s), and
against ``RecordingApp`` through ``httpx.ASGITransport`` where a socket adds nothing and the
official server cannot help (it refuses JSON-RPC batches, so batch filtering needs an app that
answers them). Tokens always come from, and are verified against, the real IdP.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sdk_server_support import (
    IdP,
    MCPUnderTest,
    RecordingApp,
    legacy_headers,
    modern_headers,
    modern_meta,
    rpc,
)

from sdk.server import ACCESS_TOKEN_SCOPE_KEY, AuditEvent, CBSTMiddleware, ProtectionConfig

RES = "http://127.0.0.1:9/mcp"


@contextlib.asynccontextmanager
async def asgi(idp: IdP, app: Any, **options: Any) -> AsyncIterator[tuple[httpx.AsyncClient, CBSTMiddleware]]:
    mw = CBSTMiddleware(app, ProtectionConfig(issuer=idp.url, resource=RES, **options))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://127.0.0.1:9") as client:
        yield client, mw
    await mw.aclose()


def tool(name: str, id: Any = 1, **args: Any) -> dict[str, Any]:
    return rpc("tools/call", {"name": name, "arguments": args}, id)


def b64h(value: str) -> str:
    return f"=?base64?{base64.b64encode(value.encode()).decode()}?="


# --- 403 insufficient_scope ------------------------------------------------------------------------

def test_denied_tool_call_is_403_insufficient_scope_naming_the_capability(idp: IdP, mcp_json_server: MCPUnderTest) -> None:
    token = idp.new_token("tools/call:echo", mcp_json_server.resource)
    resp = httpx.post(mcp_json_server.url, json=tool("delete-file", 42, path="/docs/readme.md"), headers=legacy_headers(token))
    assert resp.status_code == 403
    challenge = resp.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="tools/call:delete-file"' in challenge
    assert "resource_metadata=" in challenge
    body = resp.json()
    assert body["id"] == 42 and body["error"]["code"] == -32003
    ok = httpx.post(mcp_json_server.url, json=tool("echo", 43, text="x"), headers=legacy_headers(token))
    assert ok.status_code == 200 and ok.json()["result"]["content"][0]["text"] == "x"


def test_resource_traversal_is_refused_with_the_normalised_capability(idp: IdP, mcp_json_server: MCPUnderTest) -> None:
    token = idp.new_token("resources/read:file:///docs/**", mcp_json_server.resource)
    for uri in ("file:///docs/../private/salaries.csv", "file:///docs/%2e%2e/private/salaries.csv", "file:///private/salaries.csv"):
        resp = httpx.post(mcp_json_server.url, json=rpc("resources/read", {"uri": uri}), headers=legacy_headers(token))
        assert resp.status_code == 403, uri
        assert 'scope="resources/read:file:///private/salaries.csv"' in resp.headers["www-authenticate"]
    resp = httpx.post(mcp_json_server.url, json=rpc("resources/read", {"uri": "file:///docs/%2Fetc"}), headers=legacy_headers(token))
    assert resp.status_code == 403  # fails closed: no scope= can name it, but it is refused
    ok = httpx.post(mcp_json_server.url, json=rpc("resources/read", {"uri": "file:///docs/readme.md"}), headers=legacy_headers(token))
    assert ok.status_code == 200


def test_subscribe_needs_read_capability_and_targetless_methods_need_their_own(idp: IdP, mcp_json_server: MCPUnderTest) -> None:
    token = idp.new_token("resources/read:file:///docs/**", mcp_json_server.resource)
    h = legacy_headers(token)
    resp = httpx.post(mcp_json_server.url, json=rpc("resources/subscribe", {"uri": "file:///private/x"}), headers=h)
    assert resp.status_code == 403 and 'scope="resources/subscribe:file:///private/x"' in resp.headers["www-authenticate"]
    resp = httpx.post(mcp_json_server.url, json=rpc("logging/setLevel", {"level": "debug"}), headers=h)
    assert resp.status_code == 403 and 'scope="logging/setLevel"' in resp.headers["www-authenticate"]
    ref = {"type": "ref/prompt", "name": "summarize"}
    resp = httpx.post(mcp_json_server.url, json=rpc("completion/complete", {"ref": ref, "argument": {"name": "text", "value": ""}}),
                      headers=h)
    assert resp.status_code == 403 and 'scope="completion/complete prompts/get:summarize"' in resp.headers["www-authenticate"]


# --- list filtering -----------------------------------------------------------------------------------

SCOPE = "tools/call:echo tools/call:git-* resources/read:file:///docs/** prompts/get:summarize"


@pytest.mark.anyio
@pytest.mark.parametrize("sse", [False, True], ids=["json", "sse"])
async def test_lists_are_filtered_in_json_and_sse_responses(idp: IdP, sse: bool) -> None:
    app = RecordingApp(sse=sse)
    token = idp.new_token(SCOPE, RES)
    async with asgi(idp, app) as (client, _):
        h = legacy_headers(token)

        async def result(method: str) -> dict[str, Any]:
            resp = await client.post("/mcp", json=rpc(method), headers=h)
            assert resp.status_code == 200
            if not sse:
                assert int(resp.headers["content-length"]) == len(resp.content)
                return resp.json()["result"]
            events = [e for e in resp.text.split("\r\n\r\n") if e.strip()]
            assert "notifications/progress" in events[0]  # other events pass untouched
            assert "id: 7" in events[1]  # SSE fields other than data are kept
            data = [ln[len("data: "):] for ln in events[1].split("\r\n") if ln.startswith("data:")]
            return json.loads(data[0])["result"]

        tools = await result("tools/list")
        assert [t["name"] for t in tools["tools"]] == ["echo", "git-log", "git-push"]
        assert tools["cacheScope"] == "private"  # a filtered list must not be shared between tokens
        assert [r["uri"] for r in (await result("resources/list"))["resources"]] == ["file:///docs/a.md", "file:///docs/sub/b.md"]
        templates = (await result("resources/templates/list"))["resourceTemplates"]
        assert [t["uriTemplate"] for t in templates] == ["file:///docs/{name}"]
        assert [p["name"] for p in (await result("prompts/list"))["prompts"]] == ["summarize"]


@pytest.mark.anyio
async def test_list_without_any_capability_of_its_family_is_refused(idp: IdP) -> None:
    token = idp.new_token("tools/call:echo", RES)
    async with asgi(idp, RecordingApp()) as (client, _):
        resp = await client.post("/mcp", json=rpc("prompts/list"), headers=legacy_headers(token))
        # no scope: any prompts/get capability would do, and prompts/get:** is more than most clients may have
        assert resp.status_code == 403 and "scope=" not in resp.headers["www-authenticate"]


# --- batches --------------------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_batches_are_checked_message_by_message(idp: IdP) -> None:
    app = RecordingApp()
    token = idp.new_token(SCOPE, RES)
    async with asgi(idp, app) as (client, _):
        h = legacy_headers(token)
        batch = [tool("echo", 1), rpc("tools/list", None, 2), {"jsonrpc": "2.0", "method": "notifications/initialized"}]
        resp = await client.post("/mcp", json=batch, headers=h)
        assert resp.status_code == 200
        answers = {a["id"]: a for a in resp.json()}
        assert answers[1]["result"] == {"echo": "tools/call"}
        assert [t["name"] for t in answers[2]["result"]["tools"]] == ["echo", "git-log", "git-push"]
        seen = len(app.seen)
        # one denied message refuses the whole batch: nothing reaches the app
        bad = [tool("echo", 1), tool("delete-file", 2), rpc("resources/read", {"uri": "file:///etc/passwd"}, 3)]
        resp = await client.post("/mcp", json=bad, headers=h)
        assert resp.status_code == 403
        challenge = resp.headers["www-authenticate"]
        assert 'scope="tools/call:echo tools/call:delete-file resources/read:file:///etc/passwd"' in challenge
        assert len(app.seen) == seen
        for body, why in [([], "empty"), ([tool("echo", 1)] * 2, "duplicate"), ([tool("echo", i) for i in range(40)], "larger"),
                          ([tool("echo", 1), 5], "not a JSON-RPC")]:
            resp = await client.post("/mcp", json=body, headers=h)
            assert resp.status_code == 400 and why in resp.json()["error"]["message"], body
        assert len(app.seen) == seen


@pytest.mark.anyio
async def test_notifications_and_client_responses_need_only_a_valid_token(idp: IdP) -> None:
    app = RecordingApp()
    token = idp.new_token("tools/call:echo", RES)
    async with asgi(idp, app) as (client, _):
        h = legacy_headers(token)
        resp = await client.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h)
        assert resp.status_code == 202
        resp = await client.post("/mcp", json={"jsonrpc": "2.0", "id": 9, "result": {}}, headers=h)
        assert resp.status_code == 200 and len(app.seen) == 2  # forwarded to the app
        # a "notification" that is really a method call is checked like one
        resp = await client.post("/mcp", json={"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "delete-file"}}, headers=h)
        assert resp.status_code == 403


# --- 2026-07-28 routing headers ---------------------------------------------------------------------------

def _modern(srv: MCPUnderTest, token: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    return httpx.post(srv.url, content=json.dumps(body), headers=headers, timeout=10)


def test_modern_request_with_matching_headers_passes(idp: IdP, mcp_json_server: MCPUnderTest) -> None:
    token = idp.new_token("tools/call:echo", mcp_json_server.resource)
    body = rpc("tools/call", {"name": "echo", "arguments": {"text": "m"}, "_meta": modern_meta()})
    resp = _modern(mcp_json_server, token, body, modern_headers("tools/call", "echo", token))
    assert resp.status_code == 200 and resp.json()["result"]["content"][0]["text"] == "m"
    resp = _modern(mcp_json_server, token, body, modern_headers("tools/call", b64h("echo"), token))
    assert resp.status_code == 200  # the SDK's base64 header form is understood


@pytest.mark.parametrize("case", ["name_says_allowed_tool", "name_base64_mismatch", "method_mismatch", "method_missing",
                                  "name_missing", "version_mismatch", "duplicate_name", "name_on_list",
                                  "legacy_with_lying_name"])
def test_headers_that_disagree_with_the_body_are_refused(idp: IdP, mcp_json_server: MCPUnderTest, case: str) -> None:
    # the token allows echo AND delete-file is what the body asks: a router trusting Mcp-Name would let it through
    token = idp.new_token("tools/call:echo tools/call:delete-file", mcp_json_server.resource)
    meta = modern_meta()
    body = rpc("tools/call", {"name": "delete-file", "arguments": {"path": "/docs/guide.md"}, "_meta": meta})
    h = modern_headers("tools/call", "delete-file", token)
    if case == "name_says_allowed_tool":
        h["Mcp-Name"] = "echo"
    elif case == "name_base64_mismatch":
        h["Mcp-Name"] = b64h("echo")
    elif case == "method_mismatch":
        h["Mcp-Method"] = "tools/list"
    elif case == "method_missing":
        del h["Mcp-Method"]
    elif case == "name_missing":
        del h["Mcp-Name"]
    elif case == "version_mismatch":
        h["MCP-Protocol-Version"] = "2026-12-31"
    elif case == "name_on_list":
        body = rpc("tools/list", {"_meta": meta})
        h = modern_headers("tools/list", "echo", token)
    elif case == "legacy_with_lying_name":
        body = rpc("tools/call", {"name": "delete-file", "arguments": {"path": "/docs/guide.md"}})
        h = legacy_headers(token)
        h["Mcp-Name"] = "echo"
    if case == "duplicate_name":
        headers: Any = [*h.items(), ("Mcp-Name", "echo")]
    else:
        headers = h
    resp = httpx.post(mcp_json_server.url, content=json.dumps(body), headers=headers, timeout=10)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == -32020
    denied = [e for e in mcp_json_server.events if e.reason == "header_mismatch"]
    assert denied and not denied[-1].allowed


@pytest.mark.anyio
async def test_batch_with_routing_headers_is_refused(idp: IdP) -> None:
    token = idp.new_token("tools/call:echo", RES)
    async with asgi(idp, RecordingApp()) as (client, _):
        resp = await client.post("/mcp", json=[tool("echo", 1)], headers=modern_headers("tools/call", "echo", token))
        assert resp.status_code == 400 and resp.json()["error"]["code"] == -32020


# --- hostile requests ------------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_malformed_requests_get_clear_errors_never_500(idp: IdP) -> None:
    app = RecordingApp()
    token = idp.new_token("tools/call:echo", RES)
    async with asgi(idp, app, max_body_size=4096) as (client, _):
        h = legacy_headers(token)
        cases: list[tuple[Any, dict[str, str], int, int | None]] = [
            (b"{not json", h, 400, -32700),
            (b"\xff\xfe", h, 400, -32700),
            (b"[" * 2000 + b"]" * 2000, h, 400, None),
            (json.dumps({"jsonrpc": "1.0", "id": 1, "method": "ping"}), h, 400, -32600),
            (json.dumps({"jsonrpc": "2.0", "id": True, "method": "ping"}), h, 400, -32600),
            (json.dumps({"jsonrpc": "2.0", "id": None, "method": "ping"}), h, 400, -32600),
            (json.dumps({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}), h, 400, -32600),
            (json.dumps({"jsonrpc": "2.0", "id": 1, "method": 7}), h, 400, -32600),
            (json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": ["echo"]}), h, 400, -32600),
            (json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": 5}}), h, 400, -32602),
            (json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call"}), h, 400, -32602),
            (json.dumps({"jsonrpc": "2.0", "id": 1, "result": {}, "error": {}}), h, 400, -32600),
            (json.dumps("just a string"), h, 400, -32600),
            # parsers disagree on which copy of a repeated member wins: refused outright
            (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"delete-file"}}', h, 400, -32600),
            (b'{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"x"}}', h, 400, -32600),
            # ... also when one copy is spelled with escapes
            (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","\\u006eame":"delete-file"}}', h, 400, -32600),
            (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","_meta":{},"_met\\u0061":{}}}', h, 400, -32600),
            (json.dumps(tool("echo")), {**h, "Content-Type": "text/plain"}, 415, None),
            (json.dumps(tool("echo")), {k: v for k, v in h.items() if k != "Content-Type"}, 415, None),
            (json.dumps(tool("echo")), {**h, "Content-Type": "application/jsonx"}, 415, None),
            (json.dumps(tool("echo", text="x" * 5000)), h, 413, None),
        ]
        for content, headers, status, code in cases:
            resp = await client.post("/mcp", content=content, headers=headers)
            assert resp.status_code == status, (content[:80], resp.text)
            if code is not None:
                assert resp.json()["error"]["code"] == code
        # a body without Content-Length that grows past the limit is cut off too
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 1000
        resp = await client.post("/mcp", content=chunks(), headers=h)
        assert resp.status_code == 413
        resp = await client.post("/mcp", content=json.dumps(tool("echo")),
                                 headers=[*h.items(), ("Content-Type", "text/plain")])
        assert resp.status_code == 400  # a repeated Content-Type: which one would the app read?
        assert app.seen == []
        # content type with parameters is fine
        resp = await client.post("/mcp", content=json.dumps(tool("echo")), headers={**h, "Content-Type": "application/json; charset=utf-8"})
        assert resp.status_code == 200


@pytest.mark.anyio
async def test_unknown_or_weird_methods_are_refused_not_passed(idp: IdP) -> None:
    token = idp.new_token("tools/call:** resources/read:** prompts/get:**", RES)
    async with asgi(idp, RecordingApp()) as (client, _):
        for method in ("admin/shutdown", "tools/call ", "../tools/call", "x" * 200, "notifications/../tools/call"):
            resp = await client.post("/mcp", json=rpc(method, {"name": "echo"}), headers=legacy_headers(token))
            assert resp.json()["error"]["code"] == -32601, method  # method not found, not a step-up challenge


# --- what the app gets -------------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_the_app_gets_the_verified_token_and_never_the_bearer_credential(idp: IdP) -> None:
    app = RecordingApp()
    client_id, secret = idp.client("tools/call:echo", RES)
    token = idp.token((client_id, secret), resource=RES)
    async with asgi(idp, app) as (client, _):
        assert (await client.post("/mcp", json=tool("echo"), headers=legacy_headers(token))).status_code == 200
    scope = app.seen[-1]["scope"]
    assert all(k != b"authorization" for k, _ in scope["headers"])
    assert scope[ACCESS_TOKEN_SCOPE_KEY].client_id == client_id
    assert str(scope[ACCESS_TOKEN_SCOPE_KEY].scope.to_scope()) == "tools/call:echo"


# --- rate limits -------------------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_tool_calls_are_rate_limited_per_client_with_429_and_retry_after(idp: IdP) -> None:
    token = idp.new_token("tools/call:**", RES)
    other = idp.new_token("tools/call:**", RES)
    async with asgi(idp, RecordingApp(), tool_rate_overrides={"git-log": None, "git-push": 1}) as (client, mw):
        assert mw.config.tool_rate == 3.0  # the design default
        statuses = [(await client.post("/mcp", json=tool("echo", i), headers=legacy_headers(token))).status_code for i in range(5)]
        assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]
        resp = await client.post("/mcp", json=tool("echo", 9), headers=legacy_headers(token))
        assert resp.status_code == 429 and int(resp.headers["retry-after"]) >= 1
        assert resp.json()["error"]["code"] == -32004 and resp.json()["id"] == 9
        # another client has its own bucket; non-tool methods are not limited
        assert (await client.post("/mcp", json=tool("echo"), headers=legacy_headers(other))).status_code == 200
        assert (await client.post("/mcp", json=rpc("tools/list"), headers=legacy_headers(token))).status_code == 200
        # per-tool overrides: unlimited, and a slower bucket of its own
        for i in range(10):
            assert (await client.post("/mcp", json=tool("git-log", i), headers=legacy_headers(token))).status_code == 200
        assert (await client.post("/mcp", json=tool("git-push"), headers=legacy_headers(token))).status_code == 200
        assert (await client.post("/mcp", json=tool("git-push"), headers=legacy_headers(token))).status_code == 429
        await anyio.sleep(0.4)  # 3/s refills one call in 1/3 s
        assert (await client.post("/mcp", json=tool("echo"), headers=legacy_headers(token))).status_code == 200


# --- audit --------------------------------------------------------------------------------------------------

@pytest.mark.anyio
@pytest.mark.parametrize("log_args", [False, True])
async def test_every_call_is_audited_arguments_only_when_configured(idp: IdP, log_args: bool) -> None:
    events: list[AuditEvent] = []
    client_id, secret = idp.client("tools/call:echo", RES)
    token = idp.token((client_id, secret), resource=RES)
    async with asgi(idp, RecordingApp(), audit=events.append, log_tool_arguments=log_args) as (client, _):
        await client.post("/mcp", json=tool("echo", 1, text="secret"), headers=legacy_headers(token))
        await client.post("/mcp", json=tool("delete-file", 2, path="/x"), headers=legacy_headers(token))
        await client.post("/mcp", json=tool("echo", 3), headers=legacy_headers(None))
    ok, denied, anon = events
    assert (ok.allowed, ok.reason, ok.method, ok.target, ok.status) == (True, "allowed", "tools/call", "echo", 200)
    assert ok.client_id == client_id and ok.subject == client_id and ok.jti and ok.duration_ms is not None
    assert ok.time > 0 and ok.request_id == 1
    assert (denied.allowed, denied.reason, denied.target, denied.status) == (False, "insufficient_scope", "delete-file", 403)
    assert (anon.allowed, anon.reason, anon.status, anon.client_id) == (False, "missing_token", 401, None)
    if log_args:
        assert ok.arguments == {"text": "secret"}
    else:
        assert ok.arguments is None and "secret" not in json.dumps(ok.to_dict())


def test_default_audit_sink_logs_json_lines(idp: IdP, caplog: pytest.LogCaptureFixture) -> None:
    from sdk.server import LoggerSink

    sink = LoggerSink("cbst.audit.test")
    with caplog.at_level("INFO", logger="cbst.audit.test"):
        sink(AuditEvent(time=1.0, allowed=False, reason="insufficient_scope", method="tools/call", target="x"))
    line = json.loads(caplog.records[-1].getMessage())
    assert line == {"event": "mcp.call", "time": 1.0, "allowed": False, "reason": "insufficient_scope",
                    "method": "tools/call", "target": "x"}


# --- fuzz: whatever the body, a clear answer and never a 500 ------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_methods = st.sampled_from(["tools/call", "tools/list", "resources/read", "prompts/get", "initialize", "ping",
                            "notifications/initialized", "resources/subscribe", "x/y", ""])
_messages = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "2.0", "1.0"]), "method": _methods},
    optional={"id": st.one_of(st.integers(), st.text(max_size=5), st.none(), st.booleans()),
              "params": st.one_of(_json_values, st.fixed_dictionaries(
                  {}, optional={"name": st.one_of(st.sampled_from(["echo", "delete-file"]), _json_values),
                                "uri": st.one_of(st.sampled_from(["file:///docs/a.md", "file:///docs/../etc/x"]), _json_values),
                                "arguments": _json_values}))},
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(_messages, st.lists(_messages, max_size=4), _json_values, st.binary(max_size=64)),
       name_header=st.one_of(st.none(), st.sampled_from(["echo", "delete-file", "=?base64?ZWNobw==?=", "=?base64?!?="])),
       modern=st.booleans())
def test_fuzzed_requests_never_500_and_never_reach_the_app_unchecked(idp: IdP, fuzz_token: str, body: Any,
                                                                      name_header: str | None, modern: bool) -> None:
    app = RecordingApp()

    async def main() -> int:
        mw = CBSTMiddleware(app, ProtectionConfig(issuer=idp.url, resource=RES, tool_rate=None))
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        h = legacy_headers(fuzz_token)
        if modern:
            h["MCP-Protocol-Version"] = "2026-07-28"
        if name_header is not None:
            h["Mcp-Name"] = name_header
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://127.0.0.1:9") as c:
            resp = await c.post("/mcp", content=content, headers=h)
        await mw.aclose()
        return resp.status_code

    status = anyio.run(main)
    assert status in {200, 202, 400, 403}, status
    for seen in app.seen:  # whatever reached the app was allowed by the token
        data = json.loads(seen["body"])
        for msg in data if isinstance(data, list) else [data]:
            if msg.get("method") == "tools/call":
                assert msg["params"]["name"] == "echo"
            if msg.get("method") in ("resources/read", "resources/subscribe"):
                assert msg["params"]["uri"] == "file:///docs/a.md"
            assert msg.get("method") != "prompts/get"


@pytest.fixture(scope="module")
def fuzz_token(idp: IdP) -> str:
    return idp.new_token("tools/call:echo resources/read:file:///docs/**", RES)


@pytest.mark.anyio
async def test_enforcement_holds_when_the_protected_app_is_mounted_under_a_prefix(idp: IdP) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    app = RecordingApp()
    token = idp.new_token("tools/call:echo", RES)
    mw = CBSTMiddleware(app, ProtectionConfig(issuer=idp.url, resource=RES))
    outer = Starlette(routes=[Mount("/api", app=mw)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=outer), base_url="http://127.0.0.1:9") as client:
        resp = await client.post("/api/mcp", json=tool("delete-file"), headers=legacy_headers(token))
        assert resp.status_code == 403
        resp = await client.post("/api/mcp", json=tool("echo"), headers=legacy_headers(token))
        assert resp.status_code == 200
        assert (await client.get("/api/.well-known/oauth-protected-resource/mcp")).status_code == 200
    await mw.aclose()
