"""The gateway as shipped: a real ``cbst-gateway`` process with CBST enforcement, a real IdP
issuing tokens, driven by the official MCP Python client.

HTTP mode in front of an official-SDK server; stdio mode around the real npm
``@modelcontextprotocol/server-filesystem`` and around an official-SDK stdio server that crashes.
Allowed calls pass, disallowed ones are refused by the gateway (the upstream never sees them),
lists are filtered, the upstream never sees the Authorization header.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from gateway_support import BIN, IdP, filesystem_command, free_port, mcp_client, stdio_test_command
from upstream_servers import RELEASE

MODES = ["legacy", "auto"]
pytestmark = pytest.mark.slow  # real cbst-gateway and idp processes


def start_gateway(gateway_process: Any, idp: IdP, *upstream: str, tool_rate: str = "1000") -> tuple[Any, str]:
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    gw = gateway_process("--issuer", idp.url, "--resource", resource, "--tool-rate", tool_rate,
                         "--log-level", "warning", *upstream, port=port)
    return gw, resource


@pytest.fixture
def http_gateway(gateway_process: Any, idp: IdP, http_upstream: tuple[str, Any]) -> tuple[str, Any]:
    upstream, recorder = http_upstream
    _, resource = start_gateway(gateway_process, idp, "--upstream", upstream)
    return resource, recorder


@pytest.mark.parametrize("mode", MODES)
def test_http_upstream_allowed_refused_filtered(idp: IdP, http_gateway: tuple[str, Any], mode: str) -> None:
    url, recorder = http_gateway
    token = idp.token("tools/call:echo tools/call:slow resources/read:file:///docs/**", url)
    before = len(recorder.seen)
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)
        RELEASE.set()

    async def run() -> None:
        async with mcp_client(url, token, mode=mode) as client:
            assert {t.name for t in (await client.list_tools()).tools} == {"echo", "slow"}
            assert (await client.call_tool("echo", {"text": "hi"})).content[0].text == "hi"
            with pytest.raises(MCPError) as refused:
                await client.call_tool("delete-file", {"path": "/x"})
            assert "delete-file" in str(refused.value)
            assert {str(r.uri) for r in (await client.list_resources()).resources} == {"file:///docs/readme.txt"}
            assert (await client.read_resource("file:///docs/readme.txt")).contents[0].text == "public docs"
            with pytest.raises(MCPError):
                await client.read_resource("file:///secret/keys.txt")
            with pytest.raises(MCPError):
                await client.get_prompt("summarize", {"text": "x"})
            # Streaming survives enforcement: progress arrives before the result is produced.
            assert (await client.call_tool("slow", {}, progress_callback=on_progress)).content[0].text == "released"

    anyio.run(run)
    assert progress == [1]
    seen = recorder.seen[before:]
    assert seen, "nothing reached the upstream"
    assert all("authorization" not in h for h in seen)
    if mode == "auto":  # 2026-07-28: the mirrored routing headers travel upstream
        assert {"mcp-method": "tools/call", "mcp-name": "echo"}.items() <= next(
            h for h in seen if h.get("mcp-name") == "echo").items()


def test_refused_calls_never_reach_the_upstream(idp: IdP, http_gateway: tuple[str, Any]) -> None:
    url, recorder = http_gateway
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    assert httpx.post(url, json=init, headers=headers).status_code == 401  # no token
    token = idp.token("tools/call:echo", url)
    r = httpx.post(url, json=init, headers={**headers, "authorization": f"Bearer {token}"})
    assert r.status_code == 200
    sid = r.headers["mcp-session-id"]
    before = len(recorder.seen)
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "delete-file", "arguments": {"path": "/"}}}
    r = httpx.post(url, json=call, headers={**headers, "authorization": f"Bearer {token}", "mcp-session-id": sid,
                                            "mcp-protocol-version": "2025-06-18"})
    assert r.status_code in (200, 403)
    assert "delete-file" in r.text
    assert len(recorder.seen) == before
    other = idp.token("tools/call:echo", "http://127.0.0.1:1/other")  # a token for another audience
    assert httpx.post(url, json=init, headers={**headers, "authorization": f"Bearer {other}"}).status_code == 401


def test_bad_http_upstream_is_a_clear_error(idp: IdP, gateway_process: Any) -> None:
    upstream = f"http://127.0.0.1:{free_port()}/mcp"
    _, url = start_gateway(gateway_process, idp, "--upstream", upstream, "--timeout", "2")
    token = idp.token("tools/call:echo", url)

    async def run() -> None:
        async with mcp_client(url, token, mode="legacy"):
            pass

    start = time.monotonic()
    with pytest.raises(BaseException) as info:
        anyio.run(run)
    assert time.monotonic() - start < 15
    errors = [e for e in _leaves(info.value) if isinstance(e, MCPError)]
    assert errors and errors[0].error.code == -32603, _leaves(info.value)
    assert upstream in errors[0].error.message and "unreachable" in errors[0].error.message


def _leaves(exc: BaseException) -> list[BaseException]:
    out, stack = [], [exc]
    while stack:
        e = stack.pop()
        inner = getattr(e, "exceptions", None)
        if inner:
            stack.extend(inner)
        else:
            out.append(e)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_stdio_filesystem_server_allowed_refused_filtered(idp: IdP, gateway_process: Any, filesystem_server: Path,
                                                          served_dir: Path, mode: str) -> None:
    command = " ".join(filesystem_command(filesystem_server, served_dir))
    _, url = start_gateway(gateway_process, idp, "--upstream-stdio", command)
    token = idp.token("tools/call:read_text_file tools/call:list_directory", url)

    async def run() -> None:
        async with mcp_client(url, token, mode=mode) as client:
            assert {t.name for t in (await client.list_tools()).tools} == {"read_text_file", "list_directory"}
            read = await client.call_tool("read_text_file", {"path": str(served_dir / "docs" / "hello.txt")})
            assert "hello from the filesystem server" in read.content[0].text
            with pytest.raises(MCPError):
                await client.call_tool("write_file", {"path": str(served_dir / "pwned.txt"), "content": "x"})
            with pytest.raises(MCPError):
                await client.call_tool("move_file", {"source": str(served_dir / "secret.txt"),
                                                     "destination": str(served_dir / "moved.txt")})

    anyio.run(run)
    assert not (served_dir / "pwned.txt").exists() and (served_dir / "secret.txt").exists()


def test_stdio_child_crash_is_survived(idp: IdP, gateway_process: Any) -> None:
    command = " ".join(stdio_test_command())
    gw, url = start_gateway(gateway_process, idp, "--upstream-stdio", command)
    token = idp.token("tools/call:echo tools/call:crash", url)

    async def run() -> tuple[str, str, str]:
        async with mcp_client(url, token, mode="legacy") as client:
            before = (await client.call_tool("echo", {"text": "a"})).content[0].text
            with pytest.raises(MCPError) as crashed:
                await client.call_tool("crash", {})
            after = (await client.call_tool("echo", {"text": "b"})).content[0].text
            return before, crashed.value.error.message, after

    before, message, after = anyio.run(run)
    health = httpx.get(gw.url + "/healthz").json()  # public: no token needed
    assert health == {"status": "ok"}  # serving again (and saying nothing of the child)
    assert "exited (code 3)" in message and "restarting" in message
    assert before.startswith("a (pid ") and after.startswith("b (pid ") and before[7:] != after[7:]
    assert "exited with code 3" in gw.output()


@pytest.mark.parametrize("mode", MODES)
def test_stdio_official_sdk_server_in_both_generations(idp: IdP, gateway_process: Any, mode: str) -> None:
    _, url = start_gateway(gateway_process, idp, "--upstream-stdio", " ".join(stdio_test_command()))
    token = idp.token("tools/call:echo", url)

    async def run() -> str:
        async with mcp_client(url, token, mode=mode) as client:
            assert {t.name for t in (await client.list_tools()).tools} == {"echo"}
            before = (await client.call_tool("echo", {"text": "x"})).content[0].text
            assert before.startswith("x (pid ")
            with pytest.raises(MCPError) as refused:
                await client.call_tool("crash", {})
            assert "crash" in str(refused.value)
            # refused at the gateway: the child never ran the tool, so it is the same process
            assert (await client.call_tool("echo", {"text": "x"})).content[0].text == before
            return client.protocol_version

    version = anyio.run(run)
    assert (version == "2026-07-28") == (mode == "auto")


def test_stdio_command_that_cannot_start_exits_non_zero(idp: IdP, tmp_path: Path) -> None:
    exe = str(BIN / "cbst-gateway")
    start = time.monotonic()
    done = subprocess.run([exe, "--issuer", idp.url, "--resource", "http://127.0.0.1:9/mcp", "--port", str(free_port()),
                           "--upstream-stdio", "/nonexistent/mcp-server --stdio"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "cannot start stdio MCP server `/nonexistent/mcp-server --stdio`" in done.stderr
    crash = f"{sys.executable} -c 'import sys; sys.exit(7)'"
    done = subprocess.run([exe, "--issuer", idp.url, "--resource", "http://127.0.0.1:9/mcp", "--port", str(free_port()),
                           "--upstream-stdio", crash], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "exited with code 7 before answering initialize" in done.stderr
    assert time.monotonic() - start < 30


def test_command_line_is_validated() -> None:
    exe = str(BIN / "cbst-gateway")
    base = ["--issuer", "http://127.0.0.1:9", "--resource", "http://127.0.0.1:9/mcp", "--port", "1"]
    for extra in (["--no-auth", "--host", "0.0.0.0", "--upstream", "http://127.0.0.1:1/mcp"],
                  ["--upstream", "ftp://x/mcp"],
                  [],  # neither --upstream nor --upstream-stdio
                  ["--upstream", "http://127.0.0.1:1/mcp", "--upstream-stdio", "x"]):
        done = subprocess.run([exe, *base, *extra], capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, (extra, done.stderr)
    done = subprocess.run([exe, "--issuer", "http://idp.example", "--resource", "http://127.0.0.1:9/mcp", "--port", "1",
                           "--upstream", "http://127.0.0.1:1/mcp"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "plain http" in done.stderr


def test_a_crash_looping_stdio_server_stops_the_gateway(tmp_path: Path) -> None:
    """It answers initialize, then dies as soon as it is told initialized — again and again."""
    flaky = tmp_path / "flaky.py"
    flaky.write_text(
        "import sys, json\n"
        "req = json.loads(sys.stdin.readline())\n"
        "print(json.dumps({'jsonrpc': '2.0', 'id': req['id'], 'result': {'protocolVersion': '2025-06-18',"
        " 'capabilities': {}, 'serverInfo': {'name': 'flaky', 'version': '0'}}}), flush=True)\n"
        "sys.stdin.readline(); sys.exit(5)\n")
    start = time.monotonic()
    done = subprocess.run([str(BIN / "cbst-gateway"), "--issuer", "http://127.0.0.1:9", "--resource",
                           "http://127.0.0.1:9/mcp", "--port", str(free_port()), "--max-restarts", "2",
                           "--upstream-stdio", f"{sys.executable} {flaky}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "crashed 3 times within 60s; giving up" in done.stderr
    assert time.monotonic() - start < 30


def test_a_port_in_use_is_exit_status_1(http_upstream: tuple[str, Any]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([str(BIN / "cbst-gateway"), "--issuer", "http://127.0.0.1:9", "--resource",
                               f"http://127.0.0.1:{port}/mcp", "--port", str(port), "--upstream", http_upstream[0]],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "address already in use" in done.stderr


def test_gateway_serves_resource_metadata_and_rate_limits(idp: IdP, gateway_process: Any,
                                                          http_upstream: tuple[str, Any]) -> None:
    _, url = start_gateway(gateway_process, idp, "--upstream", http_upstream[0], tool_rate="1")
    meta = httpx.get(url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp"))
    assert meta.status_code == 200
    assert meta.json()["resource"] == url and idp.url in meta.json()["authorization_servers"]
    token = idp.token("tools/call:echo", url)
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json",
               "authorization": f"Bearer {token}"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    r = httpx.post(url, json=init, headers=headers)
    headers |= {"mcp-session-id": r.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
    statuses = []
    for i in range(3):
        call = {"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}}}
        r = httpx.post(url, json=call, headers=headers)
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
    assert statuses[0] == 200 and 429 in statuses[1:]


def test_every_option_is_documented() -> None:
    from gateway.cli import build_parser

    doc = (Path(__file__).resolve().parents[2] / "docs" / "gateway.md").read_text()
    options = [o for action in build_parser()._actions for o in action.option_strings if o.startswith("--")]
    missing = [o for o in options if f"`{o}" not in doc and o != "--help"]
    assert not missing, f"docs/gateway.md does not document {missing}"


def test_stopping_the_gateway_stops_its_stdio_servers(idp: IdP, gateway_process: Any) -> None:
    gw, url = start_gateway(gateway_process, idp, "--upstream-stdio", " ".join(stdio_test_command()))
    token = idp.token("tools/call:echo", url)

    async def run() -> None:
        async with mcp_client(url, token, mode="auto") as client:  # also starts the 2026-07-28 process
            await client.call_tool("echo", {"text": "x"})

    anyio.run(run)
    children = [int(p) for p in Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children").read_text().split()]
    assert len(children) == 2  # the handshake process and the 2026-07-28 one
    gw.stop()
    assert gw.proc.returncode == -15, gw.output()  # graceful shutdown, then exit by the signal (as uvicorn does)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) for pid in children):
        assert time.monotonic() < deadline, f"stdio servers {children} outlived the gateway"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split("\n", 1)[0].lower()
    except (OSError, IndexError):
        return "zombie"
