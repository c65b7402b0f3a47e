"""Authorization server metadata (RFC 8414) and OpenID Connect Discovery 1.0 §3.

Lists only what this server does: the grants and client-authentication methods (and their
signing algorithms) come from the registries the endpoints dispatch on, so the document cannot
disagree with what the code accepts. The OIDC document adds the members the MCP TypeScript
clients' schema requires (``subject_types_supported``, ``id_token_signing_alg_values_supported``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sdk.jws import SUPPORTED_ALGS

from . import client_auth, grants

if TYPE_CHECKING:
    from ..config import Settings

#: Endpoints that authenticate clients, as named in the metadata (``<name>_endpoint_auth_...``).
AUTHENTICATING_ENDPOINTS = ("token", "introspection", "revocation")


def authorization_server_metadata(settings: Settings) -> dict[str, Any]:
    issuer = settings.issuer
    doc: dict[str, Any] = {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/jwks",
        "introspection_endpoint": f"{issuer}/introspect",
        "revocation_endpoint": f"{issuer}/revoke",
        "grant_types_supported": list(grants.GRANTS),
        "response_types_supported": [],
    }
    methods, algs = list(client_auth.METHODS), client_auth.signing_alg_values()
    for endpoint in AUTHENTICATING_ENDPOINTS:
        doc[f"{endpoint}_endpoint_auth_methods_supported"] = methods
        if algs:  # RFC 8414 §2: present when a method needs it; "none" MUST NOT be listed
            doc[f"{endpoint}_endpoint_auth_signing_alg_values_supported"] = algs
    doc.update({
        "access_token_signing_alg_values_supported": list(SUPPORTED_ALGS),
        "resource_indicators_supported": True,
        # CBST extension: revoked, unexpired token ids, for resource servers that verify offline.
        "cbst_revocation_list_uri": f"{issuer}/revoked",
    })
    # Client registration (docs/registration.md): RFC 7591 unless the policy is off; Client ID
    # Metadata Documents (MCP 2026-07-28) unless disabled.
    if settings.registration_policy != "off":
        doc["registration_endpoint"] = f"{issuer}/register"
    if settings.cimd_enabled:
        doc["client_id_metadata_document_supported"] = True
    return doc


def openid_configuration(settings: Settings) -> dict[str, Any]:
    return {
        **authorization_server_metadata(settings),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(SUPPORTED_ALGS),
    }
