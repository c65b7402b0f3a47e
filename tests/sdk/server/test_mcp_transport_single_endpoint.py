"""MCP transport spec, Streamable HTTP: the server provides a single HTTP endpoint path, and
every path on which the protected app answers MCP is enforced as that endpoint.

Attack against the example server (official SDK, Starlette routing) behind the middleware: a
valid token that does not allow ``delete-file``, the call sent on spellings of ``/mcp`` written
byte for byte on a raw socket (HTTP clients normalise paths). None may run the tool.
"""

from __future__ import annotations

import json
import socket

import pytest
from sdk_server_support import IdP, MCPUnderTest, modern_headers, modern_meta, rpc

TARGETS = ["/mcp", "/mcp/", "//mcp", "/mcp//", "/./mcp", "/mcp/.", "/x/../mcp", "/MCP", "/mcp;x", "/mc%70",
           "/mcp%2F", "/%2Fmcp", "/mcp%20", "/mcp?x=1"]


def raw_post(port: int, target: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    head = [f"POST {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}",
            "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("target", TARGETS)
def test_a_denied_call_is_refused_on_every_spelling_of_the_endpoint(idp: IdP, mcp_json_server: MCPUnderTest,
                                                                    target: str) -> None:
    srv = mcp_json_server
    token = idp.new_token("tools/call:echo", srv.resource)
    body = json.dumps(rpc("tools/call", {"name": "delete-file", "arguments": {"path": "/docs/readme.md"},
                                         "_meta": modern_meta()}, id=11)).encode()
    port = int(srv.base.rsplit(":", 1)[1])
    status, text = raw_post(port, target, body, modern_headers("tools/call", "delete-file", token))
    assert b"deleted" not in text and b"no such file" not in text, (target, status, text)
    assert status in (307, 400, 403, 404), (target, status, text)
    assert not [e for e in srv.events if e.target == "delete-file" and e.allowed]
