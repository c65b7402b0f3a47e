"""The token endpoint (RFC 6749 §3.2, §5): dispatch to the registered grant.

Checks, in order, each refusing with its RFC 6749 §5.2 error before anything is written: grant
type → the grant's required parameters → client authentication → the grant's own checks. Only
then is the token signed and its audit record committed; the response waits for that commit.

The handler does its work synchronously and returns the coroutine that waits for the audit
commit, so the HTTP layer may run it off the event loop and await only the commit on it.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from . import access_token
from .client_auth import authenticate, failures_audited
from .errors import NO_STORE, InvalidRequest, OAuthResponse, UnsupportedGrantType
from .grants import GRANTS, Issuance
from .request import OAuthRequest

if TYPE_CHECKING:
    from .stores import Stores


@failures_audited
def token(stores: Stores, request: OAuthRequest) -> Coroutine[Any, Any, OAuthResponse]:
    form = request.form
    grant_type = form.get("grant_type")
    if grant_type is None:
        raise InvalidRequest("grant_type is required")
    grant = GRANTS.get(grant_type)
    if grant is None:
        raise UnsupportedGrantType(f"grant_type must be one of: {', '.join(GRANTS)}")
    for name, required in grant.parameters.items():
        if required and name not in form:
            raise InvalidRequest(f"{name} is required")
    client = authenticate(stores, request)
    result = grant.issue(stores, client, request)
    if type(result) is dict:  # the common case (client credentials): just an access token
        claims, extra, audit = result, None, None
        token_value = access_token.sign(stores.keys.signer(claims["iat"]), claims)
    else:
        assert isinstance(result, Issuance)
        claims, audit = result.claims, result.audit
        token_value = access_token.sign(stores.keys.signer(claims["iat"]), claims)
        extra = result.complete(token_value)
    return _issued(stores, grant_type, claims, token_value, extra, audit)


def writes(request: OAuthRequest) -> bool:
    """Whether the grant this token request names writes to the database (see Grant.writes)."""
    grant = GRANTS.get(request.form.get("grant_type") or "")
    return grant is not None and bool(getattr(grant, "writes", True))


async def _issued(stores: Stores, grant_type: str, claims: dict[str, Any], token_value: str,
                  extra: dict[str, Any] | None, audit: dict[str, Any] | None) -> OAuthResponse:
    client_id, now, exp = claims["client_id"], claims["iat"], claims["exp"]
    data = {"grant_type": grant_type, "scope": claims["scope"], "aud": claims["aud"], "exp": exp}
    if audit:
        data.update(audit)
    await stores.audit_log.record("token.issued", client_id, client_id=client_id, jti=claims["jti"], ts=now, data=data)
    body = {"access_token": token_value, "token_type": "Bearer", "expires_in": exp - now, "scope": claims["scope"]}
    if extra:
        body.update(extra)
    return OAuthResponse(200, body, dict(NO_STORE))
