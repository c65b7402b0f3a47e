"""``CBSTMiddleware``: capability-token protection for an MCP streamable-HTTP ASGI app.

Per request on the MCP endpoint (design.md, issue 3, docs/sdk-server.md):

1. ``OPTIONS`` (CORS preflight, no credentials) passes through; the RFC 9728 metadata is
   answered at the path and root well-known URIs.
2. ``POST``: ``Content-Type`` must be ``application/json`` (415), the body at most
   ``max_body_size`` (413) and well-formed JSON-RPC (400, ``-32700``/``-32600``/``-32602``); the
   2026-07-28 routing headers must agree with the body (400, ``-32020``).
3. The bearer token is verified offline (401 + ``WWW-Authenticate``; 503 when the IdP cannot be
   reached to get keys or a fresh revocation list).
4. A session id is pinned to the client that opened the session (403 for another client).
5. Each JSON-RPC message is checked against the token's capabilities (403
   ``insufficient_scope`` naming every capability the request needs); ``tools/call`` is rate
   limited per client (429 + ``Retry-After``).
6. The request goes to the app with the body replayed; ``*/list`` results are filtered (JSON
   bodies buffered, SSE rewritten event by event); every other response streams through.
7. One audit event per message.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..access_token import AccessToken, InvalidToken
from ..asgi import BodyTooLarge, read_body
from ..jws import MAX_TOKEN_LENGTH
from . import rpc
from .audit import AuditEvent, LoggerSink
from .config import ProtectionConfig
from .issuer import IssuerUnavailable
from .metadata import bearer_challenge, metadata_body
from .ratelimit import ToolRateLimiter
from .verifier import TokenVerifier

__all__ = ["ACCESS_TOKEN_SCOPE_KEY", "CBSTMiddleware", "protect"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Where the wrapped app finds the verified :class:`~sdk.access_token.AccessToken`.
ACCESS_TOKEN_SCOPE_KEY = "cbst.access_token"

log = logging.getLogger("cbst.server")
_JSON = b"application/json"
_MAX_SSE_EVENT = 16 * 1024 * 1024


class _Refusal(Exception):
    def __init__(self, status: int, reason: str, message: str, *, code: int, request_id: Any = None,
                 headers: dict[str, str] | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.code = status, reason, message, code
        self.request_id, self.headers = request_id, headers or {}
        self.detail = detail or message


class _Needed:
    """The capabilities a request needs, computed only when a challenge names them."""

    __slots__ = ("requirements",)

    def __init__(self, requirements: list[rpc.Requirement]) -> None:
        self.requirements = requirements

    def __iter__(self) -> Any:
        return (s for s in (r.scope for r in self.requirements) if s)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for k, v in headers:
        if k == name:
            return v
    return None


#: Request headers the middleware reads; each may appear at most once.
_WATCHED = frozenset({b"authorization", b"content-type", b"content-length", b"mcp-session-id",
                      *rpc.ROUTING_HEADERS})


def _collect(headers: list[tuple[bytes, bytes]]) -> tuple[dict[bytes, bytes], list[bytes]]:
    """One pass over the request headers: the watched ones, and those that were repeated."""
    found: dict[bytes, bytes] = {}
    repeated: list[bytes] = []
    for k, v in headers:
        if k in _WATCHED:
            if k in found:
                repeated.append(k)
            else:
                found[k] = v
    return found, repeated


def _repeated(names: list[bytes], config: ProtectionConfig) -> _Refusal:
    name = names[0].decode()
    if name == "authorization":  # RFC 6750 §3.1: invalid_request
        return _Refusal(400, "invalid_request", "more than one Authorization header", code=rpc.UNAUTHORIZED,
                        headers={"www-authenticate": bearer_challenge(config, error="invalid_request")})
    if name in ("mcp-protocol-version", "mcp-method", "mcp-name"):
        return _Refusal(400, "header_mismatch", f"duplicate {name} header", code=rpc.HEADER_MISMATCH)
    return _Refusal(400, "malformed", f"more than one {name} header", code=rpc.INVALID_REQUEST)


def _id_key(value: Any) -> str:
    return json.dumps(value)


class CBSTMiddleware:
    """Pure ASGI middleware; see the module docstring and docs/sdk-server.md.

    ``CBSTMiddleware(app, ProtectionConfig(issuer=..., resource=...))`` or
    ``CBSTMiddleware(app, issuer=..., resource=..., **options)``.
    """

    def __init__(self, app: ASGIApp, config: ProtectionConfig | None = None, *,
                 verifier: TokenVerifier | None = None, **options: Any) -> None:
        if config is None:
            config = ProtectionConfig(**options)
        elif options:
            raise TypeError("pass options either in ProtectionConfig or as keywords, not both")
        if not isinstance(config, ProtectionConfig):
            raise TypeError("config must be a ProtectionConfig")
        self.app = app
        self.config = config
        self.verifier = verifier or TokenVerifier(config)
        self.limiter = ToolRateLimiter(
            config.tool_rate, burst=config.tool_burst, overrides=config.tool_rate_overrides,
            max_clients=config.rate_limit_max_clients,
        )
        self.audit = config.audit or LoggerSink(config.audit_logger)
        self._metadata = metadata_body(config)
        self._metadata_paths = config.metadata_paths
        base = config.mcp_path.rstrip("/") or "/"
        self._mcp_paths = frozenset({base, base.rstrip("/") + "/"})
        self._public = frozenset(config.public_paths)
        self._sessions: OrderedDict[str, tuple[str, str]] = OrderedDict()

    # --- entry ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            root = scope.get("root_path")
            if root and path.startswith(root):  # mounted under a prefix: route as Starlette does
                path = path[len(root):] or "/"
            if path in self._mcp_paths:
                await self._mcp(scope, receive, send)
            elif path in self._metadata_paths:
                await self._serve_metadata(scope, send)
            elif path in self._public:
                await self.app(scope, receive, send)
            else:
                await self._other(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        elif kind == "websocket":  # MCP has no WebSocket transport here: refuse, never bypass
            await send({"type": "websocket.close", "code": 1008})
        else:
            raise RuntimeError(f"CBSTMiddleware: unsupported ASGI scope type {kind!r}")

    # --- lifespan -----------------------------------------------------------------------------

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_wrapper(message: Message) -> None:
            kind = message["type"]
            if kind == "lifespan.startup.complete" and self.config.warm_up:
                await self.warm_up()
            elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.aclose()
            await send(message)

        await self.app(scope, receive, send_wrapper)

    async def warm_up(self) -> bool:
        """Fetch the IdP metadata, JWKS and revocation list now; False (logged) on failure."""
        import anyio

        try:
            with anyio.fail_after(self.config.http_timeout * 2):  # never hold up startup for long
                await self.verifier.issuer.keys()
                await self.verifier.issuer.ensure_revocations()
            return True
        except (IssuerUnavailable, TimeoutError) as exc:
            log.warning("cbst: IdP not reachable at startup (%s); will retry per request", exc or "timeout")
            return False

    async def aclose(self) -> None:
        await self.verifier.aclose()

    # --- metadata and non-MCP paths ---------------------------------------------------------

    async def _serve_metadata(self, scope: Scope, send: Send) -> None:
        method = scope["method"]
        headers = [(b"access-control-allow-origin", b"*"), (b"cache-control", b"public, max-age=3600")]
        if method in ("GET", "HEAD"):
            await _respond(send, 200, self._metadata if method == "GET" else b"", headers,
                           length=len(self._metadata))
        elif method == "OPTIONS":
            await _respond(send, 204, b"", [*headers, (b"access-control-allow-methods", b"GET, OPTIONS"),
                                             (b"access-control-allow-headers", b"MCP-Protocol-Version")],
                           content_type=None)
        else:
            await _respond(send, 405, b'{"error":"method_not_allowed"}', [(b"allow", b"GET, HEAD, OPTIONS")])

    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Any other path of the wrapped app: a valid token, no capability check."""
        if scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        started = time.time()
        try:
            found, repeated = _collect(scope["headers"])
            if repeated:
                raise _repeated(repeated, self.config)
            token = await self._authenticate(found, [])
        except _Refusal as refusal:
            await self._refuse(send, refusal)
            self._emit(AuditEvent(time=started, allowed=False, reason=refusal.reason,
                                  method=f"HTTP {scope['method']} {scope['path'][:200]}",
                                  status=refusal.status, detail=refusal.detail, remote=_remote(scope)))
            return
        await self.app(self._inner_scope(scope, token), receive, send)

    # --- the MCP endpoint ----------------------------------------------------------------------

    async def _mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method == "OPTIONS":
            await self.app(scope, receive, send)
            return
        started, t0 = time.time(), time.perf_counter()
        found, repeated = _collect(scope["headers"])
        messages: list[rpc.Message] = []
        is_batch = False
        generation: str | None = None
        token: AccessToken | None = None
        raw_sid = found.get(b"mcp-session-id")
        sid = raw_sid.decode("latin-1")[:256] if raw_sid is not None else None
        body = b""
        try:
            if repeated:  # first-copy and last-copy readers would disagree
                raise _repeated(repeated, self.config)
            if method == "POST":
                body = await self._read_body(found, receive)
                try:
                    messages, is_batch = rpc.parse_messages(body, max_batch=self.config.max_batch_size)
                    generation = rpc.check_routing(found, messages, is_batch)
                except rpc.RPCRefusal as exc:
                    raise _Refusal(exc.status, exc.reason, exc.message, code=exc.code,
                                   request_id=exc.request_id) from None
            requirements = [rpc.required_capability(m) for m in messages]
            token = await self._authenticate(found, requirements)
            if sid is not None:
                self._check_session(sid, token)
            list_ids = self._authorize(token, messages, requirements, in_session=sid is not None)
            self._rate_limit(token, messages)
        except _Refusal as refusal:
            await self._refuse(send, refusal)
            self._audit_messages(scope, started, t0, messages, token, sid, generation,
                                 refusal.status, False, refusal.reason, refusal.detail)
            return

        status_box: list[Any] = [0, sid]
        is_initialize = not is_batch and messages and messages[0].method == "initialize"

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                if is_initialize:
                    new_sid = _header(message.get("headers") or [], b"mcp-session-id")
                    if new_sid is not None:
                        status_box[1] = new_sid.decode("latin-1")[:256]
                        self._pin(status_box[1], token)
            await send(message)

        downstream: Send = send_status
        if list_ids:
            downstream = _ListFilter(send_status, token.scope, list_ids, self.config.max_body_size)
        inner_receive = _replay(body, receive) if method == "POST" else receive
        try:
            await self.app(self._inner_scope(scope, token), inner_receive, downstream)
        finally:
            if messages:
                self._audit_messages(scope, started, t0, messages, token, status_box[1], generation,
                                     status_box[0] or None, True, "allowed", None)

    def _inner_scope(self, scope: Scope, token: AccessToken) -> Scope:
        inner = dict(scope)
        if not self.config.forward_authorization:
            inner["headers"] = [(k, v) for k, v in scope["headers"] if k != b"authorization"]
        inner[ACCESS_TOKEN_SCOPE_KEY] = token
        return inner

    async def _read_body(self, found: dict[bytes, bytes], receive: Receive) -> bytes:
        ctype = found.get(b"content-type")
        if ctype is None or ctype.split(b";", 1)[0].strip().lower() != _JSON:
            raise _Refusal(415, "unsupported_media_type", "Content-Type must be application/json",
                           code=rpc.INVALID_REQUEST)
        limit = self.config.max_body_size
        declared = found.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                raise _Refusal(400, "malformed", "invalid Content-Length", code=rpc.INVALID_REQUEST)
            if int(declared) > limit:
                raise _Refusal(413, "too_large", f"request body larger than {limit} bytes",
                               code=rpc.INVALID_REQUEST)
        try:
            body = await read_body(receive, limit)
        except BodyTooLarge as exc:
            raise _Refusal(413, "too_large", str(exc), code=rpc.INVALID_REQUEST) from None
        if body is None:
            raise _Refusal(400, "disconnected", "client disconnected", code=rpc.INVALID_REQUEST)
        return body

    async def _authenticate(self, found: dict[bytes, bytes],
                            requirements: list[rpc.Requirement]) -> AccessToken:
        needed = _Needed(requirements)
        value = found.get(b"authorization")
        if value is None:
            raise _Refusal(401, "missing_token", "a bearer token is required", code=rpc.UNAUTHORIZED,
                           headers={"www-authenticate": bearer_challenge(self.config, scope=needed)})
        scheme, _, raw = value.partition(b" ")
        raw = raw.strip(b" ")
        if scheme.lower() != b"bearer" or not raw:
            raise self._invalid("use the Bearer authorization scheme", needed, "invalid_request")
        if len(raw) > MAX_TOKEN_LENGTH or not raw.isascii() or b" " in raw:
            # (the JWS parser then accepts only the base64url alphabet)
            raise self._invalid("malformed bearer token", needed)
        try:
            return await self.verifier.verify(raw.decode("ascii"))
        except InvalidToken as exc:
            raise self._invalid(str(exc), needed) from None
        except IssuerUnavailable as exc:
            log.warning("cbst: cannot verify tokens: %s", exc)
            raise _Refusal(503, "issuer_unavailable", "token verification is temporarily unavailable",
                           code=rpc.UNAVAILABLE, headers={"retry-after": "5"}, detail=str(exc)) from None

    def _invalid(self, description: str, needed: Any, error: str = "invalid_token") -> _Refusal:
        return _Refusal(401, error, description, code=rpc.UNAUTHORIZED, headers={
            "www-authenticate": bearer_challenge(self.config, error=error, description=description,
                                                 scope=needed)})

    # --- sessions ------------------------------------------------------------------------------

    def _pin(self, sid: str, token: AccessToken) -> None:
        self._sessions[sid] = (token.client_id, token.subject)
        self._sessions.move_to_end(sid)
        while len(self._sessions) > self.config.max_sessions:
            self._sessions.popitem(last=False)

    def _check_session(self, sid: str, token: AccessToken) -> None:
        owner = self._sessions.get(sid)
        if owner is None:
            self._pin(sid, token)  # opened before we saw it (restart): first user owns it
            return
        if owner != (token.client_id, token.subject):
            raise _Refusal(403, "session_mismatch", "this session belongs to another client",
                           code=rpc.FORBIDDEN)
        self._sessions.move_to_end(sid)

    # --- capabilities and rate limits -----------------------------------------------------------

    def _authorize(self, token: AccessToken, messages: list[rpc.Message],
                   requirements: list[rpc.Requirement], *, in_session: bool = False) -> dict[str, str]:
        list_ids: dict[str, str] = {}
        denied: list[rpc.Message] = []
        for msg, req in zip(messages, requirements, strict=True):
            if not rpc.allows(token.scope, msg, req):
                denied.append(msg)
            elif req.list_method is not None and msg.kind == "request":
                list_ids[_id_key(msg.id)] = req.list_method
        if denied:
            needed = [r.scope for r in requirements if r.scope]
            first = denied[0]
            what = first.method if first.target is None else f"{first.method} {first.target!r}"
            text = f"the token does not allow {what}"[:300]
            if in_session and len(messages) == 1 and self.config.in_session_denials == "jsonrpc":
                # An error for this one request; the session and its other requests carry on.
                raise _Refusal(200, "insufficient_scope", text, code=rpc.FORBIDDEN, request_id=first.id)
            raise _Refusal(403, "insufficient_scope", text, code=rpc.FORBIDDEN,
                           request_id=None if len(messages) > 1 else first.id,
                           headers={"www-authenticate": bearer_challenge(
                               self.config, error="insufficient_scope", description=text, scope=needed)})
        return list_ids

    def _rate_limit(self, token: AccessToken, messages: list[rpc.Message]) -> None:
        for msg in messages:
            if msg.method == "tools/call" and msg.kind == "request":
                wait = self.limiter.acquire(token.client_id, msg.target or "")
                if wait > 0:
                    raise _Refusal(429, "rate_limited", "too many tool calls; retry later",
                                   code=rpc.RATE_LIMITED,
                                   request_id=None if len(messages) > 1 else msg.id,
                                   headers={"retry-after": ToolRateLimiter.retry_after_header(wait)})

    # --- answers and audit -------------------------------------------------------------------------

    async def _refuse(self, send: Send, refusal: _Refusal) -> None:
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in refusal.headers.items()]
        body = rpc.error_body(refusal.request_id, refusal.code, refusal.message)
        await _respond(send, refusal.status, body, headers)

    def _audit_messages(self, scope: Scope, started: float, t0: float, messages: list[rpc.Message],
                        token: AccessToken | None, sid: str | None, generation: str | None,
                        status: int | None, allowed: bool, reason: str, detail: str | None) -> None:
        duration = round((time.perf_counter() - t0) * 1000, 3)
        remote = _remote(scope)
        gen = generation or ("handshake" if messages else None)
        cid, sub, jti = (token.client_id, token.subject, token.jti) if token is not None else (None, None, None)
        if not messages:
            self._emit(AuditEvent(started, allowed, reason, f"HTTP {scope['method']}", None, None, sid, cid, sub,
                                  jti, status, duration, gen, remote, detail))
            return
        log_args = self.config.log_tool_arguments
        for msg in messages:
            if msg.kind == "response":
                continue
            event = AuditEvent(started, allowed, reason, msg.method, msg.target, msg.id, sid, cid, sub, jti,
                               status, duration, gen, remote, detail)
            if log_args and msg.params is not None and "arguments" in msg.params:
                event.arguments = msg.params["arguments"]
            self._emit(event)

    def _emit(self, event: AuditEvent) -> None:
        try:
            self.audit(event)
        except Exception:  # noqa: BLE001 - a broken sink must not break requests
            log.exception("cbst: audit sink failed")


