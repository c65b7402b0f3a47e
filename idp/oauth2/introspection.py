"""Token introspection (RFC 7662).

Any authenticated client may ask, but a token is reported active only to the client it was
issued to or to a client whose registered audiences include the token's ``aud`` (a resource
server); to anyone else it is ``{"active": false}`` (RFC 7662 §4: no token scanning).
"""

from __future__ import annotations

from typing import Any

from sdk import jws

from .. import clock
from ..clients import ClientRecord
from ..provider import Provider
from .client_auth import authenticate
from .errors import NO_STORE, InvalidRequest, OAuthResponse
from .forms import Form

INACTIVE = {"active": False}


def validate_own_token(provider: Provider, token: str) -> dict[str, Any] | None:
    """Claims of a token this IdP issued that is still valid (signature, iss, exp, not revoked,
    its client still registered and enabled)."""
    try:
        try:
            verified = jws.verify(token, provider.keys.verification_keys())
        except jws.UnknownKey:
            if not provider.refresh_keys_for_unknown_kid():
                return None
            verified = jws.verify(token, provider.keys.verification_keys())
    except jws.JWSError:
        return None
    claims = verified.claims
    now = clock.now()
    exp, jti = claims.get("exp"), claims.get("jti")
    if claims.get("iss") != provider.settings.issuer or not isinstance(exp, int) or exp <= now:
        return None
    if not isinstance(jti, str) or provider.revocations.is_revoked(jti):
        return None
    owner = provider.clients.get(claims.get("client_id"))  # type: ignore[arg-type]
    if owner is None or not owner.enabled:
        return None
    return claims


def may_see(client: ClientRecord, claims: dict[str, Any]) -> bool:
    aud = claims.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    return claims.get("client_id") == client.client_id or any(a in client.audiences for a in auds)


def introspect(provider: Provider, form: Form, authorization: str | None) -> OAuthResponse:
    client = authenticate(form, authorization, provider.clients, provider.assertion_jtis, provider.auth_context)
    token = form.get("token")
    if token is None:
        raise InvalidRequest("token is required")
    claims = validate_own_token(provider, token)
    if claims is None or not may_see(client, claims):
        return OAuthResponse(200, dict(INACTIVE), dict(NO_STORE))
    return OAuthResponse(200, {"active": True, "token_type": "Bearer", **claims}, dict(NO_STORE))
