"""``CBSTMiddleware``: capability-token protection for an MCP streamable-HTTP ASGI app.

Per request on the MCP endpoint (:class:`~sdk.server.endpoint.MCPEndpoint`; design.md,
docs/sdk-server.md):

1. ``Origin``/``Host`` (DNS rebinding, :mod:`.origin`): an invalid ``Origin`` is 403, a
   non-loopback ``Host`` on a loopback resource 421. ``OPTIONS`` (CORS preflight, no
   credentials) then passes through; the RFC 9728 metadata is answered at the path and root
   well-known URIs.
2. ``POST``: ``Content-Type`` must be ``application/json`` (415), the body at most
   ``max_body_size`` (413) and well-formed JSON-RPC (400, ``-32700``/``-32600``/``-32602``); the
   2026-07-28 routing headers must agree with the body (400, ``-32020``).
3. The bearer token is verified offline (401 + ``WWW-Authenticate``; 503 when the IdP cannot be
   reached to get keys or a fresh revocation list).
4. A session id must be one the middleware saw created (404 otherwise) and belongs to the
   client that opened it (403 for another client) — :mod:`.session_pins`.
5. Each JSON-RPC message is checked against the token's capabilities (403
   ``insufficient_scope`` naming every capability the request needs); ``tools/call`` is rate
   limited per client (429 + ``Retry-After``).
6. The request goes to the app with the body replayed; ``*/list`` results are filtered
   (:mod:`.list_filter`, bounded); every other response streams through.
7. One audit event per message (:mod:`.audit`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..access_token import AccessToken, InvalidToken
from ..asgi import BodyTooLarge, read_body
from ..jws import MAX_TOKEN_LENGTH
from . import rpc
from .audit import AuditRecorder, LoggerSink
from .config import ProtectionConfig
from .endpoint import route_path
from .issuer import IssuerUnavailable
from .list_filter import ListFilter, id_key
from .metadata import bearer_challenge, metadata_body
from .origin import OriginPolicy
from .ratelimit import ToolRateLimiter
from .session_pins import SessionPins
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
                      b"origin", b"host", *rpc.ROUTING_HEADERS})


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
        self.recorder = AuditRecorder(self.audit, log_arguments=config.log_tool_arguments)
        self.origins = OriginPolicy(config.resource, config.allowed_origins)
        self._good_hosts = self.origins.good_hosts  # the common case, without a call
        self.sessions = SessionPins(max_sessions=int(config.max_sessions),
                                    max_per_client=config.max_sessions_per_client)
        self._metadata = metadata_body(config)
        self._metadata_paths = config.metadata_paths
        self._endpoint = config.endpoint
        self._public = frozenset(config.public_paths)

    # --- entry ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = route_path(scope)  # mounted under a prefix: route as Starlette does
            if self._endpoint.matches(path):
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
        started = time.time()
        try:
            found, repeated = _collect(scope["headers"])
            if repeated:
                raise _repeated(repeated, self.config)
            origin, host = found.get(b"origin"), found.get(b"host")
            if origin is not None or (host is not None and host not in self._good_hosts):
                self._check_origin(origin, host)
            if scope["method"] == "OPTIONS":
                await self.app(scope, receive, send)
                return
            token = await self._authenticate(found, [])
        except _Refusal as refusal:
            await self._refuse(send, refusal)
            self.recorder.refused_request(scope, started, reason=refusal.reason, status=refusal.status,
                                          detail=refusal.detail)
            return
        await self.app(self._inner_scope(scope, token), receive, send)

    # --- the MCP endpoint ----------------------------------------------------------------------

    async def _mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        started, t0 = time.time(), time.perf_counter()
        found, repeated = _collect(scope["headers"])
        messages: list[rpc.Message] = []
        is_batch = False
        generation: str | None = None
        token: AccessToken | None = None
        sid_raw = found.get(b"mcp-session-id")
        sid = sid_raw.decode("latin-1") if sid_raw is not None else None
        body = b""
        try:
            if repeated:  # first-copy and last-copy readers would disagree
                raise _repeated(repeated, self.config)
            origin, host = found.get(b"origin"), found.get(b"host")
            if origin is not None or (host is not None and host not in self._good_hosts):
                self._check_origin(origin, host)
            if method == "OPTIONS":
                await self.app(scope, receive, send)
                return
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
            self.recorder.messages(scope, started, t0, messages, token, _audit_sid(sid), generation,
                                   refusal.status, False, refusal.reason, refusal.detail)
            return

        status_box: list[Any] = [0, sid]
        sessions = self.sessions

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = status_box[0] = message["status"]
                if sid is None:  # a new session is pinned before its id reaches the client
                    new_sid = _header(message.get("headers") or [], b"mcp-session-id")
                    if new_sid is not None:
                        status_box[1] = new_sid.decode("latin-1")
                        sessions.pin(status_box[1], (token.client_id, token.subject))
                elif status == 404 or (method == "DELETE" and 200 <= status < 300):
                    sessions.forget(sid)  # the session ended, or the app no longer knows it
            await send(message)

        downstream: Send = send_status
        if list_ids:
            downstream = ListFilter(send_status, token.scope, list_ids,
                                    max_buffer=self.config.max_list_response_size)
        inner_receive = _replay(body, receive) if method == "POST" else receive
        try:
            await self.app(self._inner_scope(scope, token), inner_receive, downstream)
        finally:
            if messages:
                self.recorder.messages(scope, started, t0, messages, token, _audit_sid(status_box[1]),
                                       generation, status_box[0] or None, True, "allowed", None)

    def _check_origin(self, origin: bytes | None, host: bytes | None) -> None:
        """MCP transport: an invalid Origin is 403; a loopback server answers only loopback names."""
        refusal = self.origins.check(origin, host)
        if refusal is not None:
            raise _Refusal(refusal.status, refusal.reason, refusal.message, detail=refusal.detail,
                           code=rpc.FORBIDDEN if refusal.status == 403 else rpc.INVALID_REQUEST)

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

    def _check_session(self, sid: str, token: AccessToken) -> None:
        owner = self.sessions.owner(sid)
        if owner is None:  # never seen created (or forgotten): MCP says 404, start a new session
            raise _Refusal(404, "unknown_session", "unknown session: start a new one with initialize",
                           code=rpc.INVALID_REQUEST, detail=f"session {sid[:256]!r}")
        if owner != (token.client_id, token.subject):
            raise _Refusal(403, "session_mismatch", "this session belongs to another client",
                           code=rpc.FORBIDDEN)

    # --- capabilities and rate limits -----------------------------------------------------------

    def _authorize(self, token: AccessToken, messages: list[rpc.Message],
                   requirements: list[rpc.Requirement], *, in_session: bool = False) -> dict[str, str]:
        list_ids: dict[str, str] = {}
        denied: list[rpc.Message] = []
        for msg, req in zip(messages, requirements, strict=True):
            if not rpc.allows(token.scope, msg, req):
                denied.append(msg)
            elif req.list_method is not None and msg.kind == "request":
                list_ids[id_key(msg.id)] = req.list_method
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


def _audit_sid(sid: str | None) -> str | None:
    return sid[:256] if sid is not None else None


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


def protect(app: ASGIApp, *, issuer: str, resource: str, **options: Any) -> CBSTMiddleware:
    """``protect(app, issuer=..., resource=...)``: wrap ``app`` with safe defaults."""
    return CBSTMiddleware(app, ProtectionConfig(issuer=issuer, resource=resource, **options))
