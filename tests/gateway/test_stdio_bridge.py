"""The stdio mode, unprotected: ``StdioBridge`` exposing a stdio MCP server over streamable HTTP.

The real third-party ``@modelcontextprotocol/server-filesystem`` (npm, Node) and a stdio server
built on the official Python SDK, driven by the official MCP Python client through the bridge.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from gateway import StdioBridge, StdioStartError

from gateway_support import ThreadedServer, filesystem_command, stdio_test_command
from test_http_proxy import ACCEPT, INIT


@pytest.fixture
def fs_bridge(filesystem_server: Path, served_dir: Path) -> Any:
    bridge = StdioBridge(filesystem_command(filesystem_server, served_dir), request_timeout=20)
    with ThreadedServer(bridge, lifespan="on") as srv:
        yield srv.url + "/mcp", bridge


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_filesystem_server_through_the_bridge(fs_bridge: tuple[str, StdioBridge], served_dir: Path,
                                              mode: str) -> None:
    url, _ = fs_bridge

    async def run() -> None:
        async with Client(url, mode=mode) as client:
            assert client.protocol_version in ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"read_text_file", "write_file", "list_directory"} <= tools
            result = await client.call_tool("read_text_file", {"path": str(served_dir / "docs" / "hello.txt")})
            assert not result.is_error, result
            assert "hello from the filesystem server" in result.content[0].text
            result = await client.call_tool("write_file", {"path": str(served_dir / "new.txt"), "content": "x"})
            assert not result.is_error, result
            # The server's own sandbox still applies behind the gateway.
            result = await client.call_tool("read_text_file", {"path": "/etc/hostname"})
            assert result.is_error

    anyio.run(run)
    assert (served_dir / "new.txt").read_text() == "x"


def test_concurrent_clients_share_one_child_without_id_collisions(fs_bridge: tuple[str, StdioBridge],
                                                                  served_dir: Path) -> None:
    url, bridge = fs_bridge
    pid = bridge.child.pid
    for i in range(5):
        (served_dir / f"f{i}.txt").write_text(f"content {i}")

    async def one(i: int, out: dict[int, str]) -> None:
        async with Client(url, mode="legacy") as client:  # every client numbers its requests from the same ids
            for _ in range(3):
                r = await client.call_tool("read_text_file", {"path": str(served_dir / f"f{i}.txt")})
                out.setdefault(i, r.content[0].text)
                assert r.content[0].text == f"content {i}"

    async def run() -> dict[int, str]:
        out: dict[int, str] = {}
        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(one, i, out)
        return out

    assert anyio.run(run) == {i: f"content {i}" for i in range(5)}
    assert bridge.child.pid == pid and len(bridge.sessions) == 0  # clients DELETEd their sessions


def test_session_rules(fs_bridge: tuple[str, StdioBridge]) -> None:
    url, _ = fs_bridge
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    assert httpx.post(url, json=listing, headers=ACCEPT).status_code == 400  # no session
    assert httpx.post(url, json=listing, headers={**ACCEPT, "mcp-session-id": "nope"}).status_code == 404
    r = httpx.post(url, json=INIT, headers=ACCEPT)
    assert r.status_code == 200 and r.json()["result"]["serverInfo"]["name"]
    sid = r.headers["mcp-session-id"]
    # JSON answer when the client does not accept SSE; the caller's id comes back unchanged.
    r = httpx.post(url, json={**listing, "id": "abc"}, headers={"mcp-session-id": sid, "accept": "application/json"})
    assert r.status_code == 200 and r.json()["id"] == "abc" and r.json()["result"]["tools"]
    r = httpx.post(url, content=b"{oops", headers={**ACCEPT, "mcp-session-id": sid})
    assert r.status_code == 400 and r.json()["error"]["code"] == -32700
    assert httpx.delete(url, headers={"mcp-session-id": sid}).status_code == 200
    assert httpx.post(url, json=listing, headers={**ACCEPT, "mcp-session-id": sid}).status_code == 404


def test_modern_requests_are_told_to_use_the_handshake(fs_bridge: tuple[str, StdioBridge]) -> None:
    url, _ = fs_bridge
    r = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {}},
                   headers={**ACCEPT, "mcp-protocol-version": "2026-07-28", "mcp-method": "server/discover"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == -32022 and error["data"]["requested"] == "2026-07-28"
    assert error["data"]["supported"] and error["data"]["supported"][0].startswith("202")


# -- the official-SDK stdio server: progress, crashes, restarts ------------------------------------

@pytest.fixture
def py_bridge() -> Any:
    bridge = StdioBridge(stdio_test_command(), request_timeout=20, backoff=0.05)
    with ThreadedServer(bridge, lifespan="on") as srv:
        yield srv.url + "/mcp", bridge


def test_progress_is_relayed_with_the_callers_token(py_bridge: tuple[str, StdioBridge]) -> None:
    url, _ = py_bridge
    seen: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))

    async def run() -> str:
        async with Client(url, mode="legacy") as client:
            return (await client.call_tool("slow", {}, progress_callback=on_progress)).content[0].text

    assert anyio.run(run) == "done"
    assert seen == [(1, "first half")]


def test_a_crashed_child_fails_the_call_in_flight_and_is_restarted(py_bridge: tuple[str, StdioBridge]) -> None:
    url, bridge = py_bridge
    first_pid = bridge.child.pid

    async def run() -> tuple[MCPError, str]:
        async with Client(url, mode="legacy") as client:
            try:
                await client.call_tool("crash", {})
            except MCPError as exc:
                crashed = exc
            else:
                raise AssertionError("the call that crashed the child did not fail")
            # The same HTTP session keeps working: the next call waits for the restarted child.
            after = await client.call_tool("echo", {"text": "back"})
            return crashed, after.content[0].text

    crashed, after = anyio.run(run)
    assert crashed.error.code == -32603 and "exited (code 3)" in crashed.error.message
    assert after.startswith("back (pid ")
    assert bridge.child.pid != first_pid and bridge.child.restarts == 1


def test_a_crash_error_names_the_upstream(py_bridge: tuple[str, StdioBridge]) -> None:
    url, bridge = py_bridge
    r = httpx.post(url, json=INIT, headers=ACCEPT)
    sid = r.headers["mcp-session-id"]
    r = httpx.post(url, json={"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "crash", "arguments": {}}},
                   headers={"accept": "application/json", "mcp-session-id": sid}, timeout=20)
    body = r.json()
    assert body["id"] == 7 and body["error"]["code"] == -32603
    assert "exited (code 3)" in body["error"]["message"] and "upstream_servers.py" in body["error"]["message"]


def test_a_killed_child_is_restarted(py_bridge: tuple[str, StdioBridge]) -> None:
    url, bridge = py_bridge
    pid = bridge.child.pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while bridge.child.pid in (None, pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bridge.child.pid not in (None, pid)

    async def run() -> str:
        async with Client(url, mode="legacy") as client:
            return (await client.call_tool("echo", {"text": "hi"})).content[0].text

    assert anyio.run(run) == f"hi (pid {bridge.child.pid})"


def test_a_child_that_cannot_start_is_a_clear_error() -> None:
    async def start(command: list[str]) -> str:
        bridge = StdioBridge(command, start_timeout=2)
        with pytest.raises(StdioStartError) as info:
            await bridge.start()
        await bridge.aclose()
        return str(info.value)

    message = anyio.run(start, ["/nonexistent/mcp-server", "--flag"])
    assert "cannot start stdio MCP server `/nonexistent/mcp-server --flag`" in message
    message = anyio.run(start, [sys.executable, "-c", "import sys; sys.stderr.write('no config\\n'); sys.exit(4)"])
    assert "exited with code 4 before answering initialize" in message and "no config" in message
    start_time = time.monotonic()
    message = anyio.run(start, [sys.executable, "-c", "import time; time.sleep(30)"])
    assert "did not answer initialize within 2s" in message and time.monotonic() - start_time < 8


def test_a_child_that_keeps_crashing_is_fatal() -> None:
    """Crash loop: the child answers initialize, then dies at once, again and again."""
    script = ("import sys, json; line = sys.stdin.readline(); req = json.loads(line); "
              "print(json.dumps({'jsonrpc': '2.0', 'id': req['id'], 'result': {'protocolVersion': '2025-06-18', "
              "'capabilities': {}, 'serverInfo': {'name': 'flaky', 'version': '0'}}}), flush=True); "
              "sys.stdin.readline(); sys.exit(5)")
    reasons: list[str] = []

    async def run() -> StdioBridge:
        bridge = StdioBridge([sys.executable, "-c", script], max_restarts=2, backoff=0.01, on_fatal=reasons.append)
        await bridge.start()
        deadline = time.monotonic() + 20
        while not reasons and time.monotonic() < deadline:
            await anyio.sleep(0.05)
        answer = await bridge.child.request({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await bridge({"type": "http", "method": "GET", "path": "/healthz", "headers": []}, None, send)
        assert sent[0]["status"] == 503 and json.loads(sent[1]["body"]) == {"status": "unavailable"}
        await bridge.aclose()
        assert answer["error"]["code"] == -32603 and "unavailable" in answer["error"]["message"]
        return bridge

    anyio.run(run)
    assert reasons and "giving up" in reasons[0]


# -- the 2026-07-28 generation, when the stdio server speaks it ------------------------------------

def test_a_modern_client_gets_the_2026_generation_when_the_child_speaks_it(py_bridge: tuple[str, StdioBridge]) -> None:
    """The official SDK's stdio server speaks both generations, one per connection: the gateway
    runs a second process for 2026-07-28 clients, next to the handshake one."""
    url, bridge = py_bridge
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def run() -> tuple[str, str, str, str]:
        async with Client(url, mode="auto") as modern, Client(url, mode="legacy") as legacy:
            m = (await modern.call_tool("echo", {"text": "m"})).content[0].text
            slow = (await modern.call_tool("slow", {}, progress_callback=on_progress)).content[0].text
            h = (await legacy.call_tool("echo", {"text": "h"})).content[0].text
            return modern.protocol_version, legacy.protocol_version, m, h + slow

    modern_version, legacy_version, m, h = anyio.run(run)
    assert modern_version == "2026-07-28" and legacy_version != "2026-07-28"
    assert bridge.modern_child is not None
    assert m == f"m (pid {bridge.modern_child.pid})" and h == f"h (pid {bridge.child.pid})done"
    assert progress == [1]


def test_modern_can_be_switched_off(tmp_path: Path) -> None:
    bridge = StdioBridge(stdio_test_command(), modern=False)
    with ThreadedServer(bridge, lifespan="on") as srv:
        async def run() -> str:
            async with Client(srv.url + "/mcp", mode="auto") as client:
                return client.protocol_version

        assert anyio.run(run) != "2026-07-28"
    assert bridge.modern_child is None
