"""The steps of an authorization request once it is valid: login, then consent, then the code.

Synchronous functions (they read and write the database): the routes run them off the event
loop. Each returns the response for the browser: a page, or a 303 to the next step or to the
client (a code, or an error such as ``login_required`` or ``access_denied``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from sdk.capabilities import CapabilitySet

from .. import audit, clock
from ..oauth2.authorization_request import AuthorizationRequest, authorization_response, error_response
from . import consent_page, csrf, login_methods
from .interactions import Interaction
from .pages import redirect, render
from .session import WebSession, current_session, set_cookie

if TYPE_CHECKING:
    from ..provider import Provider

#: prompt values that ask for a login even with a live session (OIDC Core §3.1.2.1).
_FRESH_LOGIN = frozenset({"login", "select_account"})


def error_page(request: Request, status: int, title: str, message: str) -> Response:
    return render(request, "error.html", status=status, title=title, message=message)


def expired_page(request: Request, stores: Provider) -> Response:
    return error_page(request, 400, "This sign-in request is no longer valid",
                      "It was completed already or it expired. Go back to the application and start again.")


def wrong_browser_page(request: Request, stores: Provider) -> Response:
    return error_page(request, 403, "This sign-in request belongs to another browser",
                      "Start again from the application in this browser.")


def needs_login(req: AuthorizationRequest, session: WebSession | None, interaction: Interaction | None) -> bool:
    if session is None or not session.logged_in:
        return True
    if interaction is not None and interaction.data.get("login_sid") == session.sid:
        return False  # logged in for this very request: prompt=login and max_age are satisfied
    if req.prompt & _FRESH_LOGIN:
        return True
    # ">=": max_age=0 means a fresh login (times are whole seconds, a login a moment ago is 0 s old)
    return req.max_age is not None and clock.now() - (session.auth_time or 0) >= req.max_age


def start(request: Request, stores: Provider, req: AuthorizationRequest) -> Response:
    """A valid request from ``/authorize``: straight to the client when the session and the
    remembered consent cover it (no row written but the code), else to ``/interaction/{id}``."""
    session = current_session(request, stores)
    if needs_login(req, session, None):
        if "none" in req.prompt:
            return redirect(error_response(stores, req, "login_required", "the person is not logged in"))
        interaction = stores.interactions.create(req.to_json())
        return redirect(f"/interaction/{interaction.id}")
    assert session is not None
    client = stores.clients.get(req.client_id)
    if client is None:
        return redirect(error_response(stores, req, "invalid_request", "the client is gone"))
    plan = _plan(stores, req, client, session)
    if plan.new or "consent" in req.prompt or _nothing_grantable(req, plan):
        if "none" in req.prompt:
            return redirect(error_response(stores, req, "consent_required", "the person has to consent"))
        interaction = stores.interactions.create(req.to_json())
        return redirect(f"/interaction/{interaction.id}")
    return redirect(authorization_response(stores, req, subject=session.as_subject(), granted=plan.covered_set,
                                           auth_time=session.auth_time or clock.now(), session_id=session.sid))


def resume(request: Request, stores: Provider, interaction_id: str) -> Response:
    """``GET /interaction/{id}``: bind the interaction to this browser, then its next step."""
    interaction = stores.interactions.get(interaction_id)
    if interaction is None:
        return expired_page(request, stores)
    session = current_session(request, stores)
    new_cookie: str | None = None
    bound = interaction.data.get("sid")
    if bound is None:
        if session is None:
            new_cookie, session = stores.web_sessions.create()
        data = stores.interactions.update_data(interaction.id, sid=session.sid)
        if data is None:
            return expired_page(request, stores)
        interaction = Interaction(interaction.id, interaction.request, data, interaction.created_at,
                                  interaction.expires_at)
    elif session is None or session.sid != bound:
        return wrong_browser_page(request, stores)
    response = continue_interaction(request, stores, interaction, session)
    if new_cookie is not None:
        set_cookie(response, stores.settings, new_cookie, session)
    return response


def continue_interaction(request: Request, stores: Provider, interaction: Interaction,
                         session: WebSession) -> Response:
    req = AuthorizationRequest.from_json(interaction.request)
    if needs_login(req, session, interaction):
        if "none" in req.prompt:
            stores.interactions.finish(interaction.id)
            return redirect(error_response(stores, req, "login_required", "the person is not logged in"))
        return login_step(request, stores, interaction, session)
    client = stores.clients.get(req.client_id)
    if client is None:
        stores.interactions.finish(interaction.id)
        return redirect(error_response(stores, req, "invalid_request", "the client is gone"))
    plan = _plan(stores, req, client, session)
    if not plan.new and "consent" not in req.prompt:
        if _nothing_grantable(req, plan):
            return _deny(stores, req, interaction, session, plan, "policy allows none of the requested capabilities")
        if not stores.interactions.finish(interaction.id):
            return expired_page(request, stores)
        return redirect(authorization_response(stores, req, subject=session.as_subject(), granted=plan.covered_set,
                                               auth_time=session.auth_time or clock.now(), session_id=session.sid))
    if "none" in req.prompt:
        stores.interactions.finish(interaction.id)
        return redirect(error_response(stores, req, "consent_required", "the person has to consent"))
    stores.interactions.update_data(interaction.id, consent=plan.to_json())
    return consent_view(request, stores, interaction, session, req, client, plan)


def _plan(stores: Provider, req: AuthorizationRequest, client: object, session: WebSession) -> consent_page.Plan:
    from ..oauth2.client import ClientRecord

    assert isinstance(client, ClientRecord)
    return consent_page.plan(stores, client=client, subject=session.as_subject(), resource=req.resource,
                             requested=req.scope, info=tuple(sorted(req.other_scopes)))


def _nothing_grantable(req: AuthorizationRequest, plan: consent_page.Plan) -> bool:
    return bool(len(req.scope)) and not plan.new and not plan.covered


def login_step(request: Request, stores: Provider, interaction: Interaction, session: WebSession) -> Response:
    methods = login_methods.available(stores)
    if not methods:
        return error_page(request, 503, "Nobody can log in yet",
                          "The operator has not set up local accounts or an identity provider.")
    if len(methods) == 1:
        return redirect(methods[0].start_url(interaction.id))
    req = AuthorizationRequest.from_json(interaction.request)
    client = stores.clients.get(req.client_id)
    return render(request, "chooser.html", methods=[(m.label, m.start_url(interaction.id)) for m in methods],
                  client_name=client.display_name if client else req.client_id, session=session)


def consent_view(request: Request, stores: Provider, interaction: Interaction, session: WebSession,
                 req: AuthorizationRequest, client: object, plan: consent_page.Plan,
                 *, status: int = 200, error: str | None = None) -> Response:
    from urllib.parse import urlsplit

    from ..oauth2.client import ClientRecord

    assert isinstance(client, ClientRecord)
    resource = stores.resources.get(req.resource)
    return render(request, "consent.html", status=status, form_targets=[req.redirect_uri],
                  interaction_id=interaction.id, csrf=csrf.token(session, "consent", interaction.id),
                  client_name=client.display_name, client_id=client.client_id, reviewed=client.reviewed,
                  redirect_host=urlsplit(req.redirect_uri).netloc or req.redirect_uri,
                  resource_name=resource.name if resource else req.resource, resource_uri=req.resource,
                  new=plan.new, covered=plan.covered, denied=plan.denied, info=plan.info,
                  username=session.claims.get("preferred_username") or session.subject, error=error)


def decide(request: Request, stores: Provider, interaction_id: str, *, approve: bool, ticked: list[str],
           sent_csrf: str | None) -> Response:
    """``POST /consent``: the person's answer."""
    interaction = stores.interactions.get(interaction_id)
    if interaction is None:
        return expired_page(request, stores)
    session = current_session(request, stores)
    if session is None or not session.logged_in or interaction.data.get("sid") != session.sid:
        return error_page(request, 403, "Request refused", "Your session does not match this consent request.")
    if not csrf.verify(session, sent_csrf, "consent", interaction_id):
        return error_page(request, 403, "Request refused", "The form was not sent from this page (CSRF check).")
    raw_plan = interaction.data.get("consent")
    if not isinstance(raw_plan, dict):
        return expired_page(request, stores)
    plan = consent_page.Plan.from_json(raw_plan)
    if plan.subject != session.subject:
        return error_page(request, 403, "Request refused", "You logged in as someone else meanwhile.")
    req = AuthorizationRequest.from_json(interaction.request)
    offered = plan.offered()
    unknown = [t for t in ticked if t not in offered]
    if unknown:  # only what the page offered can be granted (no capability smuggled into the form)
        return error_page(request, 400, "Request refused", "The form named capabilities this page did not offer.")
    if not approve:
        return _deny(stores, req, interaction, session, plan, "the person denied the request")
    chosen = [offered[c] for c in dict.fromkeys(ticked)]
    granted = CapabilitySet([*(i.capability for i in plan.covered), *(i.capability for i in chosen)])
    if len(req.scope) and not len(granted):
        return _deny(stores, req, interaction, session, plan, "the person granted none of the requested capabilities")
    if not stores.interactions.finish(interaction.id):
        return expired_page(request, stores)
    refused = [i.capability for i in plan.new if i not in chosen]
    with audit.transaction(stores.engine) as tx:
        if chosen:
            stores.consents.remember(tx, session.subject or "", req.client_id, req.resource,
                                     CapabilitySet(i.capability for i in chosen))
        tx.record(audit.Record("consent.granted", session.subject or "", client_id=req.client_id, data={
            "session": session.sid, "subject": session.subject, "client": req.client_id, "resource": req.resource,
            "granted": granted.to_scope(), "approved_now": [i.capability for i in chosen],
            "refused": refused, "denied_by_policy": list(plan.denied)}))
    return redirect(authorization_response(stores, req, subject=session.as_subject(), granted=granted,
                                           auth_time=session.auth_time or clock.now(), session_id=session.sid),
                    form_targets=[req.redirect_uri])


def _deny(stores: Provider, req: AuthorizationRequest, interaction: Interaction, session: WebSession,
          plan: consent_page.Plan, reason: str) -> Response:
    stores.interactions.finish(interaction.id)
    with audit.transaction(stores.engine) as tx:
        tx.record(audit.Record("consent.denied", session.subject or "", client_id=req.client_id, data={
            "session": session.sid, "subject": session.subject, "client": req.client_id, "resource": req.resource,
            "granted": "", "refused": [i.capability for i in plan.new], "denied_by_policy": list(plan.denied),
            "reason": reason}))
    return redirect(error_response(stores, req, "access_denied", reason), form_targets=[req.redirect_uri])
