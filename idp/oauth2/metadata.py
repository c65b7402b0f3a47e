"""Authorization server metadata (RFC 8414) and OpenID Connect Discovery 1.0 §3.

Lists only what this server does: the grants and client-authentication methods (and their
signing algorithms) come from the registries the endpoints dispatch on, so the document cannot
disagree with what the code accepts. The OIDC document adds what OpenID Connect Discovery
requires (userinfo, subject types, ID token algorithms; the MCP TypeScript clients' schema
checks them too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sdk.jws import SUPPORTED_ALGS

from . import client_auth, grants, id_token, pkce
from .authorization_request import USERINFO_PATH

if TYPE_CHECKING:
    from ..config import Settings

#: Endpoints that authenticate clients, as named in the metadata (``<name>_endpoint_auth_...``).
AUTHENTICATING_ENDPOINTS = ("token", "introspection", "revocation")


def authorization_server_metadata(settings: Settings) -> dict[str, Any]:
    issuer = settings.issuer
    doc: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/jwks",
        "introspection_endpoint": f"{issuer}/introspect",
        "revocation_endpoint": f"{issuer}/revoke",
        "grant_types_supported": list(grants.GRANTS),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": list(pkce.METHODS),
        "authorization_response_iss_parameter_supported": True,  # RFC 9207
    }
    methods, algs = list(client_auth.METHODS), client_auth.signing_alg_values()
    for endpoint in AUTHENTICATING_ENDPOINTS:
        # Introspection answers only authenticated callers (RFC 7662 §2.1): no public clients.
        listed = [m for m in methods if m != "none"] if endpoint == "introspection" else methods
        doc[f"{endpoint}_endpoint_auth_methods_supported"] = listed
        if algs:  # RFC 8414 §2: present when a method needs it; "none" MUST NOT be listed
            doc[f"{endpoint}_endpoint_auth_signing_alg_values_supported"] = algs
    doc.update({
        "access_token_signing_alg_values_supported": list(SUPPORTED_ALGS),
        "resource_indicators_supported": True,
        # CBST extension: revoked, unexpired token ids, for resource servers that verify offline.
        "cbst_revocation_list_uri": f"{issuer}/revoked",
    })
    return doc


#: Kept short on purpose: older MCP clients request every scope listed here. Capabilities are
#: per resource (its protected resource metadata lists them); offline_access is not listed, so
#: clients ask for refresh tokens only when they mean to (RFC 9700 §2.2.2).
OIDC_SCOPES_SUPPORTED = ("openid", "profile", "email")


def openid_configuration(settings: Settings) -> dict[str, Any]:
    """OpenID Connect Discovery 1.0 §3: every REQUIRED member, and the RECOMMENDED ones we have."""
    return {
        **authorization_server_metadata(settings),
        "userinfo_endpoint": f"{settings.issuer}{USERINFO_PATH}",
        "scopes_supported": list(OIDC_SCOPES_SUPPORTED),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(SUPPORTED_ALGS),
        "claims_supported": list(id_token.CLAIMS_SUPPORTED),
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
    }
