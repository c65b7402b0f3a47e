"""Streamable-HTTP front for a stdio MCP server (the gateway's stdio mode).

Speaks the handshake generation of MCP streamable HTTP (2024-11-05 … 2025-11-25) to HTTP
clients and newline-delimited JSON-RPC to one supervised child (``StdioChild``):

- ``initialize`` creates a gateway session (``Mcp-Session-Id``) and is answered from the
  child's own ``initialize`` result (the gateway initialised the child once, at start, as its
  only client); ``notifications/initialized`` is absorbed.
- Each POSTed request goes to the child under a gateway-unique id; its response comes back on
  that POST — as an SSE stream (progress notifications first, then the result) when the client
  accepts ``text/event-stream``, else as JSON. ``notifications/cancelled`` is translated.
- Child notifications that belong to no request go to the sessions' GET streams: resource
  updates to the sessions subscribed to that URI, list changes and log messages to all.
- The 2026-07-28 generation (a POST without a session carrying ``MCP-Protocol-Version:
  2026-07-28``, or ``server/discover``): on first use the gateway starts a second process of
  the same command and asks it ``server/discover`` (a stdio connection is locked to the
  generation of its first message). If it lists 2026-07-28, such requests are relayed to that
  process statelessly, ids rewritten the same way; if not, they are answered with -32022
  listing the handshake version, so ``mode="auto"`` clients fall back to ``initialize``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sdk import mcp_protocol as protocol
from sdk.asgi import BodyTooLarge, Receive, Scope, Send, read_body
from sdk.server.endpoint import MCPEndpoint

from . import _jsonrpc as rpc
from ._lifespan import serve_lifespan
from .errors import GatewayConfigError, GatewayError, StdioStartError
from .http_proxy import HEALTH_PATH
from .stdio_child import StdioChild

log = logging.getLogger("cbst.gateway.stdio")

SESSION_QUEUE_SIZE = 1000
MODERN_PROBE_TIMEOUT = 10.0  # seconds for the 2026-07-28 process to answer server/discover
KEEPALIVE_SECONDS = 15.0


@dataclass
class _Session:
    id: str
    inflight: dict[Any, str] = field(default_factory=dict)  # client request id -> gateway id
    stream: asyncio.Queue[rpc.Message | None] | None = None  # the open GET stream, if any
    subscriptions: set[str] = field(default_factory=set)  # resource URIs (resources/subscribe)
    last_seen: float = field(default_factory=time.monotonic)


class StdioBridge:
    """ASGI app: the MCP endpoint at ``path`` backed by the stdio server ``command``."""

    def __init__(self, command: str | list[str], *, path: str = "/mcp", request_timeout: float = 300.0,
                 start_timeout: float = 30.0, max_restarts: int = 5, restart_window: float = 60.0,
                 backoff: float = 0.25, max_sessions: int = 10_000, session_idle_timeout: float = 3600.0,
                 max_request_body: int = 4 * 1024 * 1024, modern: bool = True,
                 on_fatal: Callable[[str], None] | None = None) -> None:
        try:
            argv = shlex.split(command) if isinstance(command, str) else list(command)
        except ValueError as exc:  # e.g. an unbalanced quote
            raise GatewayConfigError(f"cannot split the --upstream-stdio command {command!r}: {exc}") from None
        if not argv:
            raise GatewayConfigError("empty --upstream-stdio command")
        if not path.startswith("/"):
            raise GatewayConfigError(f"path must start with '/', got {path!r}")
        self.path = path
        self.endpoint = MCPEndpoint(path)
        self.max_sessions = max_sessions
        self.session_idle_timeout = session_idle_timeout
        self.max_request_body = max_request_body
        child_options: dict[str, Any] = {"start_timeout": start_timeout, "request_timeout": request_timeout,
                                         "max_restarts": max_restarts, "restart_window": restart_window,
                                         "backoff": backoff, "on_fatal": on_fatal}
        self.child = StdioChild(argv, on_notification=self._broadcast, **child_options)
        # A second process of the same command for 2026-07-28 clients, started on first use if
        # ``modern``; a stdio connection is locked to the generation of its first message.
        self.modern_child: StdioChild | None = None
        self._modern_state = "unknown" if modern else "unsupported"
        self._modern_lock = asyncio.Lock()
        self._child_argv, self._child_options = argv, child_options
        self.sessions: dict[str, _Session] = {}
        self._started = False
        self._background: set[asyncio.Task[Any]] = set()

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Spawn and initialise the child; raises StdioStartError if it cannot be."""
        if not self._started:
            await self.child.start()
            self._started = True

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        for session in self.sessions.values():
            _close_stream(session)
        self.sessions.clear()
        await self.child.aclose()
        if self.modern_child is not None:
            await self.modern_child.aclose()
        self._started = False

    # -- ASGI ----------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send, startup=self.start, shutdown=self.aclose)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == HEALTH_PATH and scope["method"] == "GET":
            await self._health(send)
            return
        if not self.endpoint.serves(scope):  # the middleware's own definition of the endpoint
            await rpc.send_json(send, 404, rpc.error(None, rpc.INVALID_REQUEST, f"no MCP endpoint at {scope['path']}"))
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope["method"]
        if method == "POST":
            await self._post(headers, receive, send)
        elif method == "GET":
            await self._get(headers, receive, send)
        elif method == "DELETE":
            await self._delete(headers, send)
        else:
            await rpc.send_json(send, 405, rpc.error(None, rpc.INVALID_REQUEST, f"method {method} not allowed"),
                                headers=[(b"allow", b"GET, POST, DELETE")])

    async def _health(self, send: Send) -> None:
        # Public (no token): whether the gateway can serve, nothing about the child (its command
        # line, pid, stderr); the gateway log has the details.
        if self.child.ready:
            await rpc.send_json(send, 200, {"status": "ok"})
        else:
            await rpc.send_json(send, 503, {"status": "unavailable"})

    def _session(self, headers: dict[str, str]) -> tuple[_Session | None, int, str]:
        sid = headers.get("mcp-session-id")
        if not sid:
            return None, 400, "Bad Request: missing Mcp-Session-Id header (send initialize first)"
        session = self.sessions.get(sid)
        if session is None:
            return None, 404, "Session not found"
        session.last_seen = time.monotonic()
        return session, 200, ""

    async def _post(self, headers: dict[str, str], receive: Receive, send: Send) -> None:
        try:
            body = await read_body(receive, self.max_request_body)
        except BodyTooLarge as exc:
            await rpc.send_json(send, 413, rpc.error(None, rpc.INVALID_REQUEST, str(exc)))
            return
        if body is None:
            return
        try:
            messages, batch = rpc.parse_body(body)
        except ValueError as exc:
            await rpc.send_json(send, 400, rpc.error(None, rpc.PARSE_ERROR, f"Parse error: {exc}"))
            return
        requests = [m for m in messages if rpc.is_request(m)]
        streams_only = [m["id"] for m in requests if m["method"] in rpc.LONG_LIVED_METHODS]
        if streams_only and "text/event-stream" not in headers.get("accept", ""):
            # Its answer is an event stream that ends when the client leaves: as JSON it would
            # never be complete (the official server answers 406 too).
            await rpc.send_errors(send, 406, streams_only, rpc.INVALID_REQUEST,
                                  "Not Acceptable: this request is answered with an event stream; "
                                  "send Accept: text/event-stream")
            return

        init = [m for m in requests if m["method"] == "initialize"]
        if init:
            if len(messages) != 1:
                await rpc.send_json(send, 400, rpc.error(None, rpc.INVALID_REQUEST,
                                                         "initialize must be sent alone"))
                return
            await self._initialize(init[0], send)
            return

        version = headers.get("mcp-protocol-version", "")
        if "mcp-session-id" not in headers and (
                version in protocol.MODERN_VERSIONS or any(m["method"] == "server/discover" for m in requests)):
            await self._modern(version, messages, requests, batch, headers, receive, send)
            return

        session, status, reason = self._session(headers)
        if session is None:
            await rpc.send_errors(send, status, [m["id"] for m in requests], rpc.INVALID_REQUEST, reason)
            return

        for message in messages:
            if rpc.is_notification(message):
                await self._forward_notification(session, message)
        if not requests:
            await rpc.send_accepted(send)
            return
        if "text/event-stream" in headers.get("accept", ""):
            await self._answer_sse(session, requests, receive, send)
        else:
            await self._answer_json(session, requests, batch, send)

    async def _modern(self, version: str, messages: list[rpc.Message], requests: list[rpc.Message], batch: bool,
                      headers: dict[str, str], receive: Receive, send: Send) -> None:
        """A 2026-07-28 POST: no session; relayed to the modern child if the server speaks it."""
        child = await self._modern_child()
        if child is None:
            requested = version or str(((requests[0].get("params") or {}).get("_meta") or {}).get(
                protocol.META_PROTOCOL_VERSION, "")) if requests else version
            supported = [self.child.protocol_version]
            text = (f"Unsupported protocol version: this gateway bridges a stdio server that speaks "
                    f"{supported[0]} (initialize handshake)")
            data = {"supported": supported, "requested": requested}
            code = protocol.UNSUPPORTED_PROTOCOL_VERSION
            answers = [rpc.error(m["id"], code, text, data) for m in requests] or [rpc.error(None, code, text, data)]
            await rpc.send_json(send, 400, answers if batch else answers[0])
            return
        if not requests:
            # 2026-07-28 streamable HTTP defines no client notifications (closing a request's
            # stream is its cancellation): accept and drop them.
            await rpc.send_accepted(send)
            return
        if "text/event-stream" in headers.get("accept", ""):
            await self._answer_sse(None, requests, receive, send, child)
        else:
            await self._answer_json(None, requests, batch, send, child)

    async def _modern_child(self) -> StdioChild | None:
        if self._modern_state == "unknown":
            async with self._modern_lock:
                if self._modern_state == "unknown":
                    # A server that ignores unknown methods (against JSON-RPC) must not stall the
                    # first 2026-07-28 client for the whole start timeout.
                    options = dict(self._child_options,
                                   start_timeout=min(self._child_options["start_timeout"], MODERN_PROBE_TIMEOUT))
                    child = StdioChild(self._child_argv, generation="modern", **options)
                    try:
                        await child.start()
                    except StdioStartError as exc:
                        log.info("the stdio server does not speak %s (%s): 2026-07-28 clients are told to use "
                                 "initialize", protocol.LATEST_MODERN_VERSION, exc)
                        await child.aclose()
                        self._modern_state = "unsupported"
                    else:
                        self.modern_child = child
                        self._modern_state = "supported"
        return self.modern_child if self._modern_state == "supported" else None

    async def _initialize(self, message: rpc.Message, send: Send) -> None:
        self._expire_idle_sessions()
        if len(self.sessions) >= self.max_sessions:
            await rpc.send_json(send, 503, rpc.error(message["id"], rpc.INTERNAL_ERROR, "too many sessions"))
            return
        if not await self.child.wait_ready() or self.child.initialize_result is None:
            await rpc.send_json(send, 502, rpc.error(message["id"], rpc.INTERNAL_ERROR,
                                                     self.child.unavailable_reason()))
            return
        sid = secrets.token_hex(16)
        self.sessions[sid] = _Session(sid)
        result = dict(self.child.initialize_result)
        await rpc.send_json(send, 200, {"jsonrpc": "2.0", "id": message["id"], "result": result},
                            headers=[(b"mcp-session-id", sid.encode())])

    async def _forward_notification(self, session: _Session, message: rpc.Message) -> None:
        method = message["method"]
        if method == "notifications/initialized":
            return  # the child was initialised by the gateway itself
        if method == "notifications/cancelled":
            params = rpc.member(message, "params")
            gw_id = session.inflight.get(params.get("requestId"))
            if gw_id is None:
                return
            message = dict(message, params=dict(params, requestId=gw_id))
        await self.child.notify(message)

    async def _call(self, session: _Session | None, message: rpc.Message,
                    on_event: Callable[[rpc.Message], Any] | None, child: StdioChild | None = None) -> rpc.Message:
        if session is None:  # 2026-07-28: stateless, nothing to track
            if child is None:
                raise GatewayError("a request without a session needs the 2026-07-28 child")
            return await child.request(message, None, on_event)
        method = message["method"]
        uri = _uri_param(message)
        if method == "resources/unsubscribe" and uri is not None:
            session.subscriptions.discard(uri)
            if self._subscribed(uri):  # another session still wants updates: keep the child's subscription
                return {"jsonrpc": "2.0", "id": message["id"], "result": {}}
        gw_id = self.child.next_id()
        session.inflight[message["id"]] = gw_id
        try:
            response = await self.child.request(message, gw_id, on_event)
        finally:
            session.inflight.pop(message["id"], None)
        if method == "resources/subscribe" and uri is not None and "result" in response:
            session.subscriptions.add(uri)
        return response

    def _subscribed(self, uri: str) -> bool:
        return any(uri in s.subscriptions for s in self.sessions.values())

    def _end_session(self, session: _Session) -> None:
        self.sessions.pop(session.id, None)
        _close_stream(session)
        for uri in session.subscriptions:
            if not self._subscribed(uri):
                self._spawn(self.child.request({"jsonrpc": "2.0", "id": 0, "method": "resources/unsubscribe",
                                                "params": {"uri": uri}}))
        session.subscriptions.clear()

    def _expire_idle_sessions(self) -> None:
        cutoff = time.monotonic() - self.session_idle_timeout
        for session in list(self.sessions.values()):
            if session.last_seen < cutoff and session.stream is None and not session.inflight:
                log.info("session %s… idle for over %gs: expired", session.id[:8], self.session_idle_timeout)
                self._end_session(session)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _answer_json(self, session: _Session | None, requests: list[rpc.Message], batch: bool, send: Send,
                           child: StdioChild | None = None) -> None:
        responses = await asyncio.gather(*(self._call(session, m, None, child) for m in requests))
        await rpc.send_json(send, 200, list(responses) if batch else responses[0])

    async def _answer_sse(self, session: _Session | None, requests: list[rpc.Message], receive: Receive,
                          send: Send, child: StdioChild | None = None) -> None:
        queue: asyncio.Queue[rpc.Message] = asyncio.Queue()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache, no-transform"),
            (b"x-accel-buffering", b"no")]})

        async def call(message: rpc.Message) -> None:
            await queue.put(await self._call(session, message, queue.put, child))

        tasks = [asyncio.create_task(call(m)) for m in requests]
        watcher = asyncio.create_task(_wait_disconnect(receive))
        remaining = len(requests)
        try:
            while remaining:
                getter = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    return  # client gone: the finally below cancels the calls (the child is told)
                event = getter.result()
                if rpc.is_response(event):
                    remaining -= 1
                await send({"type": "http.response.body", "body": rpc.sse_event(event), "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            watcher.cancel()
            for task in tasks:
                task.cancel()

    async def _get(self, headers: dict[str, str], receive: Receive, send: Send) -> None:
        if "text/event-stream" not in headers.get("accept", ""):
            await rpc.send_json(send, 406, rpc.error(None, rpc.INVALID_REQUEST,
                                                     "Not Acceptable: GET needs Accept: text/event-stream"))
            return
        session, status, reason = self._session(headers)
        if session is None:
            await rpc.send_json(send, status, rpc.error(None, rpc.INVALID_REQUEST, reason))
            return
        if session.stream is not None:
            await rpc.send_json(send, 409, rpc.error(None, rpc.INVALID_REQUEST,
                                                     "Conflict: a GET stream is already open for this session"))
            return
        queue: asyncio.Queue[rpc.Message | None] = asyncio.Queue(SESSION_QUEUE_SIZE)
        session.stream = queue
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache, no-transform"),
            (b"x-accel-buffering", b"no")]})
        watcher = asyncio.create_task(_wait_disconnect(receive))
        try:
            while True:
                getter = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait({getter, watcher}, timeout=KEEPALIVE_SECONDS,
                                             return_when=asyncio.FIRST_COMPLETED)
                if watcher in done:
                    getter.cancel()
                    return
                if getter not in done:
                    getter.cancel()
                    await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
                    continue
                event = getter.result()
                if event is None:
                    break
                await send({"type": "http.response.body", "body": rpc.sse_event(event), "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            watcher.cancel()
            if session.stream is queue:
                session.stream = None

    async def _delete(self, headers: dict[str, str], send: Send) -> None:
        session, status, reason = self._session(headers)
        if session is None:
            await rpc.send_json(send, status, rpc.error(None, rpc.INVALID_REQUEST, reason))
            return
        self._end_session(session)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    def _broadcast(self, message: rpc.Message) -> None:
        """A child notification outside any request: resource updates to the sessions subscribed
        to that URI, everything else (list changes, log messages) to every open GET stream."""
        uri = _uri_param(message) if message["method"] == "notifications/resources/updated" else None
        for session in self.sessions.values():
            if uri is not None and uri not in session.subscriptions:
                continue
            if session.stream is not None:
                try:
                    session.stream.put_nowait(message)
                except asyncio.QueueFull:
                    log.warning("session %s… is not reading its GET stream; notification dropped", session.id[:8])


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        await asyncio.sleep(0.05)  # a receive() that replays the body must not spin


def _close_stream(session: _Session) -> None:
    if session.stream is not None:
        while True:
            try:
                session.stream.put_nowait(None)
                return
            except asyncio.QueueFull:
                session.stream.get_nowait()  # drop the oldest: the stream is closing anyway


def _uri_param(message: rpc.Message) -> str | None:
    params = message.get("params")
    uri = params.get("uri") if isinstance(params, dict) else None
    return uri if isinstance(uri, str) else None
