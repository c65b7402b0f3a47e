"""The authorization code grant's token request (RFC 6749 §4.1.3, RFC 7636 §4.5-4.6, RFC 8707 §2.2).

Checks, in order, each refusing with ``invalid_grant`` unless said otherwise, and nothing
written until the last: the code exists → it was not used before (else every token issued from
it is revoked and the replay audited, RFC 6749 §4.1.2) → it was issued to this client → it has
not expired → ``redirect_uri`` equals the one it was issued for (required unless that is the
client's only registered one) → ``code_verifier`` matches the challenge (PKCE, S256) →
``resource``, if sent, equals the bound one (``invalid_target``) → the code is redeemed
atomically (losing a race to another redemption counts as a replay).

A refresh token comes only when ``offline_access`` was requested and the client is registered
for the ``refresh_token`` grant; an ID token when ``openid`` was requested.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ... import clock
from .. import access_token, id_token, pkce
from ..authorization_request import OFFLINE_ACCESS, OPENID, userinfo_audience
from ..client import ClientRecord
from ..errors import InvalidTarget, UnauthorizedClient
from ..grant_records import Authorization, InvalidGrant
from ..request import OAuthRequest
from .base import Issuance

if TYPE_CHECKING:
    from ..stores import Stores

REFRESH_TOKEN = "refresh_token"


def access_claims(stores: Stores, auth: Authorization, capabilities: str, other_scopes: tuple[str, ...],
                  now: int) -> dict[str, Any]:
    """The access token for ``auth``: its capabilities for a registered resource; for the userinfo
    endpoint, its OpenID Connect scopes and the claims they release (userinfo answers from them)."""
    settings = stores.settings
    userinfo = auth.resource == userinfo_audience(settings.issuer)
    scope = " ".join(other_scopes) if userinfo else capabilities
    claims = access_token.build_claims(issuer=settings.issuer, client_id=auth.client_id, subject=auth.subject.id,
                                       audience=auth.resource, scope=scope, ttl=settings.access_token_ttl, now=now)
    if userinfo:
        claims.update({k: v for k, v in id_token.released_claims(auth.subject.claims, other_scopes).items()
                       if k not in claims})
    return claims


def response_fields(stores: Stores, client: ClientRecord, auth: Authorization, claims: dict[str, Any],
                    token: str, capabilities: str, other_scopes: tuple[str, ...], nonce: str | None,
                    refresh_token: str | None) -> dict[str, Any]:
    """``scope`` (everything granted), ``refresh_token`` and ``id_token`` of a token response."""
    granted = [s for s in other_scopes if s != OFFLINE_ACCESS or refresh_token is not None]
    fields: dict[str, Any] = {"scope": " ".join([capabilities, *granted]).strip()}
    if refresh_token is not None:
        fields["refresh_token"] = refresh_token
    if OPENID in other_scopes:
        now = claims["iat"]
        fields["id_token"] = id_token.build(
            stores.keys.signer(now), issuer=stores.settings.issuer, subject=auth.subject.id,
            client_id=client.client_id, now=now, ttl=stores.settings.access_token_ttl, auth_time=auth.auth_time,
            nonce=nonce, access_token=token, claims=id_token.released_claims(auth.subject.claims, other_scopes))
    return fields


def wants_refresh(client: ClientRecord, other_scopes: tuple[str, ...]) -> bool:
    return OFFLINE_ACCESS in other_scopes and REFRESH_TOKEN in client.grant_types


class AuthorizationCodeGrant:
    grant_type = "authorization_code"
    parameters: Mapping[str, bool] = {"code": True, "redirect_uri": False, "code_verifier": True, "resource": False}
    writes = True

    def issue(self, stores: Stores, client: ClientRecord, request: OAuthRequest) -> Issuance:
        if self.grant_type not in client.grant_types:
            raise UnauthorizedClient("the client is not registered for the authorization_code grant")
        form = request.form
        codes = stores.authorization_codes
        record = codes.get(form.get("code") or "")
        if record is None:
            raise InvalidGrant("the authorization code is invalid")
        auth = record.authorization
        if record.used_at is not None:
            codes.replayed(record, actor=client.client_id)
            raise InvalidGrant("the authorization code was already used; the tokens issued from it are revoked")
        if auth.client_id != client.client_id:
            raise InvalidGrant("the authorization code was issued to another client")
        now = clock.now()
        if record.expires_at <= now:
            raise InvalidGrant("the authorization code has expired")
        redirect_uri = form.get("redirect_uri")
        if redirect_uri is None:
            if client.redirect_uris != (record.redirect_uri,):
                raise InvalidGrant("redirect_uri is required: send the one of the authorization request")
        elif redirect_uri != record.redirect_uri:
            raise InvalidGrant("redirect_uri differs from the one of the authorization request")
        if not pkce.verify(form.get("code_verifier"), record.code_challenge):
            raise InvalidGrant("code_verifier does not match the code_challenge (PKCE)")
        resources = form.getall("resource")
        if len(resources) > 1 or (resources and resources[0] != auth.resource):
            raise InvalidTarget("resource differs from the one of the authorization request")
        claims = access_claims(stores, auth, auth.scope, auth.other_scopes, now)
        won, refresh_token = codes.consume(record, access=(claims["jti"], claims["exp"]),
                                           refresh=wants_refresh(client, auth.other_scopes))
        if not won:
            codes.replayed(record, actor=client.client_id)
            raise InvalidGrant("the authorization code was already used; the tokens issued from it are revoked")

        def complete(token: str) -> dict[str, Any]:
            return response_fields(stores, client, auth, claims, token, auth.scope, auth.other_scopes,
                                   record.nonce, refresh_token)

        return Issuance(claims, complete, {"sub": auth.subject.id, "family_id": auth.family_id})
