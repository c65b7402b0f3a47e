"""JSON-RPC 2.0 framing helpers shared by the HTTP proxy and the stdio bridge.

Only what a gateway needs: parse a POST body into messages, classify them, build error
objects and HTTP/SSE responses. No MCP semantics beyond message shapes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

# ASGI types (the spec's own shapes; no framework needed)
Scope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]

# JSON-RPC 2.0 / MCP error codes used by the gateway.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INTERNAL_ERROR = -32603
UNSUPPORTED_PROTOCOL_VERSION = -32022  # MCP 2026-07-28

HANDSHAKE_PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_HANDSHAKE_VERSION = HANDSHAKE_PROTOCOL_VERSIONS[-1]
MODERN_PROTOCOL_VERSIONS = ("2026-07-28",)
LATEST_MODERN_VERSION = MODERN_PROTOCOL_VERSIONS[-1]
# 2026-07-28 per-request envelope keys (params._meta)
META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"

Message = dict[str, Any]


def dumps(obj: Any) -> bytes:
    """Compact, single-line JSON (newline-delimited framing relies on no raw newlines)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def parse_body(body: bytes) -> tuple[list[Message], bool]:
    """Parse a POST body into (messages, was_batch). Raises ValueError on anything malformed."""
    data = json.loads(body)
    batch = isinstance(data, list)
    items = data if batch else [data]
    if not items or not all(isinstance(m, dict) and m.get("jsonrpc") == "2.0" for m in items):
        raise ValueError("not a JSON-RPC 2.0 message or batch")
    return items, batch


def is_request(m: Message) -> bool:
    return "method" in m and "id" in m and m["id"] is not None


def is_notification(m: Message) -> bool:
    return "method" in m and "id" not in m


def is_response(m: Message) -> bool:
    return "method" not in m and ("result" in m or "error" in m)


def error(id_: Any, code: int, message: str, data: Any = None) -> Message:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": id_, "error": err}


def request_ids(body: bytes) -> list[Any]:
    """Ids of the requests in a POST body; empty if it does not parse."""
    try:
        messages, _ = parse_body(body)
    except ValueError:
        return []
    return [m["id"] for m in messages if is_request(m)]


def sse_event(message: Message) -> bytes:
    return b"event: message\ndata: " + dumps(message) + b"\n\n"


async def send_json(send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = dumps(payload) if payload is not None else b""
    hdrs = [(b"content-length", str(len(body)).encode())]
    if payload is not None:
        hdrs.append((b"content-type", b"application/json"))
    hdrs.extend(headers or [])
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


async def send_errors(send: Send, status: int, ids: list[Any], code: int, message: str) -> None:
    """Answer every request id with the same JSON-RPC error (one object, or a batch of them)."""
    if len(ids) <= 1:
        await send_json(send, status, error(ids[0] if ids else None, code, message))
    else:
        await send_json(send, status, [error(i, code, message) for i in ids])


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Any, limit: int) -> bytes | None:
    """The whole request body; None if the client went away; BodyTooLarge past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return None
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
        if not msg.get("more_body", False):
            return b"".join(chunks)
