"""The authorization endpoint's protocol half (RFC 6749 §4.1.1-§4.1.2.1, RFC 7636, RFC 8707, RFC 9207).

:func:`parse_authorization_request` validates a request and returns an
:class:`AuthorizationRequest`; the pages (``idp.web``) log the person in, ask for consent and
then call :func:`authorization_response` (a code) or :func:`error_response` (``access_denied``).

Errors come in two kinds (RFC 6749 §4.1.2.1):

- :class:`InvalidAuthorizationRequest`: the client or its redirect URI cannot be trusted
  (unknown or disabled client, redirect URI not registered). The user agent MUST NOT be sent
  back: the page shows the error.
- :class:`AuthorizationError`: everything else, sent to the client's redirect URI with
  ``error``, ``error_description``, ``state`` and, as in every authorization response,
  the RFC 9207 ``iss`` (so a client talking to several servers cannot be mixed up).

Scope: capabilities (``tools/call:deploy``, parsed strictly: a typo is an error, not a
capability that allows nothing) plus the OpenID Connect scopes in :data:`OIDC_SCOPES`.
Resource (RFC 8707): exactly one, a registered resource. When only OpenID Connect scopes are
requested and no resource, the token's audience is the userinfo endpoint
(``{issuer}/userinfo``): such a token is good for nothing but userinfo.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from sdk.capabilities import CapabilityError, CapabilitySet

from . import pkce, redirect_uris
from .client import OPERATOR, ClientRecord
from .errors import OAuthError, error_description
from .subject import Subject

if TYPE_CHECKING:
    from .stores import Stores

RESPONSE_TYPE = "code"
GRANT_TYPE = "authorization_code"
OPENID, OFFLINE_ACCESS = "openid", "offline_access"
OIDC_SCOPES = frozenset({OPENID, "profile", "email", OFFLINE_ACCESS})
PROMPTS = frozenset({"none", "login", "consent", "select_account"})
MAX_PARAMS = 40
MAX_VALUE = 4096  # scope, state and nonce may be long-ish; nothing sane is longer
MAX_STATE = 2048
USERINFO_PATH = "/userinfo"


def userinfo_audience(issuer: str) -> str:
    return issuer + USERINFO_PATH


class InvalidAuthorizationRequest(OAuthError):
    """Not redirectable (RFC 6749 §4.1.2.1): show it to the person, never redirect."""

    error = "invalid_request"

    def __init__(self, description: str, *, error: str = "invalid_request") -> None:
        super().__init__(description)
        self.error = error


class AuthorizationError(OAuthError):
    """Redirectable error (RFC 6749 §4.1.2.1): the client's redirect URI gets it (with ``iss``)."""

    def __init__(self, error: str, description: str, *, redirect_uri: str, state: str | None) -> None:
        super().__init__(description)
        self.error = error
        self.redirect_uri = redirect_uri
        self.state = state

    def redirect_url(self, issuer: str) -> str:
        return _redirect(self.redirect_uri, {"error": self.error, "error_description": _description(self.description),
                                             "state": self.state, "iss": issuer})


def _description(text: str) -> str:
    return error_description(text)[:256]


