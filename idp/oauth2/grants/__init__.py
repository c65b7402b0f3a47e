"""Grants, one module each, registered here; the token endpoint dispatches on ``grant_type``
and the metadata document lists exactly the registered ones."""

from __future__ import annotations

from .authorization_code import AuthorizationCodeGrant
from .base import Grant, Issuance
from .client_credentials import ClientCredentialsGrant
from .refresh_token import RefreshTokenGrant

__all__ = ["GRANTS", "Grant", "Issuance", "register", "unregister"]

#: Registered grants by ``grant_type``, in the order the metadata lists them.
GRANTS: dict[str, Grant] = {}


def register(grant: Grant) -> None:
    GRANTS[grant.grant_type] = grant


def unregister(grant_type: str) -> None:
    GRANTS.pop(grant_type, None)


register(ClientCredentialsGrant())
register(AuthorizationCodeGrant())
register(RefreshTokenGrant())
