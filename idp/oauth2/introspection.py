"""Token introspection (RFC 7662).

Any authenticated client may ask, but a token is reported active only to the client it was
issued to or to the protected resource itself: a client of kind ``resource_server`` whose
registered audiences include the token's ``aud``. To anyone else, other clients of the same
audience included, it is ``{"active": false}`` (RFC 7662 §4: no token scanning).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sdk import jws

from .. import clock
from .client import RESOURCE_SERVER, ClientRecord
from .client_auth import authenticate, failures_audited
from .errors import NO_STORE, InvalidRequest, OAuthResponse, UnauthorizedClient
from .request import OAuthRequest

if TYPE_CHECKING:
    from .stores import Stores

INACTIVE = {"active": False}


def validate_own_token(stores: Stores, token: str) -> dict[str, Any] | None:
    """Claims of a token this IdP issued that is still valid (signature, iss, exp, not revoked,
    its client still registered and enabled)."""
    try:
        try:
            verified = jws.verify(token, stores.keys.verification_keys())
        except jws.UnknownKey:
            if not stores.refresh_keys_for_unknown_kid():
                return None
            verified = jws.verify(token, stores.keys.verification_keys())
    except jws.JWSError:
        return None
    claims = verified.claims
    now = clock.now()
    exp, jti, client_id = claims.get("exp"), claims.get("jti"), claims.get("client_id")
    if claims.get("iss") != stores.settings.issuer or not isinstance(exp, int) or exp <= now:
        return None
    if not isinstance(jti, str) or not isinstance(client_id, str) or stores.revocations.is_revoked(jti):
        return None
    owner = stores.clients.get(client_id)
    if owner is None or not owner.enabled:
        return None
    return claims


def may_see(client: ClientRecord, claims: dict[str, Any]) -> bool:
    if claims.get("client_id") == client.client_id:
        return True
    if client.kind != RESOURCE_SERVER:
        return False
    aud = claims.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    return any(a in client.audiences for a in auds)


def authenticated_token(stores: Stores, request: OAuthRequest) -> tuple[ClientRecord, dict[str, Any] | None]:
    """The authenticated client and the claims of the ``token`` it names (RFC 7662 §2.1, RFC 7009
    §2.1), None when that token is not a valid one of ours."""
    client = authenticate(stores, request)
    token = request.form.get("token")
    if token is None:
        raise InvalidRequest("token is required")
    return client, validate_own_token(stores, token)


@failures_audited
def introspect(stores: Stores, request: OAuthRequest) -> OAuthResponse:
    client, claims = authenticated_token(stores, request)
    if client.auth_method == "none":  # RFC 7662 §2.1: the caller must be authenticated
        raise UnauthorizedClient("a public client cannot introspect tokens")
    if claims is None or not may_see(client, claims):
        return OAuthResponse(200, dict(INACTIVE), dict(NO_STORE))
    return OAuthResponse(200, {"active": True, "token_type": "Bearer", **claims}, dict(NO_STORE))
