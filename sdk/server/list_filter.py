"""List filtering: ``*/list`` results keep only what the token may use (design.md § Lists).

:class:`ListFilter` wraps the ASGI ``send`` of a request that contains list requests. A JSON
body is buffered (it is that one result) and rewritten; an SSE stream is rewritten event by
event as it streams (only events carrying a list result are re-encoded); anything else passes
through untouched.

What it buffers is bounded by ``max_buffer`` bytes: the whole JSON body, or one SSE event. A
response beyond that cannot be filtered, so it is never passed on: the list requests get a
JSON-RPC error (``-32603``) saying so — HTTP 502 for a JSON body; for an SSE stream, error
events for the list requests not yet answered, and the stream ends.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..capabilities import CapabilitySet
from . import rpc

__all__ = ["DEFAULT_MAX_BUFFER", "ListFilter", "id_key"]

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MAX_BUFFER = 16 * 1024 * 1024
INTERNAL_ERROR = -32603
_JSON = b"application/json"
_SSE = b"text/event-stream"
_SEPARATORS = (b"\r\n\r\n", b"\n\n", b"\r\r")


def id_key(value: Any) -> str:
    """A JSON-RPC id as a dict key (``1`` and ``"1"`` are different ids)."""
    return json.dumps(value)


def _content_type(headers: list[tuple[bytes, bytes]]) -> bytes:
    for k, v in headers:
        if k == b"content-type":
            return v.split(b";", 1)[0].strip().lower()
    return b""


class ListFilter:
    """An ASGI ``send`` that filters the list results answering ``list_ids`` (id key -> method)."""

    __slots__ = ("buffer", "caps", "chunks", "list_ids", "max_buffer", "mode", "pending", "scan",
                 "send", "size", "start")

    def __init__(self, send: Send, caps: CapabilitySet, list_ids: dict[str, str], *,
                 max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        self.send, self.caps, self.list_ids, self.max_buffer = send, caps, list_ids, max_buffer
        self.pending = set(list_ids)  # list requests whose result has not been seen yet
        self.mode = "pass"  # "json", "sse", or "done" once a withheld response was answered
        self.start: Message | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.buffer = bytearray()
        self.scan = 0  # where the search for the next event separator resumes

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        mode = self.mode
        if kind == "http.response.body" and mode != "pass":
            if mode == "json":
                await self._json_body(message)
            elif mode == "sse":
                await self._sse_body(message)
            return  # "done": the client has its answer; the rest is dropped
        if kind == "http.response.start":
            headers = message.get("headers") or []
            ctype = _content_type(headers)
            if ctype == _JSON:
                self.mode, self.start = "json", message
                return
            if ctype == _SSE:
                self.mode = "sse"
                message = {**message, "headers": [(k, v) for k, v in headers if k != b"content-length"]}
        await self.send(message)

    # --- JSON ----------------------------------------------------------------------------------

    async def _json_body(self, message: Message) -> None:
        chunk = message.get("body", b"")
        self.size += len(chunk)
        if self.size > self.max_buffer:
            self.chunks = []
            self.mode = "done"
            body = self._too_large_error()
            await self.send({"type": "http.response.start", "status": 502, "headers": [
                (b"content-type", _JSON), (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store")]})
            await self.send({"type": "http.response.body", "body": body, "more_body": False})
            return
        self.chunks.append(chunk)
        if message.get("more_body", False):
            return
        body = self.filter_json(b"".join(self.chunks))
        self.chunks = []
        assert self.start is not None
        headers = [(k, v) for k, v in self.start.get("headers") or [] if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    def _too_large_error(self) -> bytes:
        ids = [json.loads(k) for k in sorted(self.pending)] or [None]
        what = ", ".join(sorted(set(self.list_ids.values())))
        text = (f"the {what} result is larger than {self.max_buffer} bytes, the most this server "
                "filters by capability; it was withheld")
        errors = [rpc.error_body(i, INTERNAL_ERROR, text) for i in ids]
        return errors[0] if len(errors) == 1 else b"[" + b",".join(errors) + b"]"

    def filter_json(self, body: bytes) -> bytes:
        try:
            obj = json.loads(body)
        except ValueError:
            # Cannot read it, so cannot filter it: do not let it through.
            return rpc.error_body(None, INTERNAL_ERROR, "unreadable list response withheld")
        new, changed = self._filter_obj(obj)
        return json.dumps(new, separators=(",", ":"), ensure_ascii=False).encode() if changed else body

    def _filter_obj(self, obj: Any) -> tuple[Any, bool]:
        if isinstance(obj, list):
            changed = False
            out = []
            for item in obj:
                new, c = self._filter_obj(item)
                out.append(new)
                changed |= c
            return out, changed
        if isinstance(obj, dict) and "result" in obj and "id" in obj:
            key = id_key(obj["id"])
            method = self.list_ids.get(key)
            if method is not None:
                self.pending.discard(key)
                return {**obj, "result": rpc.filter_result(self.caps, method, obj["result"])}, True
        return obj, False

    # --- SSE -----------------------------------------------------------------------------------

    async def _sse_body(self, message: Message) -> None:
        more = message.get("more_body", False)
        out = self.feed_sse(message.get("body", b""), final=not more)
        if out is None:  # one event larger than the bound: answer the list requests, end
            self.mode = "done"
            self.buffer = bytearray()
            tail = b"".join(b"event: message\r\ndata: " + e + b"\r\n\r\n" for e in self._sse_errors())
            await self.send({"type": "http.response.body", "body": tail, "more_body": False})
        elif out or not more:
            await self.send({"type": "http.response.body", "body": out, "more_body": more})

    def _sse_errors(self) -> list[bytes]:
        body = self._too_large_error()
        return [body] if not body.startswith(b"[") else [
            json.dumps(e, separators=(",", ":")).encode() for e in json.loads(body)]

    def feed_sse(self, chunk: bytes, *, final: bool) -> bytes | None:
        """The complete events of the stream so far, rewritten; None once an event exceeds
        ``max_buffer`` (it was not passed on)."""
        buf = self.buffer
        buf += chunk
        out: list[bytes] = []
        pos = 0
        scan = self.scan
        while True:
            cut, sep = -1, b""
            for candidate in _SEPARATORS:
                i = buf.find(candidate, scan)
                if i != -1 and (cut == -1 or i < cut):
                    cut, sep = i, candidate
            if cut == -1:
                break
            out.append(self._rewrite_event(bytes(buf[pos:cut])) + sep)
            pos = scan = cut + len(sep)
        if final:
            if pos < len(buf):
                out.append(self._rewrite_event(bytes(buf[pos:])))
            self.buffer, self.scan = bytearray(), 0
            return b"".join(out)
        del buf[:pos]
        if len(buf) > self.max_buffer:
            return None
        self.scan = max(0, len(buf) - 3)  # a separator may straddle the next chunk
        return b"".join(out)

    def _rewrite_event(self, event: bytes) -> bytes:
        lines = event.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        data = [ln[5:].removeprefix(b" ") for ln in lines if ln.startswith(b"data:")]
        if not data:
            return event
        try:
            obj = json.loads(b"\n".join(data))
        except ValueError:
            return event
        new, changed = self._filter_obj(obj)
        if not changed:
            return event
        others = [ln for ln in lines if not ln.startswith(b"data:")]
        payload = json.dumps(new, separators=(",", ":"), ensure_ascii=False).encode()
        return b"\r\n".join([*others, b"data: " + payload])
