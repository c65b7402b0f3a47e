"""Federated login routes: ``GET /login/upstream/{name}`` and ``GET /federation/callback/{name}``.

1. The chooser page links to ``/login/upstream/{name}?interaction=ID``. The IdP stores a fresh
   ``state``, ``nonce`` and PKCE verifier in that interaction (OIDC Core 1.0 §3.1.2.1, RFC 7636),
   sets a browser binding cookie, and redirects to the upstream's authorization endpoint.
2. The upstream redirects back to ``/federation/callback/{name}`` (the redirect URI registered
   there: ``{issuer}/federation/callback/{name}``). The callback is accepted only when its
   ``state`` is the one stored for that interaction and that upstream (RFC 6749 §10.12), from the
   browser that started it (the binding cookie: a callback URL sent to another browser is
   refused, against login CSRF and session swapping), once (consumed before the code is
   redeemed), and when the RFC 9207 ``iss`` parameter, if the upstream sends it (required when
   it says it does), names that upstream (against mix-up between several upstreams).
3. The code is redeemed and the ID token validated (:mod:`.oidc_client`), the upstream identity
   mapped to its local subject (:mod:`.identities`), and the pages' ``complete_login`` gives the
   browser its fresh session and continues the interaction (consent, or the code to the client).

Every refusal is a plain error page (never a 500, never a redirect to the client) and an audit
record ``federation.login_refused`` with its reason.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from .. import blocking, clock
from ..oauth2.subject import USER, Subject
from ..provider import Provider
from ..web import login_methods as pages_login_methods
from ..web.pages import render
from ..web.session import complete_login, current_session
from .identities import FederatedIdentities, mapped_claims
from .oidc_client import OIDCClient, UpstreamLoginError
from .state import LoginStates
from .upstreams import Upstream

log = logging.getLogger("cbst.federation")

BINDING_COOKIE = "cbst_federation"
BINDING_PATH = "/federation/callback/"


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def redirect_uri(issuer: str, name: str) -> str:
    return f"{issuer}/federation/callback/{name}"


@dataclass
class UpstreamLoginMethod:
    """A chooser entry (the pages' :class:`~idp.web.login_methods.LoginMethod`)."""

    name: str
    label: str

    def start_url(self, interaction_id: str) -> str:
        return f"/login/upstream/{quote(self.name.removeprefix('upstream:'), safe='')}?interaction=" \
               f"{quote(interaction_id, safe='')}"


def login_methods(stores: Provider) -> list[pages_login_methods.LoginMethod]:
    """The login-method source registered with the pages: every enabled upstream, by name."""
    return [UpstreamLoginMethod(f"upstream:{u.name}", f"Sign in with {u.label}")
            for u in stores.federation.list(enabled_only=True)]


def error_page(request: Request, status: int, title: str, message: str) -> Response:
    """The pages' error page (their security headers: CSP, no framing, no-store)."""
    return render(request, "error.html", status=status, title=title, message=message)


def router(provider: Callable[[], Provider]) -> APIRouter:
    """The federation routes over the app's provider (and the chooser entries, registered once)."""
    api = APIRouter()
    clients: dict[str, OIDCClient] = {}
    pages_login_methods.register_source(login_methods)

    def oidc(prov: Provider) -> OIDCClient:
        if "client" not in clients:
            s = prov.settings
            clients["client"] = OIDCClient(timeout=s.federation_timeout, discovery_ttl=s.federation_discovery_ttl,
                                           clock_skew=s.clock_skew)
        return clients["client"]

    async def db(prov: Provider, fn: Callable[..., Any], *args: Any) -> Any:
        return await blocking.call(prov.settings.database_timeout, fn, *args)

    async def refuse(prov: Provider, request: Request, name: str, reason: str, message: str, *, status: int = 400,
                     interaction: str | None = None, **data: Any) -> Response:
        record = {"reason": reason, "upstream": name[:64], "interaction": interaction,
                  "remote_addr": request.client.host if request.client else None, **data}
        log.info("federated login refused", extra={"fields": record})
        try:
            await prov.audit_log.record("federation.login_refused", f"federation:{name[:64]}", data=record)
        except Exception:  # the page must still answer when the database does not
            log.exception("audit record of a refused federated login failed")
        return error_page(request, status, "Sign-in failed", message)

    @api.get("/login/upstream/{name}", include_in_schema=False)
    async def start(request: Request, name: str) -> Response:
        prov = provider()
        interaction_id = request.query_params.get("interaction", "")
        try:
            upstream: Upstream | None = await db(prov, prov.federation.get, name)
            if upstream is None or not upstream.enabled:
                return error_page(request, 404, "Unknown sign-in method", "This sign-in method is not configured.")
            row = await db(prov, LoginStates(prov.engine).load, interaction_id)
            if row is None:
                return await refuse(prov, request, name, "unknown_interaction",
                                    "This sign-in request is unknown or has expired.", interaction=interaction_id[:64])
            bound = row.data.get("sid")  # the pages bind an interaction to the browser that opened it
            if bound is not None:
                session = await db(prov, current_session, request, prov)
                if session is None or session.sid != bound:
                    return await refuse(prov, request, name, "browser_mismatch",
                                        "This sign-in request belongs to another browser.", interaction=row.id)
            meta = await oidc(prov).metadata(upstream)
            state = f"{row.id}.{secrets.token_urlsafe(32)}"
            nonce = secrets.token_urlsafe(32)
            verifier = secrets.token_urlsafe(48)  # 64 characters (RFC 7636 §4.1: 43-128)
            binding = request.cookies.get(BINDING_COOKIE, "")
            if len(binding) != 43 or not binding.replace("-", "").replace("_", "").isalnum():
                binding = secrets.token_urlsafe(32)
            login = {"upstream": upstream.name, "issuer": upstream.issuer, "state_hash": _hash(state),
                     "nonce": nonce, "code_verifier": verifier, "binding_hash": _hash(binding),
                     "started_at": clock.now()}
            if not await db(prov, LoginStates(prov.engine).swap, row, login):
                return error_page(request, 409, "Sign-in failed", "This sign-in request changed meanwhile; try again.")
            url = oidc(prov).authorization_url(upstream, meta, redirect_uri=redirect_uri(prov.settings.issuer, name),
                                               state=state, nonce=nonce, code_verifier=verifier)
        except UpstreamLoginError as exc:
            return await refuse(prov, request, name, exc.reason, f"The sign-in provider cannot be used now: {exc}",
                                status=exc.status, interaction=interaction_id[:64])
        except blocking.DatabaseUnavailable:
            return error_page(request, 503, "Try again later", "The sign-in service is busy; try again in a moment.")
        response = RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})
        response.set_cookie(BINDING_COOKIE, binding, max_age=prov.settings.federation_login_ttl, path=BINDING_PATH,
                            httponly=True, samesite="lax", secure=prov.settings.issuer.startswith("https://"))
        return response

    @api.get("/federation/callback/{name}", include_in_schema=False)
    async def callback(request: Request, name: str) -> Response:
        prov = provider()
        try:
            return await _callback(prov, request, name)
        except UpstreamLoginError as exc:
            return await refuse(prov, request, name, exc.reason, f"Sign-in at the provider failed: {exc}",
                                status=exc.status)
        except blocking.DatabaseUnavailable:
            return error_page(request, 503, "Try again later", "The sign-in service is busy; try again in a moment.")

    async def _callback(prov: Provider, request: Request, name: str) -> Response:
        params = request.query_params
        if any(len(params.getlist(k)) > 1 for k in params):  # RFC 6749 §3.1: no repeated parameters
            return await refuse(prov, request, name, "repeated_parameter", "The sign-in response is malformed.")
        state = params.get("state", "")
        interaction_id, _, _ = state.rpartition(".")
        if not interaction_id:
            return await refuse(prov, request, name, "missing_state", "The sign-in response carries no valid state.")
        row = await db(prov, LoginStates(prov.engine).load, interaction_id)
        login = row.login if row is not None else None
        if row is None or login is None or login.get("upstream") != name \
                or not hmac.compare_digest(str(login.get("state_hash", "")), _hash(state)):
            # Unknown, already used, for another upstream, or another interaction's state.
            return await refuse(prov, request, name, "state_mismatch",
                                "This sign-in response does not belong to a sign-in in progress (it may have been "
                                "used already).", interaction=interaction_id[:64])
        binding = request.cookies.get(BINDING_COOKIE, "")
        if not hmac.compare_digest(str(login.get("binding_hash", "")), _hash(binding)):
            return await refuse(prov, request, name, "browser_mismatch",
                                "This sign-in response was started in another browser.", interaction=row.id)
        # Consumed before anything else: a replay of this response, or a race with one, finds nothing.
        if not await db(prov, LoginStates(prov.engine).swap, row, None):
            return await refuse(prov, request, name, "state_mismatch", "This sign-in response was used already.",
                                interaction=row.id)
        if login.get("started_at", 0) + prov.settings.federation_login_ttl < clock.now():
            return await refuse(prov, request, name, "login_expired", "The sign-in took too long; start again.",
                                interaction=row.id)
        upstream: Upstream | None = await db(prov, prov.federation.get, name)
        if upstream is None or not upstream.enabled or upstream.issuer != login.get("issuer"):
            return await refuse(prov, request, name, "upstream_changed", "This sign-in method is no longer configured.",
                                interaction=row.id)
        client = oidc(prov)
        meta = await client.metadata(upstream)
        iss = params.get("iss")
        if iss is not None and iss != upstream.issuer:  # RFC 9207 §2.4: a response from another provider
            return await refuse(prov, request, name, "issuer_mismatch",
                                "The sign-in response comes from another provider than the one asked.",
                                interaction=row.id, iss=iss[:512])
        if iss is None and meta.iss_parameter_supported:
            return await refuse(prov, request, name, "issuer_missing",
                                "The sign-in response does not say which provider sent it.", interaction=row.id)
        if "error" in params:
            error = params.get("error", "")[:64]
            message = ("Sign-in was cancelled at the provider." if error == "access_denied"
                       else "The provider could not sign you in.")
            return await refuse(prov, request, name, "upstream_error", message, interaction=row.id, error=error,
                                error_description=params.get("error_description", "")[:256])
        code = params.get("code", "")
        if not code or len(code) > 2048:
            return await refuse(prov, request, name, "missing_code", "The sign-in response carries no code.",
                                interaction=row.id)
        secret = await db(prov, prov.federation.client_secret, name)
        auth = await client.authenticate(upstream, secret, redirect_uri=redirect_uri(prov.settings.issuer, name),
                                         code=code, code_verifier=str(login.get("code_verifier")),
                                         nonce=str(login.get("nonce")))
        kept = mapped_claims(auth.claims)
        link = await db(prov, functools.partial(FederatedIdentities(prov.engine).link, upstream=upstream.name),
                        auth.issuer, auth.subject, kept)
        claims = {**kept, "iss": auth.issuer, "upstream": upstream.name, "upstream_sub": auth.subject}
        subject = Subject(link.subject, USER, claims)
        await prov.audit_log.record("federation.login", f"federation:{name}", data={
            "subject": link.subject, "issuer": auth.issuer, "upstream_subject": auth.subject, "interaction": row.id,
            "first_login": link.created, "email": kept.get("email"), "groups": kept.get("groups", [])})
        response: Response = await complete_login(request, prov, row.id, subject, method=f"federated:{name}")
        return response

    return api
