"""The client credentials grant (RFC 6749 §4.4) with resource indicators (RFC 8707).

Checks, in order, each refusing with its RFC 6749 §5.2 error: scope (a subset of the client's
capabilities), then resource (one of the client's registered audiences that is still a
registered protected resource), then policy: the token holds the requested capabilities the
policy allows (RFC 6749 §3.3: the issued scope may be narrower, and the response says so), and
``invalid_scope`` if it allows none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sdk.capabilities import CapabilityError, CapabilitySet

from ... import clock
from .. import access_token
from ..client import ClientRecord
from ..errors import InvalidScope, InvalidTarget, UnauthorizedClient
from ..request import OAuthRequest
from ..subject import CLIENT, Subject

if TYPE_CHECKING:
    from ..stores import PolicyDecider, ResourceStore, Stores

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


def select_audience(client: ClientRecord, resources: list[str], registered: ResourceStore) -> str:
    audience = _client_audience(client, resources)
    # The client's audience list says what it may ask for; the registry says what the IdP still
    # protects: a resource the operator removed gets no more tokens (against a spoofed server).
    if registered.get(audience) is None:
        raise InvalidTarget("resource is not a registered protected resource")
    return audience


def _client_audience(client: ClientRecord, resources: list[str]) -> str:
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


def permitted_scope(policy: PolicyDecider, client: ClientRecord, audience: str, scope: CapabilitySet) -> CapabilitySet:
    """The requested capabilities the policy allows the client itself (principal CBST::Client)."""
    decision = policy.decide(Subject(client.client_id, CLIENT), client, audience, scope)
    if not len(decision.allowed):
        raise InvalidScope("policy allows none of the requested capabilities: "
                           + " ".join(str(c) for c in decision.denied)[:512])
    return decision.allowed


class ClientCredentialsGrant:
    grant_type = "client_credentials"
    parameters: Mapping[str, bool] = {"scope": False, "resource": False}
    writes = False

    def issue(self, stores: Stores, client: ClientRecord, request: OAuthRequest) -> dict[str, Any]:
        if client.auth_method == "none":  # RFC 6749 §4.4: confidential clients only
            raise UnauthorizedClient("a public client cannot use the client credentials grant")
        if self.grant_type not in client.grant_types:  # RFC 7591 §2: the grants it registered
            raise UnauthorizedClient("the client is not registered for the client_credentials grant")
        form = request.form
        scope = select_scope(client, form.get("scope"))
        audience = select_audience(client, form.getall("resource"), stores.resources)
        scope = permitted_scope(stores.policy, client, audience, scope)
        settings = stores.settings
        return access_token.build_claims(
            issuer=settings.issuer, client_id=client.client_id, subject=client.client_id,
            audience=audience, scope=scope.to_scope(), ttl=settings.access_token_ttl, now=clock.now(),
        )
