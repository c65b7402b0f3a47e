"""The HTTP mode, unprotected: ``HTTPUpstreamProxy`` in front of an official-SDK MCP server,
driven by the official MCP Python client (both generations) and by raw HTTP.

Holds the gateway's transport duties: MCP streamable HTTP relayed faithfully, SSE unbuffered,
no token passthrough (MCP spec, Authorization: "MUST NOT pass through the token"), and every
upstream failure a JSON-RPC error naming the upstream — never a hang, never a 500 traceback.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from conftest import free_port
from gateway import HTTPUpstreamProxy

from gateway_support import ThreadedServer
from upstream_servers import RELEASE

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@pytest.fixture(scope="module")
def proxy(http_upstream: tuple[str, Any]) -> Any:
    url, _ = http_upstream
    with ThreadedServer(HTTPUpstreamProxy(url, timeout=10), lifespan="on") as srv:
        yield srv.url + "/mcp"


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_official_client_works_through_the_proxy(proxy: str, mode: str) -> None:
    async def run() -> None:
        async with Client(proxy, mode=mode) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"echo", "add", "delete-file", "slow"} <= tools
            result = await client.call_tool("add", {"a": 2, "b": 3})
            assert not result.is_error and result.content[0].text == "5"
            contents = (await client.read_resource("file:///docs/readme.txt")).contents
            assert contents[0].text == "public docs"
            prompt = await client.get_prompt("summarize", {"text": "x"})
            assert "Summarize: x" in prompt.messages[0].content.text

    anyio.run(run)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_a_stateless_json_upstream_works_through_the_proxy(mode: str) -> None:
    from upstream_servers import build_http_server

    upstream = build_http_server().streamable_http_app(stateless_http=True, json_response=True)
    with ThreadedServer(upstream, lifespan="on") as up, \
            ThreadedServer(HTTPUpstreamProxy(up.url + "/mcp"), lifespan="on") as gw:
        async def run() -> None:
            async with Client(gw.url + "/mcp", mode=mode) as client:
                assert "echo" in {t.name for t in (await client.list_tools()).tools}
                assert (await client.call_tool("echo", {"text": "json"})).content[0].text == "json"

        anyio.run(run)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_sse_progress_reaches_the_client_before_the_result_is_produced(proxy: str, mode: str) -> None:
    """The upstream tool waits until the client has *seen* its progress event; a buffering
    proxy would hold that event back until the result, and the tool would time out."""
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)
        RELEASE.set()

    async def run() -> str:
        async with Client(proxy, mode=mode) as client:
            result = await client.call_tool("slow", {}, progress_callback=on_progress)
            return result.content[0].text

    assert anyio.run(run) == "released"
    assert seen == [1]


def test_authorization_and_other_headers_are_not_forwarded(proxy: str, http_upstream: tuple[str, Any]) -> None:
    _, recorder = http_upstream
    before = len(recorder.seen)
    r = httpx.post(proxy, json=INIT, headers={**ACCEPT, "authorization": "Bearer secret-token",
                                                  "cookie": "session=1", "x-custom": "1",
                                                  "mcp-protocol-version": "2025-06-18"})
    assert r.status_code == 200
    sid = r.headers["mcp-session-id"]
    r = httpx.post(proxy, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                   headers={**ACCEPT, "authorization": "Bearer secret-token", "mcp-session-id": sid,
                            "mcp-protocol-version": "2025-06-18"})
    assert r.status_code == 202
    seen = recorder.seen[before:]
    assert len(seen) == 2
    for headers in seen:
        assert "authorization" not in headers and "cookie" not in headers and "x-custom" not in headers
        assert headers["mcp-protocol-version"] == "2025-06-18"
    assert seen[1]["mcp-session-id"] == sid
    assert httpx.delete(proxy, headers={"mcp-session-id": sid}).status_code == 200


def test_protocol_answers_from_the_upstream_are_relayed(proxy: str) -> None:
    # An unknown session is the upstream's 404 (the client must re-initialise), not a gateway error.
    r = httpx.post(proxy, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                   headers={**ACCEPT, "mcp-session-id": "nope", "mcp-protocol-version": "2025-06-18"})
    assert r.status_code == 404
    assert httpx.put(proxy, content=b"").status_code == 405
    assert httpx.post(proxy.replace("/mcp", "/elsewhere"), json=INIT, headers=ACCEPT).status_code == 404


def test_a_closed_get_stream_is_closed_upstream(proxy: str) -> None:
    """The upstream allows one GET stream per session (409 for a second): if the proxy kept the
    upstream stream after its client left, the client could never listen again."""
    r = httpx.post(proxy, json=INIT, headers=ACCEPT)
    sid = r.headers["mcp-session-id"]
    headers = {"accept": "text/event-stream", "mcp-session-id": sid, "mcp-protocol-version": "2025-06-18"}
    httpx.post(proxy, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers={**ACCEPT, **headers})
    with httpx.stream("GET", proxy, headers=headers, timeout=5) as first:
        assert first.status_code == 200
    deadline = time.monotonic() + 5
    while True:
        with httpx.stream("GET", proxy, headers=headers, timeout=5) as again:
            if again.status_code == 200:
                break
            assert again.status_code == 409 and time.monotonic() < deadline
        time.sleep(0.1)
    httpx.delete(proxy, headers={"mcp-session-id": sid})


# -- upstream failures -------------------------------------------------------------------------

async def _hang(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await anyio.sleep(60)


def _fixed(status: int, ctype: str, body: bytes) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype.encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


async def _sse_then_garbage(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    note = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}}
    await send({"type": "http.response.body", "body": b"event: message\ndata: " + json.dumps(note).encode() + b"\n\n",
                "more_body": True})
    await send({"type": "http.response.body", "body": b"event: message\ndata: <html>oops</html>\n\n", "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def find_mcp_error(exc: BaseException) -> MCPError:
    """The MCPError inside what the client raised (it may come wrapped in exception groups)."""
    stack = [exc]
    while stack:
        current = stack.pop()
        if isinstance(current, MCPError):
            return current
        stack.extend(getattr(current, "exceptions", ()))
    raise AssertionError(f"no MCPError in {exc!r}")


class _NotHTTP:
    """A TCP server that answers every connection with bytes that are not HTTP, then hangs up."""

    def __enter__(self) -> int:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()

        def serve() -> None:
            while True:
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    return
                with conn:
                    conn.recv(65536)
                    conn.sendall(b"SSH-2.0-OpenSSH_9.6 not an HTTP server\r\n\r\n")

        threading.Thread(target=serve, daemon=True).start()
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def _assert_gateway_error(r: httpx.Response, upstream: str, status: int, words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["id"] == 1
    assert body["error"]["code"] == -32603
    assert upstream in body["error"]["message"] and words in body["error"]["message"], body


@pytest.mark.parametrize("case", ["refused", "timeout", "http-500", "garbage-json", "wrong-content-type",
                                  "upstream-wants-its-own-auth", "not-http"])
def test_upstream_failure_is_a_clear_jsonrpc_error(case: str) -> None:
    apps = {"timeout": _hang, "http-500": _fixed(500, "text/plain", b"Traceback (most recent call last): ..."),
            "garbage-json": _fixed(200, "application/json", b"{not json"),
            "wrong-content-type": _fixed(200, "text/html", b"<html></html>"),
            "upstream-wants-its-own-auth": _fixed(401, "application/json", b'{"error": "invalid_token"}')}
    expect = {"refused": (502, "unreachable"), "timeout": (504, "did not answer within 1s"),
              "http-500": (502, "answered HTTP 500"), "garbage-json": (502, "not JSON-RPC"),
              "wrong-content-type": (502, "not JSON-RPC"),
              "upstream-wants-its-own-auth": (502, "refused the gateway (HTTP 401)"),
              "not-http": (502, "failed before answering")}
    status, words = expect[case]

    def check(upstream: str) -> None:
        with ThreadedServer(HTTPUpstreamProxy(upstream, timeout=1)) as gw:
            start = time.monotonic()
            r = httpx.post(gw.url + "/mcp", json=INIT, headers=ACCEPT, timeout=10)
            assert time.monotonic() - start < 5
            _assert_gateway_error(r, upstream, status, words)

    if case == "refused":
        check(f"http://127.0.0.1:{free_port()}/mcp")
    elif case == "not-http":
        with _NotHTTP() as port:
            check(f"http://127.0.0.1:{port}/mcp")
    else:
        with ThreadedServer(apps[case]) as up:
            check(up.url + "/mcp")


def test_garbage_inside_an_sse_stream_ends_it_with_a_jsonrpc_error() -> None:
    with ThreadedServer(_sse_then_garbage) as up, ThreadedServer(HTTPUpstreamProxy(up.url + "/mcp")) as gw:
        r = httpx.post(gw.url + "/mcp", json=INIT, headers=ACCEPT, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[0]["method"] == "notifications/progress"  # relayed before the garbage
    assert events[-1]["id"] == 1 and events[-1]["error"]["code"] == -32603
    assert "invalid event" in events[-1]["error"]["message"] and up.url in events[-1]["error"]["message"]


def test_official_client_sees_the_upstream_error_not_a_hang() -> None:
    upstream = f"http://127.0.0.1:{free_port()}/mcp"
    with ThreadedServer(HTTPUpstreamProxy(upstream, timeout=1)) as gw:
        async def run() -> None:
            async with Client(gw.url + "/mcp", mode="legacy"):
                pass

        start = time.monotonic()
        with pytest.raises(BaseException) as info:
            anyio.run(run)
        assert time.monotonic() - start < 10
    error = find_mcp_error(info.value)
    assert error.error.code == -32603
    assert upstream in error.error.message and "unreachable" in error.error.message


def test_bad_configuration_fails_up_front() -> None:
    for bad in ("ftp://x/mcp", "not a url", "http:///mcp"):
        with pytest.raises(ValueError):
            HTTPUpstreamProxy(bad)
    with pytest.raises(ValueError):
        HTTPUpstreamProxy("http://127.0.0.1:1/mcp", timeout=0)
