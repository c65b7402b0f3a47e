"""OAuth 2.0 Protected Resource Metadata (RFC 9728) and Bearer challenges (RFC 6750 §3).

The metadata is served at the path form of the well-known URI
(``/.well-known/oauth-protected-resource/<resource path>``, RFC 9728 §3.1) and at the root form
(older MCP clients look only there). Challenges carry ``resource_metadata=`` (RFC 9728 §5.1)
and ``scope=`` — on 403 ``insufficient_scope`` every capability the request needs (MCP
authorization spec, step-up).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from ..jws import SUPPORTED_ALGS
from .config import ProtectionConfig

__all__ = ["bearer_challenge", "protected_resource_metadata"]

_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')


def protected_resource_metadata(config: ProtectionConfig) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "resource": config.resource,
        "authorization_servers": [config.issuer],
        "bearer_methods_supported": ["header"],
        "resource_signing_alg_values_supported": list(SUPPORTED_ALGS),
    }
    if config.scopes_supported is not None:
        doc["scopes_supported"] = list(config.scopes_supported)
    if config.resource_name:
        doc["resource_name"] = config.resource_name
    return doc


def metadata_body(config: ProtectionConfig) -> bytes:
    return json.dumps(protected_resource_metadata(config), separators=(",", ":")).encode()


def _quote(value: str) -> str:
    return '"' + _UNSAFE.sub("", value)[:1024] + '"'


def bearer_challenge(
    config: ProtectionConfig,
    *,
    error: str | None = None,
    description: str | None = None,
    scope: Iterable[str] | None = None,
) -> str:
    """``WWW-Authenticate: Bearer ...`` (RFC 6750 §3, RFC 9728 §5.1)."""
    params = [f"resource_metadata={_quote(config.resource_metadata_url)}"]
    scopes = list(dict.fromkeys(scope)) if scope is not None else []
    if not scopes and config.scopes_supported:
        scopes = list(config.scopes_supported)
    if scopes:
        # Scope tokens cannot contain '"' or '\' (RFC 6749 §3.3); capabilities never do.
        params.append(f"scope={_quote(' '.join(scopes))}")
    if error:
        params.append(f"error={_quote(error)}")
    if description:
        params.append(f"error_description={_quote(description)}")
    return "Bearer " + ", ".join(params)
