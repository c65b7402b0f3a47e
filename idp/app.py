"""The IdP's HTTP surface (FastAPI): thin routes over the protocol modules in ``idp.oauth2``.

Every answer is JSON. Protocol refusals are RFC 6749 §5.2 error objects; anything unexpected is
a logged ``server_error`` without internals, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from sdk.asgi import BodyTooLarge, read_body

from . import __version__, blocking, clock, logs
from .config import Settings
from .federation import routes as federation_routes
from .oauth2 import introspection, metadata, registration, revocation, token_endpoint, userinfo
from .oauth2.errors import InvalidRequest, OAuthError, OAuthResponse, ServerBusy
from .oauth2.forms import Form, parse_form
from .oauth2.request import OAuthRequest
from .oauth2.stores import Stores
from .provider import Provider

log = logging.getLogger("cbst.idp")
MAINTENANCE_INTERVAL = 30.0
#: How long a resource server may cache the revocation list: part of the bound on how fast a
#: revocation takes effect at SDK-protected servers (see docs/tokens.md).
REVOCATION_LIST_MAX_AGE = 10


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")).encode(), status, headers, media_type="application/json")


#: Fields that must appear at most once (RFC 9110 §5.3): with two Authorization headers a proxy
#: and this app could each act on a different one; a DPoP proof is one header (RFC 9449 §4.3).
_SINGLETON_FIELDS = ("authorization", "content-type", "content-length", "dpop")
Handler = Callable[[Stores, OAuthRequest], "OAuthResponse | Coroutine[Any, Any, OAuthResponse]"]


class OAuthEndpoints:
    """``POST /token``, ``/introspect`` and ``/revoke`` as bare ASGI, in front of the FastAPI app.

    Why not FastAPI routes: its routing, dependency and middleware layers cost ~165 µs per request
    (measured on the 2-core machine the benchmarks run on), more than signing a token; these
    endpoints parse their own form bodies anyway. Everything else (metadata, JWKS, CORS preflight,
    404s) falls through to FastAPI.
    The ASGI scope is read here only: handlers get one :class:`~idp.oauth2.request.OAuthRequest`.
    """

    HANDLERS: ClassVar[dict[str, Handler]] = {
        "/token": token_endpoint.token,
        "/introspect": introspection.introspect,
        "/revoke": revocation.revoke,
    }

    def __init__(self, app: Any, provider: Callable[[], Stores], max_body: int) -> None:
        self.app = app
        self._provider = provider
        self._max_body = max_body
        self._token_on_loop: bool | None = None

    def _on_loop(self, stores: Stores) -> bool:
        """Whether ``/token`` runs on the event loop: only on SQLite. Its reads there never wait
        (WAL) and its one write, the audit record, is the group committer's, on threads of its
        own; handing each request to a worker thread cost half the throughput at c=8/64 (token
        bench --quick: 1.15x of node-oidc-provider on the loop, 0.56x/0.59x in a thread). Over
        the network (PostgreSQL) a hung server must not stall the loop, so there it runs off it."""
        if self._token_on_loop is None:
            self._token_on_loop = stores.settings.database_url.startswith("sqlite")
        return self._token_on_loop

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        handler = self.HANDLERS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if handler is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        raw = scope["headers"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}
        try:
            if len(headers) != len(raw):  # some field repeated: refuse ambiguous ones
                names = [k.decode("latin-1").lower() for k, _ in raw]
                if any(names.count(n) > 1 for n in _SINGLETON_FIELDS):
                    raise InvalidRequest("repeated Authorization, Content-Type, Content-Length or DPoP header field")
            body = await self._read_body(headers.get("content-length"), receive)
            request = self._request(scope, headers, parse_form(headers.get("content-type"), body))
            stores = self._provider()
            result: OAuthResponse
            if handler is token_endpoint.token and self._on_loop(stores) and not token_endpoint.writes(request):
                outcome = handler(stores, request)
                result = await outcome if asyncio.iscoroutine(outcome) else outcome
            else:
                result = await blocking.call(stores.settings.database_timeout, handler, stores, request)
        except OAuthError as exc:
            result = exc.response()
        except Exception:  # a database outage must not leak a traceback
            log.exception("request failed", extra={"fields": {"path": scope.get("path")}})
            result = ServerBusy("the server cannot complete the request now; retry later").response()
        out = [(b"content-type", b"application/json")]
        out.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in result.headers.items())
        if "origin" in headers:  # CORS for browser-based clients; no credentials are involved
            out.append((b"access-control-allow-origin", b"*"))
        payload = result.encode()
        out.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": result.status, "headers": out})
        await send({"type": "http.response.body", "body": payload})

    @staticmethod
    def _request(scope: dict[str, Any], headers: dict[str, str], form: Form) -> OAuthRequest:
        host = headers.get("host") or "{}:{}".format(*scope.get("server") or ("localhost", 80))
        peer = scope.get("client")
        tls = (scope.get("extensions") or {}).get("tls") or {}  # the ASGI TLS extension, when the server has it
        chain = tls.get("client_cert_chain")
        return OAuthRequest(
            method=scope["method"],
            url=f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}{scope['path']}",
            headers=headers,
            form=form,
            remote_addr=peer[0] if peer else None,
            client_cert=chain[0] if chain else None,  # the client's own certificate comes first
            dpop=headers.get("dpop"),
        )

    async def _read_body(self, declared: str | None, receive: Any) -> bytes:
        return await read_limited_body(declared, receive, self._max_body)


def create_app(settings: Settings | None = None, provider: Provider | None = None, *, maintenance: bool = True) -> Any:
    settings = settings or (provider.settings if provider else Settings())
    state: dict[str, Provider] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        prov = provider or Provider.open(settings)
        state["provider"] = prov
        task = asyncio.create_task(_maintenance_loop(prov)) if maintenance else None
        log.info("idp started", extra={"fields": {"issuer": settings.issuer, "version": __version__}})
        try:
            yield
        finally:
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if provider is None:
                prov.close()

    app = FastAPI(title="CBST identity provider", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    # Browser-based MCP clients read metadata and call the token endpoint cross-origin; no
    # cookies are involved, so any origin may.
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST", "PUT", "DELETE"],
                       allow_headers=["Authorization", "Content-Type", "MCP-Protocol-Version"])

    def prov() -> Provider:
        return state["provider"] if "provider" in state else _lazy(state, settings, provider)

    metadata_headers = {"Cache-Control": "public, max-age=3600"}

    # Built per request (cheap, and rarely asked): always what the grant and client-authentication
    # registries hold at that moment.
    @app.get("/.well-known/oauth-authorization-server", tags=["discovery"])
    async def oauth_metadata() -> Response:
        return _json(200, metadata.authorization_server_metadata(settings), metadata_headers)

    @app.get("/.well-known/openid-configuration", tags=["discovery"])
    async def openid_configuration() -> Response:
        return _json(200, metadata.openid_configuration(settings), metadata_headers)

    @app.get("/jwks", tags=["discovery"])
    async def jwks(request: Request) -> Response:
        keys = prov().keys
        try:
            body, etag = await blocking.call(settings.database_timeout, keys.jwks)
        except blocking.DatabaseUnavailable:
            held = keys.held_jwks()  # keys are public and outlive their tokens: serve what we have
            if held is None:
                raise
            body, etag = held
        headers = {"Cache-Control": f"public, max-age={settings.jwks_max_age}", "ETag": etag}
        if _etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        return Response(body, 200, headers, media_type="application/jwk-set+json")

    @app.get("/revoked", tags=["discovery"])
    async def revoked() -> Response:
        """Revoked, unexpired jtis (a jti grants nothing by itself, so the list is public)."""
        now = clock.now()
        active = await blocking.call(settings.database_timeout, prov().revocations.active, now)
        body = {"issuer": settings.issuer, "generated_at": now, "revoked": active}
        return _json(200, body, {"Cache-Control": f"public, max-age={REVOCATION_LIST_MAX_AGE}"})

    # --- OpenID Connect userinfo (codeflow) ---
    @app.api_route("/userinfo", methods=["GET", "POST"], tags=["oidc"])
    async def userinfo_endpoint(request: Request) -> Response:
        result = await blocking.call(settings.database_timeout, userinfo.userinfo, prov(),
                                     request.headers.get("authorization"))
        return _json(result.status, result.body, result.headers)

    async def post_only(request: Request) -> Response:  # never reached: OAuthEndpoints answers POST
        raise StarletteHTTPException(405, headers={"Allow": "POST"})

    # Declared so that other methods get 405 with Allow: POST (RFC 9110 §15.5.6), not 404.
    for path in OAuthEndpoints.HANDLERS:
        app.add_api_route(path, post_only, methods=["POST"], include_in_schema=False)

    registration_routes(app, settings, prov)

    # --- pages for people (idp/web): /authorize, login, consent ---
    from .web import router as web_router

    app.state.provider_getter = prov
    app.include_router(web_router)
    app.include_router(federation_routes.router(prov))  # federated login (docs/federation.md)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Response:
        return _json(200, {"status": "ok", "version": __version__})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
        body = {"error": code, "error_description": str(exc.detail)}
        return _json(exc.status_code, body, getattr(exc, "headers", None))

    @app.exception_handler(OAuthError)
    async def oauth_error(request: Request, exc: OAuthError) -> Response:  # a database outage: 503
        result = exc.response()
        return _json(result.status, result.body, result.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _json(400, {"error": "invalid_request", "error_description": "malformed request"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error", extra={"fields": {"path": request.url.path}})
        return _json(500, {"error": "server_error", "error_description": "internal error"})

    return OAuthEndpoints(app, prov, settings.max_body_bytes)


def registration_routes(app: FastAPI, settings: Settings, prov: Callable[[], Provider]) -> None:
    """``POST /register`` (RFC 7591) and ``GET/PUT/DELETE /register/{client_id}`` (RFC 7592)."""

    async def answer(request: Request, client_id: str | None) -> Response:
        provider = prov()
        try:
            declared = request.headers.get("content-length")
            body = await read_limited_body(declared, request.receive, settings.max_body_bytes)
            req = registration.RegistrationRequest(
                method=request.method, headers={k.lower(): v for k, v in request.headers.items()}, body=body,
                remote_addr=request.client.host if request.client else None)
            policy, issuer, throttle = settings.registration_policy, settings.issuer, provider.registration_throttle
            if client_id is None:
                handler = functools.partial(registration.register, provider.dynamic_clients, req, policy=policy,
                                            issuer=issuer, throttle=throttle)
            else:
                handler = functools.partial(registration.manage, provider.dynamic_clients, req, client_id,
                                            policy=policy, issuer=issuer, throttle=throttle)
            result = await blocking.call(settings.database_timeout, handler)
        except OAuthError as exc:
            result = exc.response()
        if result.status == 204:
            return Response(status_code=204, headers=result.headers)
        return _json(result.status, result.body, result.headers)

    @app.post("/register", tags=["registration"])
    async def register(request: Request) -> Response:
        return await answer(request, None)

    @app.api_route("/register/{client_id}", methods=["GET", "PUT", "DELETE"], tags=["registration"])
    async def manage(request: Request, client_id: str) -> Response:
        return await answer(request, client_id)


async def read_limited_body(declared: str | None, receive: Any, limit: int) -> bytes:
    """The body (SDK's bounded reader), refused with 413 past ``limit``: declared or while reading."""
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise InvalidRequest(f"request body larger than {limit} bytes", status=413)
    try:
        body = await read_body(receive, limit)
    except BodyTooLarge:
        raise InvalidRequest(f"request body larger than {limit} bytes", status=413) from None
    if body is None:
        raise InvalidRequest("client disconnected")
    return body


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: If-None-Match is ``*`` or a list of entity-tags, compared weakly."""
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == opaque for tag in if_none_match.split(","))


def _lazy(state: dict[str, Provider], settings: Settings, provider: Provider | None) -> Provider:
    # Only reached when the app is used without its lifespan (some test clients).
    state["provider"] = provider or Provider.open(settings)
    return state["provider"]


async def _maintenance_loop(provider: Provider) -> None:
    while True:
        # Jitter so that several processes do not all hit the database in the same second.
        await asyncio.sleep(MAINTENANCE_INTERVAL * random.uniform(0.5, 1.0))
        try:
            events = await asyncio.to_thread(provider.maintain)
            for event in events:
                log.info("maintenance", extra={"fields": {"event": event}})
        except Exception:
            log.exception("maintenance failed")


def app_from_env() -> Any:
    """Uvicorn factory for ``idp serve`` (each worker builds its app from the environment)."""
    from . import serving

    serving.exit_with_supervisor()
    settings = Settings()
    logs.configure(settings.log_level, settings.log_json)
    serving.configure(settings.request_read_timeout, settings.client_connections)
    return create_app(settings)
