"""The UserInfo endpoint (OpenID Connect Core 1.0 §5.3) with Bearer tokens (RFC 6750 §2.1, §3).

It accepts only access tokens issued for it (``aud`` is ``{issuer}/userinfo``, RFC 8707): an
MCP server's token is refused here, so a resource server cannot turn the tokens it receives
into a person's profile. Such a token carries the claims its scopes released at login
(:mod:`.grants.authorization_code`); the answer is ``sub`` and those claims.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .authorization_request import OPENID, userinfo_audience
from .errors import NO_STORE, OAuthResponse
from .id_token import CLAIMS_SUPPORTED
from .introspection import validate_own_token

if TYPE_CHECKING:
    from .stores import Stores

_RELEASED = frozenset(CLAIMS_SUPPORTED) - {"iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash"}


def _challenge(status: int, error: str, description: str) -> OAuthResponse:
    header = f'Bearer realm="cbst", error="{error}", error_description="{description}"'
    return OAuthResponse(status, {"error": error, "error_description": description},
                         {**NO_STORE, "WWW-Authenticate": header})


def userinfo(stores: Stores, authorization: str | None) -> OAuthResponse:
    if authorization is None:
        return OAuthResponse(401, {"error": "invalid_request", "error_description": "Bearer token required"},
                             {**NO_STORE, "WWW-Authenticate": 'Bearer realm="cbst"'})
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 8192:
        return _challenge(401, "invalid_request", "use an Authorization: Bearer token")
    claims = validate_own_token(stores, token)
    if claims is None:
        return _challenge(401, "invalid_token", "the access token is invalid, expired or revoked")
    if claims.get("aud") != userinfo_audience(stores.settings.issuer):
        return _challenge(401, "invalid_token", "the access token is not for the userinfo endpoint")
    scope = claims.get("scope")
    if not isinstance(scope, str) or OPENID not in scope.split(" "):
        return _challenge(403, "insufficient_scope", "the access token lacks the openid scope")
    body = {k: v for k, v in claims.items() if k in _RELEASED}
    return OAuthResponse(200, body, dict(NO_STORE))
