"""Token revocation (RFC 7009).

A client may revoke only tokens issued to it (§2.1). Invalid, expired or unknown tokens are
answered 200 like successful revocations (§2.2), since there is nothing left to revoke.
Revoking a refresh token revokes its whole token family (§2.1: "SHOULD also invalidate all
access tokens based on the same authorization grant").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .client_auth import failures_audited
from .errors import NO_STORE, OAuthResponse, UnauthorizedClient
from .introspection import authenticated_token
from .request import OAuthRequest

if TYPE_CHECKING:
    from .stores import Stores


@failures_audited
def revoke(stores: Stores, request: OAuthRequest) -> OAuthResponse:
    client, claims = authenticated_token(stores, request)
    if claims is None:
        token = request.form.get("token") or ""
        if token.startswith("cbstr_"):  # one of our refresh tokens (idp.token_families.REFRESH_PREFIX)
            stores.token_families.revoke_refresh_token(token, client_id=client.client_id)
    else:
        if claims.get("client_id") != client.client_id:
            raise UnauthorizedClient("the token was not issued to this client")
        stores.revocations.revoke(claims["jti"], client_id=client.client_id, expires_at=claims["exp"],
                                  actor=client.client_id)
    return OAuthResponse(200, {}, dict(NO_STORE))
