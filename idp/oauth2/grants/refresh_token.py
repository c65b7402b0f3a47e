"""The refresh token grant (RFC 6749 §6; rotation per OAuth 2.1 §4.3.1 and RFC 9700 §4.14.2).

Every use rotates the refresh token: the answer carries its successor and the presented one is
spent. A spent refresh token presented again revokes its whole family (every access and
refresh token issued from the same code), except for one retry within ``refresh_retry_grace``
seconds while the successor is still unused (a client that lost the answer; see
:mod:`idp.token_families` and docs/authorization.md).

``scope`` may narrow the access token (its capabilities covered by the granted ones, its OpenID
Connect scopes among the granted ones) but never widen it (``invalid_scope``); the successor
keeps the original scope (RFC 6749 §6). The policy is asked again, so a rule the operator has
tightened since the login narrows the token. ``resource``, if sent, must be the bound one; a
resource the operator removed gets no more tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sdk.capabilities import CapabilityError, CapabilitySet

from ... import clock
from ..authorization_request import OIDC_SCOPES, userinfo_audience
from ..client import ClientRecord
from ..errors import InvalidScope, InvalidTarget, UnauthorizedClient
from ..grant_records import Authorization
from ..request import OAuthRequest
from .authorization_code import access_claims, response_fields
from .base import Issuance

if TYPE_CHECKING:
    from ..stores import Stores


def narrowed(stores: Stores, client: ClientRecord, auth: Authorization,
             requested: str | None) -> tuple[str, tuple[str, ...]]:
    """The capabilities and OpenID Connect scopes of the new access token."""
    granted = CapabilitySet.parse(auth.scope)
    other = auth.other_scopes
    if requested is not None:
        tokens = requested.split(" ")
        wanted_other = tuple(t for t in dict.fromkeys(tokens) if t in OIDC_SCOPES)
        try:
            wanted = CapabilitySet.parse(" ".join(t for t in tokens if t and t not in OIDC_SCOPES))
        except CapabilityError as exc:
            raise InvalidScope(str(exc)) from None
        missing = granted.uncovered(wanted)
        extra = [s for s in wanted_other if s not in other]
        if missing or extra:
            raise InvalidScope("scope exceeds what was granted: "
                               + " ".join([*(str(c) for c in missing), *extra])[:256])
        granted, other = wanted, tuple(s for s in other if s in wanted_other)
    if auth.resource != userinfo_audience(stores.settings.issuer):
        if stores.resources.get(auth.resource) is None:
            raise InvalidTarget("the resource is no longer registered")
        allowed = stores.policy.decide(auth.subject, client, auth.resource, granted).allowed
        granted = CapabilitySet(c for c in granted if allowed.covers([c]))
    return granted.to_scope(), other


class RefreshTokenGrant:
    grant_type = "refresh_token"
    parameters: Mapping[str, bool] = {"refresh_token": True, "scope": False, "resource": False}
    writes = True

    def issue(self, stores: Stores, client: ClientRecord, request: OAuthRequest) -> Issuance:
        if self.grant_type not in client.grant_types:
            raise UnauthorizedClient("the client is not registered for the refresh_token grant")
        form = request.form
        resources = form.getall("resource")
        if len(resources) > 1:
            raise InvalidTarget("request one resource per token")
        requested = form.get("scope")
        chosen: dict[str, tuple[str, tuple[str, ...]]] = {}

        def check(auth: Authorization) -> None:  # before anything is written: a refusal spends nothing
            if resources and resources[0] != auth.resource:
                raise InvalidTarget("resource differs from the one the refresh token was issued for")
            chosen["scope"] = narrowed(stores, client, auth, requested)

        claims: dict[str, Any] = {}

        def access(auth: Authorization) -> tuple[str, int]:  # recorded in the rotating transaction
            claims.update(access_claims(stores, auth, *chosen["scope"], clock.now()))
            return claims["jti"], claims["exp"]

        rotation = stores.token_families.rotate(form.get("refresh_token") or "", client_id=client.client_id,
                                                check=check, access=access)
        auth = rotation.authorization
        capabilities, other = chosen["scope"]

        def complete(token: str) -> dict[str, Any]:
            return response_fields(stores, client, auth, claims, token, capabilities, other, None,
                                   rotation.refresh_token)

        audit = {"sub": auth.subject.id, "family_id": auth.family_id, **({"grace_retry": True}
                                                                         if rotation.grace_retry else {})}
        return Issuance(claims, complete, audit)