def _remote(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], *,
                   content_type: bytes | None = _JSON, length: int | None = None) -> None:
    out = list(headers)
    if content_type is not None:
        out.append((b"content-type", content_type))
    out.append((b"content-length", str(len(body) if length is None else length).encode()))
    out.append((b"cache-control", b"no-store")) if status >= 400 else None
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def inner() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return inner


class _ListFilter:
    """Rewrites ``*/list`` results in a response: a JSON body is buffered (it is one list
    result), an SSE stream is rewritten event by event (only the events that carry a list
    result are re-encoded); anything else passes through untouched."""

    def __init__(self, send: Send, scope: Any, list_ids: dict[str, str], max_body: int) -> None:
        self.send, self.caps, self.list_ids = send, scope, list_ids
        self.mode = "pass"
        self.start: Message | None = None
        self.chunks: list[bytes] = []
        self.buffer = b""

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            headers = message.get("headers") or []
            ctype = (_header(headers, b"content-type") or b"").split(b";", 1)[0].strip().lower()
            if ctype == _JSON:
                self.mode, self.start = "json", message
                return
            if ctype == b"text/event-stream":
                self.mode = "sse"
                message = {**message, "headers": [(k, v) for k, v in headers if k != b"content-length"]}
            await self.send(message)
        elif kind == "http.response.body" and self.mode == "json":
            self.chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                body = self._filter_json(b"".join(self.chunks))
                assert self.start is not None
                headers = [(k, v) for k, v in self.start.get("headers") or [] if k != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await self.send({**self.start, "headers": headers})
                await self.send({"type": "http.response.body", "body": body, "more_body": False})
        elif kind == "http.response.body" and self.mode == "sse":
            more = message.get("more_body", False)
            out = self._feed_sse(message.get("body", b""), final=not more)
            if out or not more:
                await self.send({"type": "http.response.body", "body": out, "more_body": more})
        else:
            await self.send(message)

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
            method = self.list_ids.get(_id_key(obj["id"]))
            if method is not None:
                return {**obj, "result": rpc.filter_result(self.caps, method, obj["result"])}, True
        return obj, False

    def _filter_json(self, body: bytes) -> bytes:
        try:
            obj = json.loads(body)
        except ValueError:
            # Cannot read it, so cannot filter it: do not let it through.
            return rpc.error_body(None, -32603, "unreadable list response withheld")
        new, changed = self._filter_obj(obj)
        return json.dumps(new, separators=(",", ":"), ensure_ascii=False).encode() if changed else body

    def _feed_sse(self, chunk: bytes, *, final: bool) -> bytes:
        self.buffer += chunk
        out: list[bytes] = []
        while True:
            cut = -1
            sep = b""
            for candidate in (b"\r\n\r\n", b"\n\n", b"\r\r"):
                i = self.buffer.find(candidate)
                if i != -1 and (cut == -1 or i < cut):
                    cut, sep = i, candidate
            if cut == -1:
                break
            event, self.buffer = self.buffer[:cut], self.buffer[cut + len(sep):]
            out.append(self._rewrite_event(event) + sep)
        if final and self.buffer:
            out.append(self._rewrite_event(self.buffer))
            self.buffer = b""
        elif len(self.buffer) > _MAX_SSE_EVENT:
            self.buffer = b""  # an absurd event: drop it rather than pass it unfiltered
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


def protect(app: ASGIApp, *, issuer: str, resource: str, **options: Any) -> CBSTMiddleware:
    """``protect(app, issuer=..., resource=...)``: wrap ``app`` with safe defaults."""
    return CBSTMiddleware(app, ProtectionConfig(issuer=issuer, resource=resource, **options))
