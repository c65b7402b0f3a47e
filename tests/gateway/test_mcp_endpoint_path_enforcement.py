"""MCP authorization holds on every path that reaches an MCP handler (issue 6, defect 1).

The gateway and the SDK middleware share one definition of "this is the MCP endpoint"
(``sdk.server.MCPEndpoint``). Attack: a real ``cbst-gateway`` in front of the official SDK
server, a valid token whose capabilities do not allow ``delete-file``, and the call sent on
spellings of the endpoint path a router might treat as ``/mcp`` — written byte for byte on a
raw socket, because HTTP clients normalise paths. Each must be refused (403) or not found
(404); the upstream must never see it.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from gateway_support import IdP, free_port, stdio_test_command

pytestmark = pytest.mark.slow  # real cbst-gateway and idp processes

TARGETS = [
    "/mcp", "/mcp/", "//mcp", "/mcp//", "/mcp///", "//mcp//", "/mcp;x", "/mcp/;x", "/./mcp", "/mcp/.",
    "/mcp/./", "/x/../mcp", "/MCP", "/Mcp/", "/mc%70", "/mcp%2F", "/mcp%2f%2f", "/%2Fmcp", "/%2e/mcp",
    "/mcp%3Bx", "/mcp%20", "/mcp%00", "/mcp?x=1", "/mcp/?x", "/mcp#x",
]


def modern_call(name: str, token: str) -> tuple[bytes, dict[str, str]]:
    version = "2026-07-28"
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": name, "arguments": {},
                       "_meta": {"io.modelcontextprotocol/protocolVersion": version,
                                 "io.modelcontextprotocol/clientCapabilities": {}}}}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": version,
               "Mcp-Method": "tools/call", "Mcp-Name": name}
    return json.dumps(call).encode(), headers


def raw_post(port: int, target: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """One HTTP/1.1 request with exactly ``target`` as the request target."""
    head = [f"POST {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}",
            "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("generation", ["2026-07-28", "2025-06-18"])
def test_every_path_to_the_mcp_handler_is_enforced(idp: IdP, gateway_process: Any,
                                                   http_upstream: tuple[str, Any], generation: str) -> None:
    upstream, recorder = http_upstream
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    gateway_process("--issuer", idp.url, "--resource", resource, "--upstream", upstream,
                    "--tool-rate", "1000", "--log-level", "warning", port=port)
    token = idp.token("tools/call:echo", resource)  # valid, but does not allow delete-file
    params: dict[str, Any] = {"name": "delete-file", "arguments": {"path": "/etc/passwd"}}
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": generation}
    if generation == "2026-07-28":
        params["_meta"] = {"io.modelcontextprotocol/protocolVersion": generation,
                                   "io.modelcontextprotocol/clientCapabilities": {}}
        headers |= {"Mcp-Method": "tools/call", "Mcp-Name": "delete-file"}
    body = json.dumps(call).encode()
    answers: dict[str, int] = {}
    before = len(recorder.seen)
    for target in TARGETS:
        status, text = raw_post(port, target, body, headers)
        answers[target] = status
        assert b"deleted" not in text, (target, text)
    reached = recorder.seen[before:]
    assert not reached, f"reached the upstream: {reached}"
    assert all(status in (400, 403, 404) for status in answers.values()), answers
    # The real endpoint and its one trailing-slash form are the MCP endpoint, and refuse.
    assert answers["/mcp"] == answers["/mcp/"] == answers["/mc%70"] == answers["/mcp%2F"] == 403, answers


def test_every_path_to_the_stdio_bridge_is_enforced(idp: IdP, gateway_process: Any) -> None:
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    gw = gateway_process("--issuer", idp.url, "--resource", resource, "--tool-rate", "1000",
                         "--upstream-stdio", " ".join(stdio_test_command()), "--log-level", "warning", port=port)
    token = idp.token("tools/call:echo", resource)  # does not allow the `crash` tool
    body, headers = modern_call("crash", token)
    answers = {target: raw_post(port, target, body, headers)[0] for target in TARGETS}
    assert all(status in (400, 403, 404) for status in answers.values()), answers
    assert answers["/mcp"] == answers["/mcp/"] == answers["/mcp%2F"] == 403, answers
    assert "crash tool called" not in gw.output()
    ok, _ = modern_call("echo", token)
    status, text = raw_post(port, "/mcp", ok.replace(b'"arguments": {}', b'"arguments": {"text": "hi"}'),
                            {**headers, "Mcp-Name": "echo"})
    assert status == 200 and b"hi (pid" in text, text  # the endpoint itself works