def _redirect(redirect_uri: str, params: Mapping[str, str | None]) -> str:
    """The redirect URI with ``params`` added to its query (RFC 6749 §4.1.2: its own query is kept)."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    sep = "&" if urlsplit(redirect_uri).query else ("" if redirect_uri.endswith("?") else "?")
    return f"{redirect_uri}{sep}{query}"


@dataclass(frozen=True)
class AuthorizationRequest:
    client_id: str
    redirect_uri: str
    state: str | None
    scope: CapabilitySet  # capabilities only
    other_scopes: frozenset[str]  # openid, offline_access, profile, email
    resource: str  # a registered resource, or the userinfo endpoint (OIDC scopes only)
    code_challenge: str
    nonce: str | None
    prompt: frozenset[str]
    max_age: int | None

    @property
    def scope_string(self) -> str:
        """Everything requested, as a scope string (capabilities first)."""
        return " ".join([self.scope.to_scope(), *sorted(self.other_scopes)]).strip()

    def to_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id, "redirect_uri": self.redirect_uri, "state": self.state,
            "scope": self.scope.to_scope(), "other_scopes": sorted(self.other_scopes), "resource": self.resource,
            "code_challenge": self.code_challenge, "nonce": self.nonce, "prompt": sorted(self.prompt),
            "max_age": self.max_age,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuthorizationRequest:
        return cls(
            client_id=data["client_id"], redirect_uri=data["redirect_uri"], state=data.get("state"),
            scope=CapabilitySet.parse(data.get("scope", "")), other_scopes=frozenset(data.get("other_scopes", ())),
            resource=data["resource"], code_challenge=data["code_challenge"], nonce=data.get("nonce"),
            prompt=frozenset(data.get("prompt", ())), max_age=data.get("max_age"),
        )


def _single(params: Mapping[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ValueError(f"parameter {name!r} is repeated")
    return values[0] if values[0] != "" else None  # RFC 6749 §3.1: empty means omitted


def _trusted_redirect(client: ClientRecord, requested: str | None) -> str:
    if requested is None:
        if len(client.redirect_uris) == 1:  # RFC 6749 §3.1.2.3: optional when only one is registered
            return client.redirect_uris[0]
        raise InvalidAuthorizationRequest("redirect_uri is required (the client registered several or none)")
    found = redirect_uris.find(client.redirect_uris, requested)
    if found is None:
        raise InvalidAuthorizationRequest("redirect_uri is not registered for this client")
    return found


async def parse_authorization_request(stores: Stores, params: Mapping[str, list[str]]) -> AuthorizationRequest:
    """The validated request, or InvalidAuthorizationRequest / AuthorizationError."""
    # Until the client and its redirect URI are verified, nothing may be redirected.
    if len(params) > MAX_PARAMS:
        raise InvalidAuthorizationRequest("too many parameters")
    try:
        client_id = _single(params, "client_id")
        requested_redirect = _single(params, "redirect_uri")
    except ValueError as exc:
        raise InvalidAuthorizationRequest(str(exc)) from None
    if client_id is None:
        raise InvalidAuthorizationRequest("client_id is required")
    if len(client_id) > 512 or not client_id.isprintable():
        raise InvalidAuthorizationRequest("client_id is malformed")
    client = await stores.client_resolver.resolve(client_id)
    if client is None:
        raise InvalidAuthorizationRequest("unknown client", error="invalid_client")
    if not client.enabled:
        raise InvalidAuthorizationRequest("client is disabled", error="invalid_client")
    redirect_uri = _trusted_redirect(client, requested_redirect)

    state: str | None = None
    try:
        state = _single(params, "state")  # echoed in errors below once it is known to be sane
    except ValueError:
        raise AuthorizationError("invalid_request", "parameter 'state' is repeated", redirect_uri=redirect_uri,
                                 state=None) from None
    if state is not None and (len(state) > MAX_STATE or not state.isprintable()):
        raise AuthorizationError("invalid_request", "state is too long or not printable", redirect_uri=redirect_uri,
                                 state=None)

    def fail(error: str, description: str) -> AuthorizationError:
        return AuthorizationError(error, description, redirect_uri=redirect_uri, state=state)

    values: dict[str, str] = {}
    for name, vals in params.items():
        if name == "resource":
            continue
        if len(vals) > 1:
            raise fail("invalid_request", f"parameter {name[:64]!r} is repeated")
        if vals and vals[0] != "":
            if len(vals[0]) > MAX_VALUE or "\x00" in vals[0]:
                raise fail("invalid_request", f"parameter {name[:64]!r} is too long or malformed")
            values[name] = vals[0]

    if "request" in values or "request_uri" in values:
        raise fail("request_not_supported", "request objects are not supported")
    response_type = values.get("response_type")
    if response_type is None:
        raise fail("invalid_request", "response_type is required")
    if response_type != RESPONSE_TYPE:
        raise fail("unsupported_response_type", "response_type must be code")
    if values.get("response_mode", "query") != "query":
        raise fail("invalid_request", "response_mode must be query")
    if GRANT_TYPE not in client.grant_types:
        raise fail("unauthorized_client", "the client is not registered for the authorization code grant")
    try:
        challenge = pkce.validate_challenge(values.get("code_challenge"), values.get("code_challenge_method"))
    except pkce.PKCEError as exc:
        raise fail("invalid_request", str(exc)) from None

    capabilities, other = _split_scope(values.get("scope", ""), fail)
    if (client.registered_by == OPERATOR and len(client.capabilities)
            and (missing := client.capabilities.uncovered(capabilities))):
        # The operator registered this client with capabilities: they are its ceiling.
        raise fail("invalid_scope", "scope exceeds the client's registered capabilities: "
                   + " ".join(str(c) for c in missing)[:200])
    resource = _resource(stores, params.get("resource") or [], capabilities, other, fail)

    prompt = frozenset(values.get("prompt", "").split())
    if not prompt <= PROMPTS or ("none" in prompt and len(prompt) > 1):
        raise fail("invalid_request", "prompt must be none, or some of login, consent, select_account")
    max_age: int | None = None
    if "max_age" in values:
        raw = values["max_age"]
        if not raw.isdigit() or len(raw) > 9:
            raise fail("invalid_request", "max_age must be a non-negative integer")
        max_age = int(raw)
    nonce = values.get("nonce")
    if nonce is not None and (len(nonce) > 512 or not nonce.isprintable()):
        raise fail("invalid_request", "nonce is too long or not printable")
    return AuthorizationRequest(client_id=client.client_id, redirect_uri=redirect_uri, state=state,
                                scope=capabilities, other_scopes=other, resource=resource,
                                code_challenge=challenge, nonce=nonce, prompt=prompt, max_age=max_age)


def _split_scope(scope: str, fail: Any) -> tuple[CapabilitySet, frozenset[str]]:
    tokens = scope.split(" ")
    other = frozenset(t for t in tokens if t in OIDC_SCOPES)
    rest = " ".join(t for t in tokens if t and t not in OIDC_SCOPES)
    try:
        capabilities = CapabilitySet.parse(rest, strict=True)
    except CapabilityError as exc:
        raise fail("invalid_scope", str(exc)) from None
    return capabilities, other


def _resource(stores: Stores, resources: list[str], capabilities: CapabilitySet, other: frozenset[str],
              fail: Any) -> str:
    userinfo = userinfo_audience(stores.settings.issuer)
    if len(resources) > 1:
        raise fail("invalid_target", "request one resource per authorization")
    if not resources or resources[0] == "":
        if not len(capabilities) and OPENID in other:
            return userinfo  # OpenID Connect only: the token is for the userinfo endpoint
        raise fail("invalid_target", "resource is required (RFC 8707): the URI of the MCP server")
    resource = resources[0]
    if resource == userinfo:
        if len(capabilities) or OPENID not in other:
            raise fail("invalid_target", "the userinfo endpoint takes only OpenID Connect scopes, with openid")
        return userinfo
    if len(resource) > 512 or "#" in resource or stores.resources.get(resource) is None:
        raise fail("invalid_target", "resource is not a registered protected resource")
    return resource


def authorization_response(stores: Stores, req: AuthorizationRequest, *, subject: Subject, granted: CapabilitySet,
                           auth_time: int, session_id: str) -> str:
    """Issue a code for what the person granted (a subset of ``req.scope``) and return the redirect
    URL: ``code``, ``state``, ``iss`` (RFC 6749 §4.1.2, RFC 9207 §2)."""
    if req.scope.uncovered(granted):
        raise ValueError("granted capabilities exceed the request")  # a bug in the caller, not input
    code = stores.authorization_codes.issue(
        client_id=req.client_id, redirect_uri=req.redirect_uri, resource=req.resource, scope=granted.to_scope(),
        other_scopes=sorted(req.other_scopes), code_challenge=req.code_challenge, nonce=req.nonce,
        subject=subject, auth_time=auth_time, session_id=session_id,
    )
    return _redirect(req.redirect_uri, {"code": code, "state": req.state, "iss": stores.settings.issuer})


def error_response(stores: Stores, req: AuthorizationRequest, error: str, description: str) -> str:
    """The redirect URL of an error for a validated request (``access_denied``, ``login_required``...)."""
    return AuthorizationError(error, description, redirect_uri=req.redirect_uri, state=req.state).redirect_url(
        stores.settings.issuer)
