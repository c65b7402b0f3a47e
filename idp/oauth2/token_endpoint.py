"""The token endpoint: client credentials grant (RFC 6749 §4.4) with resource indicators (RFC 8707).

Checks, in order, each refusing with its RFC 6749 §5.2 error before anything is written:
grant type → client authentication → scope (a subset of the client's capabilities) → resource
(one of the client's registered audiences). Only then is the token signed and its audit record
committed; the response waits for that commit.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

from sdk.capabilities import CapabilityError, CapabilitySet

from .. import audit, clock
from ..clients import ClientRecord
from ..provider import Provider
from . import access_token
from .client_auth import authenticate
from .errors import NO_STORE, InvalidRequest, InvalidScope, InvalidTarget, OAuthResponse, UnsupportedGrantType
from .forms import Form

GRANT_TYPES = ("client_credentials",)


# Parsing compiles each pattern; the same scopes are requested over and over.
_parse_scope = lru_cache(maxsize=4096)(CapabilitySet.parse)


def select_scope(client: ClientRecord, requested: str | None) -> CapabilitySet:
    if requested is None:
        return client.capabilities
    try:
        wanted = _parse_scope(requested)
    except CapabilityError as exc:
        raise InvalidScope(str(exc)) from None
    if not len(wanted):
        raise InvalidScope("scope is empty")
    missing = client.capabilities.uncovered(wanted)
    if missing:
        raise InvalidScope("scope exceeds the client's capabilities: " + " ".join(str(c) for c in missing)[:512])
    return wanted


def select_audience(client: ClientRecord, resources: list[str]) -> str:
    if len(resources) > 1:
        raise InvalidTarget("request one resource per token")
    if not resources:
        if len(client.audiences) == 1:
            return client.audiences[0]
        if not client.audiences:
            raise InvalidTarget("the client has no registered audience (idp clients add --audience URI)")
        raise InvalidTarget("the client has several audiences: name one with the resource parameter")
    resource = resources[0]
    parts = urlsplit(resource)
    if not parts.scheme or parts.fragment or len(resource) > 512:
        raise InvalidTarget("resource must be an absolute URI without fragment (RFC 8707 §2)")
    if resource not in client.audiences:
        raise InvalidTarget("resource is not a registered audience of this client")
    return resource


async def token(provider: Provider, form: Form, authorization: str | None) -> OAuthResponse:
    grant_type = form.get("grant_type")
    if grant_type is None:
        raise InvalidRequest("grant_type is required")
    if grant_type not in GRANT_TYPES:
        raise UnsupportedGrantType(f"grant_type must be one of: {', '.join(GRANT_TYPES)}")
    client = authenticate(form, authorization, provider.clients, provider.assertion_jtis, provider.auth_context)
    scope = select_scope(client, form.get("scope"))
    audience = select_audience(client, form.getall("resource"))

    settings = provider.settings
    now = clock.now()
    scope_text = scope.to_scope()
    claims = access_token.build_claims(
        issuer=settings.issuer, client_id=client.client_id, subject=client.client_id,
        audience=audience, scope=scope_text, ttl=settings.access_token_ttl, now=now,
    )
    token_value = access_token.sign(provider.keys.signer(now), claims)
    await provider.committer.record(audit.Record(
        "token.issued", client.client_id, client_id=client.client_id, jti=claims["jti"], ts=now,
        data={"grant_type": grant_type, "scope": scope_text, "aud": audience, "exp": claims["exp"]},
    ))
    return OAuthResponse(
        200,
        {"access_token": token_value, "token_type": "Bearer", "expires_in": settings.access_token_ttl, "scope": scope_text},
        dict(NO_STORE),
    )
