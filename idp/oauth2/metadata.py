"""Authorization server metadata (RFC 8414) and OpenID Connect Discovery 1.0 §3.

Lists only what this server does. The OIDC document adds the members the MCP TypeScript
clients' schema requires (``subject_types_supported``, ``id_token_signing_alg_values_supported``).
"""

from __future__ import annotations

from typing import Any

from sdk.jws import SUPPORTED_ALGS

from ..config import Settings
from .client_auth import ASSERTION_ALGS
from .token_endpoint import GRANT_TYPES

AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]


def authorization_server_metadata(settings: Settings) -> dict[str, Any]:
    issuer = settings.issuer
    return {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/jwks",
        "introspection_endpoint": f"{issuer}/introspect",
        "revocation_endpoint": f"{issuer}/revoke",
        "grant_types_supported": list(GRANT_TYPES),
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "access_token_signing_alg_values_supported": list(SUPPORTED_ALGS),
        "resource_indicators_supported": True,
        # CBST extension: revoked, unexpired token ids, for resource servers that verify offline.
        "cbst_revocation_list_uri": f"{issuer}/revoked",
    }


def openid_configuration(settings: Settings) -> dict[str, Any]:
    return {
        **authorization_server_metadata(settings),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(SUPPORTED_ALGS),
    }
