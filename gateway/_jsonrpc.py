"""JSON-RPC 2.0 framing of the gateway: what the HTTP proxy and the stdio bridge both need.

Parse a POST body into messages, classify them, build error objects and HTTP/SSE responses.
The wire constants (error codes, protocol versions, ``_meta`` keys) and the ASGI shapes are the
SDK's (:mod:`sdk.mcp_protocol`, :mod:`sdk.asgi`); no MCP semantics here beyond message shapes.
"""

from __future__ import annotations

import json
from typing import Any

from sdk.asgi import Send
from sdk.mcp_protocol import INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_REQUEST",
    "LONG_LIVED_METHODS",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "Message",
    "dumps",
    "error",
    "is_notification",
    "is_request",
    "is_response",
    "member",
    "parse_body",
    "send_accepted",
    "send_errors",
    "send_json",
    "sse_event",
]

Message = dict[str, Any]

#: Requests whose answer legitimately stays open for as long as the client wants, silent in
#: between events (2026-07-28, SEP-2575): no answer timeout applies to them.
LONG_LIVED_METHODS = frozenset({"subscriptions/listen"})


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


def member(obj: Message, key: str) -> dict[str, Any]:
    """``obj[key]`` if it is an object (``params``, ``_meta``), else an empty one."""
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def error(id_: Any, code: int, message: str, data: Any = None) -> Message:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": id_, "error": err}


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


async def send_accepted(send: Send) -> None:
    """HTTP 202, no body: the answer to a POST of notifications or responses only."""
    await send({"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
