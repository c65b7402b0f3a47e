"""The person-facing endpoints: ``/authorize`` (RFC 6749 §3.1, GET and POST as OpenID Connect
Core §3.1.2.1 allows), ``/interaction/{id}``, the password login, consent and logout.

Requests the IdP cannot trust to redirect (unknown client, unregistered redirect URI, malformed
input before those are known) get an error page (400) and never a redirect. Every other answer
to the client is a 303 to its redirect URI. Every page carries the security headers of
:mod:`idp.web.pages`; every POST is checked for CSRF (:mod:`idp.web.csrf`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from sdk.asgi import BodyTooLarge, read_body

from .. import audit, blocking
from ..oauth2.authorization_request import AuthorizationError, InvalidAuthorizationRequest, parse_authorization_request
from ..oauth2.errors import OAuthError
from ..oauth2.subject import Subject
from ..oauth2.throttle import TooManyFailures
from . import csrf, flow, login_methods
from .interactions import valid_id
from .login_methods import LOCAL
from .pages import STATIC_DIR, redirect, render, security_headers, stores_of
from .session import clear_cookie, complete_login, cookie_value, current_session, set_cookie

log = logging.getLogger("cbst.idp")
router = APIRouter(include_in_schema=False)

MAX_QUERY = 8 * 1024
MAX_FIELDS = 64
_CSS = (STATIC_DIR / "cbst.css").read_bytes()


class BadInput(Exception):
    pass


def _pairs(text: str) -> dict[str, list[str]]:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise BadInput("malformed parameters") from None
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        if "\x00" in name or "\x00" in value or len(name) > 128:
            raise BadInput("malformed parameters")
        out.setdefault(name, []).append(value)
    return out


async def _form(request: Request) -> dict[str, list[str]]:
    """An ``application/x-www-form-urlencoded`` body, bounded by ``max_body_bytes``."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise BadInput("the form must be sent as application/x-www-form-urlencoded")
    limit = stores_of(request).settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BadInput("the form is too large")
    try:
        body = await read_body(request.receive, limit)
    except BodyTooLarge:
        raise BadInput("the form is too large") from None
    if body is None:
        raise BadInput("the form was not received")
    try:
        return _pairs(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadInput("malformed parameters") from None


def _one(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadInput(f"{name} is repeated")
    return values[0]


def _page_error(request: Request, status: int, title: str, message: str) -> Response:
    return flow.error_page(request, status, title, message)


async def _guard(request: Request, handler: Callable[[], Awaitable[Response]]) -> Response:
    """Bad input is a 400 page, a database outage a 503 page, a bug a 500 page: never a traceback."""
    try:
        return await handler()
    except BadInput as exc:
        return _page_error(request, 400, "Bad request", str(exc))
    except blocking.DatabaseUnavailable:
        response = _page_error(request, 503, "Try again in a moment", "The sign-in service is busy.")
        response.headers["Retry-After"] = "5"
        return response
    except Exception:
        log.exception("page failed", extra={"fields": {"path": request.url.path}})
        return _page_error(request, 500, "Something went wrong", "The sign-in service could not complete this.")


def _call(request: Request, fn: Callable[..., Response], *args: object) -> Awaitable[Response]:
    return blocking.call(stores_of(request).settings.database_timeout, fn, request, stores_of(request), *args)


# --- /authorize --------------------------------------------------------------------------------------------


@router.api_route("/authorize", methods=["GET", "POST"])
async def authorize(request: Request) -> Response:
    async def run() -> Response:
        if request.method == "POST":
            params = await _form(request)
        else:
            query = request.scope.get("query_string", b"")
            if len(query) > MAX_QUERY:
                raise BadInput("the request is too large")
            try:
                params = _pairs(query.decode("ascii"))
            except UnicodeDecodeError:
                raise BadInput("malformed parameters") from None
        stores = stores_of(request)
        try:
            req = await parse_authorization_request(stores, params)
        except AuthorizationError as exc:
            return redirect(exc.redirect_url(stores.settings.issuer))
        except InvalidAuthorizationRequest as exc:
            return _page_error(request, 400, "This application's request cannot be accepted", exc.description)
        except OAuthError as exc:
            if exc.status >= 500:
                raise blocking.DatabaseUnavailable(stores.settings.database_timeout) from None
            return _page_error(request, 400, "This application's request cannot be accepted", exc.description)
        if request.method == "POST":
            # A cross-site POST carries no SameSite=Lax cookie: continue on a GET that does.
            interaction = await blocking.call(stores.settings.database_timeout, stores.interactions.create,
                                              req.to_json())
            return redirect(f"/interaction/{interaction.id}")
        return await _call(request, flow.start, req)

    return await _guard(request, run)


@router.get("/interaction/{interaction_id}")
async def interaction(request: Request, interaction_id: str) -> Response:
    async def run() -> Response:
        if not valid_id(interaction_id):
            return flow.expired_page(request, stores_of(request))
        return await _call(request, flow.resume, interaction_id)

    return await _guard(request, run)


# --- local accounts ----------------------------------------------------------------------------------------


def _password_page(request: Request, stores: object, interaction_id: str, status: int = 200,
                   error: str | None = None, username: str = "") -> Response:
    from ..provider import Provider

    assert isinstance(stores, Provider)
    found = stores.interactions.get(interaction_id)
    if found is None:
        return flow.expired_page(request, stores)
    session = current_session(request, stores)
    bound = found.data.get("sid")
    new_cookie = None
    if bound is None:
        if session is None:
            new_cookie, session = stores.web_sessions.create()
        stores.interactions.update_data(found.id, sid=session.sid)
    elif session is None or session.sid != bound:
        return flow.wrong_browser_page(request, stores)
    from ..oauth2.authorization_request import AuthorizationRequest

    req = AuthorizationRequest.from_json(found.request)
    client = stores.clients.get(req.client_id)
    several = len(login_methods.available(stores)) > 1
    response = render(request, "login.html", status=status, form_targets=[req.redirect_uri],
                      interaction_id=found.id, csrf=csrf.token(session, "login", found.id), error=error,
                      username=username, client_name=client.display_name if client else req.client_id,
                      back=f"/interaction/{found.id}" if several else None)
    if new_cookie is not None:
        set_cookie(response, stores.settings, new_cookie, session)
    return response


@router.get("/login/password")
async def password_form(request: Request) -> Response:
    async def run() -> Response:
        interaction_id = request.query_params.get("interaction", "")
        if not valid_id(interaction_id):
            return flow.expired_page(request, stores_of(request))
        return await _call(request, _password_page, interaction_id)

    return await _guard(request, run)


@router.post("/login/password")
async def password_login(request: Request) -> Response:
    async def run() -> Response:
        stores = stores_of(request)
        form = await _form(request)
        interaction_id = _one(form, "interaction") or ""
        username = (_one(form, "username") or "").strip()
        password = _one(form, "password") or ""
        if not valid_id(interaction_id):
            return flow.expired_page(request, stores)
        if not csrf.check_origin(request, stores.settings.issuer):
            return _page_error(request, 403, "Request refused", "The form was sent from another site.")
        session = await blocking.call(stores.settings.database_timeout, current_session, request, stores)
        if not csrf.verify(session, _one(form, "csrf"), "login", interaction_id):
            return _page_error(request, 403, "Request refused", "The form was not sent from this page (CSRF check).")
        address = request.client.host if request.client else None
        account = username.lower()[:128] or None
        throttle = stores.login_throttle
        try:
            throttle.check(client_id=account, address=address)
        except TooManyFailures as exc:
            await stores.audit_log.record("login.throttled", "web", data={
                "username": username[:128], "address": address, "session": session.sid if session else None})
            response = _page_error(request, 429, "Too many attempts",
                                   "Too many failed logins for this account or from this address. Wait and try again.")
            response.headers.update(exc.headers)
            return response
        if not username or not password:
            return await _call(request, _password_page, interaction_id, 400, "Enter your username and password.",
                               username)
        user = await blocking.call(stores.settings.database_timeout + 5, stores.users.authenticate, username, password)
        if user is None:
            throttled, suppressed = throttle.failed(client_id=account, address=address)
            if suppressed is not None:
                await stores.audit_log.record("login.failed", "web", data={
                    "username": username[:128], "address": address, "throttled": throttled,
                    "left_out_before": suppressed, "session": session.sid if session else None})
            return await _call(request, _password_page, interaction_id, 401, "Wrong username or password.", username)
        subject = Subject(user.subject, claims=user.subject_claims)
        return await complete_login(request, stores, interaction_id, subject, method=LOCAL)

    return await _guard(request, run)


# --- consent -----------------------------------------------------------------------------------------------


@router.post("/consent")
async def consent(request: Request) -> Response:
    async def run() -> Response:
        stores = stores_of(request)
        form = await _form(request)
        interaction_id = _one(form, "interaction") or ""
        action = _one(form, "action")
        if action not in ("approve", "deny"):
            raise BadInput("the form must say approve or deny")
        if not valid_id(interaction_id):
            return flow.expired_page(request, stores)
        if not csrf.check_origin(request, stores.settings.issuer):
            return _page_error(request, 403, "Request refused", "The form was sent from another site.")
        return await _call(request, _decide, interaction_id, action == "approve", form.get("grant", []),
                           _one(form, "csrf"))

    return await _guard(request, run)


def _decide(request: Request, stores: object, interaction_id: str, approve: bool, ticked: list[str],
            sent: str | None) -> Response:
    from ..provider import Provider

    assert isinstance(stores, Provider)
    return flow.decide(request, stores, interaction_id, approve=approve, ticked=ticked, sent_csrf=sent)


# --- logout ------------------------------------------------------------------------------------------------


def _logout_page(request: Request, stores: object) -> Response:
    from ..provider import Provider

    assert isinstance(stores, Provider)
    session = current_session(request, stores)
    if session is None or not session.logged_in:
        return render(request, "logged_out.html")
    return render(request, "logout.html", csrf=csrf.token(session, "logout"),
                  username=session.claims.get("preferred_username") or session.subject)


def _logout(request: Request, stores: object, sent: str | None) -> Response:
    from ..provider import Provider

    assert isinstance(stores, Provider)
    session = current_session(request, stores)
    if session is None:
        response = render(request, "logged_out.html")
    elif not csrf.verify(session, sent, "logout"):
        return flow.error_page(request, 403, "Request refused", "The form was not sent from this page (CSRF check).")
    else:
        stores.web_sessions.delete(cookie_value(request, stores.settings))
        with audit.transaction(stores.engine) as tx:
            tx.record(audit.Record("session.logout", session.subject or "web", data={
                "session": session.sid, "subject": session.subject}))
        response = render(request, "logged_out.html")
    clear_cookie(response, stores.settings)
    return response


@router.get("/logout")
async def logout_form(request: Request) -> Response:
    return await _guard(request, lambda: _call(request, _logout_page))


@router.post("/logout")
async def logout(request: Request) -> Response:
    async def run() -> Response:
        form = await _form(request)
        if not csrf.check_origin(request, stores_of(request).settings.issuer):
            return _page_error(request, 403, "Request refused", "The form was sent from another site.")
        return await _call(request, _logout, _one(form, "csrf"))

    return await _guard(request, run)


# --- static ------------------------------------------------------------------------------------------------


@router.get("/static/cbst.css")
async def stylesheet() -> Response:
    headers = {**security_headers(), "Cache-Control": "public, max-age=3600"}
    headers.pop("Pragma")
    return Response(_CSS, 200, headers, media_type="text/css")
