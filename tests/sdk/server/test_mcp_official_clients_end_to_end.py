"""End to end: a real IdP, the example MCP server (official SDK) behind CBSTMiddleware, and the
official MCP Python client in both protocol generations (mode="auto" → 2026-07-28,
mode="legacy" → initialize handshake with a session)."""

from __future__ import annotations

import pytest
from mcp.shared.exceptions import MCPError

from sdk_server_support import IdP, MCPUnderTest, mcp_client

pytestmark = pytest.mark.anyio
MODES = ["auto", "legacy"]
SERVERS = ["mcp_server", "mcp_json_server"]  # sessions + SSE responses; stateless + JSON responses


@pytest.fixture(params=SERVERS)
def srv(request: pytest.FixtureRequest) -> MCPUnderTest:
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("mode", MODES)
async def test_allowed_calls_succeed_and_lists_are_filtered(idp: IdP, srv: MCPUnderTest, mode: str) -> None:
    token = idp.new_token("tools/call:echo tools/call:git-* resources/read:file:///docs/** prompts/get:summarize",
                          srv.resource)
    async with mcp_client(srv.url, token, mode=mode) as client:
        result = await client.call_tool("echo", {"text": "hi"})
        assert not result.is_error and result.content[0].text == "hi"
        assert not (await client.call_tool("git-status", {})).is_error
        tools = {t.name for t in (await client.list_tools()).tools}
        assert tools == {"echo", "git-status"}
        resources = {str(r.uri) for r in (await client.list_resources()).resources}
        assert resources == {"file:///docs/readme.md", "file:///docs/guide.md"}
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert templates == {"file:///docs/{name}"}
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert prompts == {"summarize"}
        read = await client.read_resource("file:///docs/readme.md")
        assert "Example" in read.contents[0].text
        prompt = await client.get_prompt("summarize", {"text": "x"})
        assert prompt.messages


@pytest.mark.parametrize("mode", MODES)
async def test_disallowed_calls_are_refused(idp: IdP, srv: MCPUnderTest, mode: str) -> None:
    token = idp.new_token("tools/call:echo resources/read:file:///docs/**", srv.resource)
    async with mcp_client(srv.url, token, mode=mode) as client:
        with pytest.raises(MCPError) as exc:
            await client.call_tool("delete-file", {"path": "/docs/readme.md"})
        assert "delete-file" in str(exc.value)
        with pytest.raises(MCPError):
            await client.read_resource("file:///private/salaries.csv")
        with pytest.raises(MCPError):
            await client.read_resource("file:///docs/../private/salaries.csv")
        with pytest.raises(MCPError):
            await client.get_prompt("summarize", {"text": "x"})
        with pytest.raises(MCPError):  # no prompts capability at all: the list is refused too
            await client.list_prompts()
        # the session (or the connection) survives a refusal
        assert (await client.call_tool("echo", {"text": "still here"})).content[0].text == "still here"


@pytest.mark.parametrize("mode", MODES)
async def test_token_for_another_audience_cannot_connect(idp: IdP, srv: MCPUnderTest, mode: str) -> None:
    token = idp.new_token("tools/call:echo", "http://127.0.0.1:1/elsewhere")
    with pytest.raises(BaseException):  # noqa: B017 - the client fails to connect (401), however it reports it
        async with mcp_client(srv.url, token, mode=mode) as client:
            await client.call_tool("echo", {"text": "x"})


async def test_default_rate_limit_reaches_the_official_client_as_an_error(idp: IdP) -> None:
    from sdk_server_support import protected_example

    with protected_example(idp, stateless=True, json_response=True) as server:  # default: 3 tool calls/s
        token = idp.new_token("tools/call:echo", server.resource)
        async with mcp_client(server.url, token, mode="auto") as client:
            errors = 0
            for i in range(6):
                try:
                    await client.call_tool("echo", {"text": str(i)})
                except MCPError as exc:
                    assert "too many tool calls" in str(exc)
                    errors += 1
            assert 1 <= errors <= 3
        assert any(e.reason == "rate_limited" and e.status == 429 for e in server.events)
