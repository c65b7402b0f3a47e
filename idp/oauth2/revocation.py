"""Token revocation (RFC 7009).

A client may revoke only tokens issued to it (§2.1). Invalid, expired or unknown tokens are
answered 200 like successful revocations (§2.2), since there is nothing left to revoke.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .client_auth import authenticate, failures_audited
from .errors import NO_STORE, InvalidRequest, OAuthResponse, UnauthorizedClient
from .introspection import validate_own_token
from .request import OAuthRequest

if TYPE_CHECKING:
    from .stores import Stores


@failures_audited
def revoke(stores: Stores, request: OAuthRequest) -> OAuthResponse:
    client = authenticate(stores, request)
    token = request.form.get("token")
    if token is None:
        raise InvalidRequest("token is required")
    claims = validate_own_token(stores, token)
    if claims is not None:
        if claims.get("client_id") != client.client_id:
            raise UnauthorizedClient("the token was not issued to this client")
        stores.revocations.revoke(claims["jti"], client_id=client.client_id, expires_at=claims["exp"],
                                  actor=client.client_id)
    return OAuthResponse(200, {}, dict(NO_STORE))
