"""Streaming reverse proxy for an MCP streamable-HTTP upstream (the gateway's HTTP mode).

Forwards POST/GET/DELETE on the MCP path to one upstream URL (MCP spec, Transports →
Streamable HTTP). Only the headers the transport defines travel upstream; the client's
``Authorization`` never does (MCP spec, Authorization → Access Token Privilege Restriction:
no token passthrough). SSE responses are relayed event by event as they arrive, never
buffered; a ``subscriptions/listen`` stream may stay silent for as long as it likes. Every
upstream failure — refused connection, timeout, 5xx, a body that is not JSON-RPC — is answered
as a JSON-RPC error (code -32603) whose message names the upstream.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import httpx

from sdk.asgi import BodyTooLarge, Receive, Scope, Send, read_body
from sdk.server.endpoint import MCPEndpoint

from . import _jsonrpc as rpc
from ._lifespan import serve_lifespan
from .errors import GatewayConfigError

log = logging.getLogger("cbst.gateway.http")

HEALTH_PATH = "/healthz"  # liveness of the gateway itself (it does not probe the upstream)
# Request headers of the streamable-HTTP transport that the upstream needs (lower case).
FORWARD_REQUEST_HEADERS = frozenset({
    "accept", "content-type", "last-event-id",
    "mcp-session-id", "mcp-protocol-version", "mcp-method", "mcp-name",
})
FORWARD_REQUEST_PREFIXES = ("mcp-param-",)  # 2026-07-28: tool arguments mirrored as headers
# Response headers relayed back to the client.
FORWARD_RESPONSE_HEADERS = frozenset({
    "content-type", "mcp-session-id", "mcp-protocol-version", "cache-control", "allow", "retry-after",
})


class HTTPUpstreamProxy:
    """ASGI app: the MCP endpoint at ``path`` relayed to ``upstream``.

    ``timeout`` bounds the wait for the upstream's answer and, inside a POST's SSE stream, the
    silence between two chunks; a GET stream (server-initiated messages) and the stream of a
    long-lived request (``subscriptions/listen``) may idle forever.
    """

    def __init__(self, upstream: str, *, path: str = "/mcp", timeout: float = 120.0,
                 connect_timeout: float = 5.0, max_request_body: int = 4 * 1024 * 1024,
                 max_json_response: int = 32 * 1024 * 1024) -> None:
        url = httpx.URL(upstream)
        if url.scheme not in ("http", "https") or not url.host:
            raise GatewayConfigError(f"upstream must be an http(s) URL, got {upstream!r}")
        if not path.startswith("/"):
            raise GatewayConfigError(f"path must start with '/', got {path!r}")
        if timeout <= 0 or connect_timeout <= 0:
            raise GatewayConfigError("timeouts must be positive")
        self.upstream = str(url)
        self.path = path
        self.endpoint = MCPEndpoint(path)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_request_body = max_request_body
        self.max_json_response = max_json_response
        self._client: httpx.AsyncClient | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                             limits=httpx.Limits(max_connections=None, max_keepalive_connections=50))
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def start(self) -> None:
        """Nothing to prepare: the HTTP client is made on first use."""

    # -- ASGI ----------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send, startup=self.start, shutdown=self.aclose)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == HEALTH_PATH and scope["method"] == "GET":
            await rpc.send_json(send, 200, {"status": "ok"})  # public: no upstream address
            return
        if not self.endpoint.serves(scope):  # the middleware's own definition of the endpoint
            await rpc.send_json(send, 404, rpc.error(None, rpc.INVALID_REQUEST, f"no MCP endpoint at {scope['path']}"))
            return
        method = scope["method"]
        if method not in ("POST", "GET", "DELETE"):
            await rpc.send_json(send, 405, rpc.error(None, rpc.INVALID_REQUEST, f"method {method} not allowed"),
                                headers=[(b"allow", b"GET, POST, DELETE")])
            return
        body = b""
        if method == "POST":
            try:
                got = await read_body(receive, self.max_request_body)
            except BodyTooLarge as exc:
                await rpc.send_json(send, 413, rpc.error(None, rpc.INVALID_REQUEST, str(exc)))
                return
            if got is None:
                return  # client went away
            body = got
        await self._relay(scope, receive, send, method, body)

    def _upstream_headers(self, scope: Scope) -> dict[str, str]:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            if name in FORWARD_REQUEST_HEADERS or name.startswith(FORWARD_REQUEST_PREFIXES):
                headers[name] = raw_value.decode("latin-1")
        # Authorization, cookies, Host, Origin, hop-by-hop headers: never forwarded.
        headers["accept-encoding"] = "identity"  # relay bytes as they come; no re-compression
        return headers

    async def _relay(self, scope: Scope, receive: Receive, send: Send, method: str, body: bytes) -> None:
        requests = _requests(body) if body else []
        ids = [m["id"] for m in requests]
        # The stream of a GET, or of a long-lived request, may idle as long as the client wants.
        open_ended = method == "GET" or any(m["method"] in rpc.LONG_LIVED_METHODS for m in requests)
        url = self.upstream
        if scope.get("query_string"):
            url = str(httpx.URL(self.upstream).copy_merge_params(httpx.QueryParams(scope["query_string"].decode("latin-1"))))
        timeout = httpx.Timeout(self.timeout, connect=self.connect_timeout, pool=self.connect_timeout,
                                read=None if open_ended else self.timeout)
        client = self._http()
        request = client.build_request(method, url, headers=self._upstream_headers(scope), content=body or None,
                                       timeout=timeout)
        try:
            response = await client.send(request, stream=True)
        except httpx.TimeoutException:
            await rpc.send_errors(send, 504, ids, rpc.INTERNAL_ERROR,
                                  f"upstream MCP server {self.upstream} did not answer within {self.timeout:g}s")
            return
        except httpx.ConnectError as exc:
            await rpc.send_errors(send, 502, ids, rpc.INTERNAL_ERROR,
                                  f"upstream MCP server {self.upstream} is unreachable: {_describe(exc)}")
            return
        except httpx.HTTPError as exc:  # not HTTP, connection dropped, ...
            await rpc.send_errors(send, 502, ids, rpc.INTERNAL_ERROR,
                                  f"upstream MCP server {self.upstream} failed before answering: {_describe(exc)}")
            return
        try:
            await self._answer(response, receive, send, ids)
        finally:
            await response.aclose()

    async def _answer(self, response: httpx.Response, receive: Receive, send: Send, ids: list[Any]) -> None:
        status = response.status_code
        ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()
                   if k.lower() in FORWARD_RESPONSE_HEADERS]
        if status >= 500:
            detail = await self._error_detail(response)
            await rpc.send_errors(send, 502, ids, rpc.INTERNAL_ERROR,
                                  f"upstream MCP server {self.upstream} answered HTTP {status}{detail}")
            return
        if status in (401, 403):
            # The upstream wants credentials of its own. The client's token is for the gateway and
            # is never passed through, so relaying this would mislead the client about its token.
            await rpc.send_errors(send, 502, ids, rpc.INTERNAL_ERROR,
                                  f"upstream MCP server {self.upstream} refused the gateway (HTTP {status}); "
                                  "it requires authorization of its own, and client tokens are never passed through")
            return
        if ctype == "text/event-stream" and 200 <= status < 300:
            await self._stream_sse(response, receive, send, headers, ids)
            return
        try:
            content = await self._read_bounded(response)
        except httpx.TimeoutException:
            await rpc.send_errors(send, 504, ids, rpc.INTERNAL_ERROR,
                                  f"upstream MCP server {self.upstream} did not finish its answer within {self.timeout:g}s")
            return
        except (httpx.HTTPError, BodyTooLarge) as exc:
            await rpc.send_errors(send, 502, ids, rpc.INTERNAL_ERROR,
                                  f"upstream MCP server {self.upstream} failed mid-answer: {_describe(exc)}")
            return
        if 200 <= status < 300 and (content or ids) and (ctype != "application/json" or not _is_jsonrpc(content)):
            await rpc.send_errors(send, 502, ids, rpc.INTERNAL_ERROR,
                                  f"upstream MCP server {self.upstream} answered with something that is not "
                                  f"JSON-RPC (HTTP {status}, content-type {ctype or 'none'!r})")
            return
        # 2xx JSON, 202/204 without a body, and 4xx protocol answers (400 bad request, 404 unknown
        # session, 405 ...) are relayed as they are: they mean something to the client.
        headers = [h for h in headers if h[0] != b"content-length"]
        headers.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    async def _read_bounded(self, response: httpx.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > self.max_json_response:
                raise BodyTooLarge(self.max_json_response)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _error_detail(self, response: httpx.Response) -> str:
        """The upstream's JSON-RPC error message in a 5xx body, if it sent one (best effort)."""
        try:
            data = json.loads(await self._read_bounded(response))
        except (httpx.HTTPError, BodyTooLarge, ValueError):
            return ""
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return f": {data['error'].get('message', '')}"
        return ""

    async def _stream_sse(self, response: httpx.Response, receive: Receive, send: Send,
                          headers: list[tuple[bytes, bytes]], ids: list[Any]) -> None:
        """Relay SSE events as they complete; validate each event's data as JSON-RPC."""
        headers = [h for h in headers if h[0] != b"content-length"]
        headers.append((b"x-accel-buffering", b"no"))
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        pending = list(ids)
        failure: str | None = None

        async def pump(cancel: anyio.CancelScope) -> None:
            nonlocal failure
            events = _SSEEvents(self.max_json_response)
            try:
                async for chunk in response.aiter_raw():
                    for block in events.feed(chunk):
                        problem = _check_event(block, pending)
                        if problem:
                            failure = f"upstream MCP server {self.upstream} sent an invalid event: {problem}"
                            return
                        await send({"type": "http.response.body", "body": block + b"\n\n", "more_body": True})
            except httpx.TimeoutException:
                failure = f"upstream MCP server {self.upstream} went silent for {self.timeout:g}s mid-stream"
            except httpx.HTTPError as exc:
                failure = f"upstream MCP server {self.upstream} broke the stream: {_describe(exc)}"
            except BodyTooLarge as exc:
                failure = f"upstream MCP server {self.upstream} sent an event over {exc.limit} bytes"
            finally:
                cancel.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump, tg.cancel_scope)
            tg.start_soon(_wait_disconnect, receive, tg.cancel_scope)
        if failure is not None:
            log.warning("%s", failure)
            tail = b"".join(rpc.sse_event(rpc.error(i, rpc.INTERNAL_ERROR, failure)) for i in pending)
            await send({"type": "http.response.body", "body": tail, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def _wait_disconnect(receive: Receive, cancel: anyio.CancelScope) -> None:
    """Cancel ``cancel`` when the client goes away (after the request body was consumed)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            cancel.cancel()
            return
        await anyio.sleep(0.05)  # a receive() that replays the body must not spin


class _SSEEvents:
    """Split an SSE byte stream into event blocks as each one completes.

    Lines end with CRLF, LF or CR (WHATWG HTML, server-sent events); blocks come out with LF
    line ends, without their blank line. A CR that ends a chunk ends its line at once (the event
    is relayed now, not when the next chunk comes); an LF opening the next chunk is then the
    second half of that CRLF. A block longer than ``limit`` bytes raises BodyTooLarge.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = b""
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        if not chunk:
            return []
        self._skip_lf = chunk.endswith(b"\r")
        self._buffer += chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *blocks, self._buffer = self._buffer.split(b"\n\n")
        if len(self._buffer) > self.limit:
            raise BodyTooLarge(self.limit)
        return blocks


def _requests(body: bytes) -> list[rpc.Message]:
    """The requests of a POST body; none if it does not parse (the upstream will say so)."""
    try:
        messages, _ = rpc.parse_body(body)
    except ValueError:
        return []
    return [m for m in messages if rpc.is_request(m)]


def _check_event(block: bytes, pending: list[Any]) -> str | None:
    """Validate one SSE event block; drop the ids it answers from ``pending``. Returns a problem or None."""
    data_lines = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data_lines.append(value[1:] if value.startswith(b" ") else value)
    if not data_lines:
        return None  # comment, keep-alive, id/retry-only priming event
    data = b"\n".join(data_lines)
    if not data.strip():
        return None
    try:
        message = json.loads(data)
    except ValueError:
        return "data is not JSON"
    items = message if isinstance(message, list) else [message]
    for item in items:
        if not isinstance(item, dict) or item.get("jsonrpc") != "2.0":
            return "data is not a JSON-RPC message"
        if rpc.is_response(item) and item.get("id") in pending:
            pending.remove(item["id"])
    return None


def _is_jsonrpc(content: bytes) -> bool:
    try:
        rpc.parse_body(content)
    except ValueError:
        return False
    return True


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "…"
