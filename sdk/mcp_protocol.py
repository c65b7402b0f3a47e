"""Wire constants of JSON-RPC 2.0 and MCP that every CBST component speaks.

The error codes of JSON-RPC 2.0 (§5.1) and of MCP (as in the official SDK's
``mcp_types.jsonrpc``), the two protocol generations (``mcp_types.version``: the handshake one
with ``initialize`` and sessions, and the stateless 2026-07-28 one) and the keys of the
2026-07-28 per-request envelope (``params._meta``). Constants only: no behaviour, no imports,
so the SDK server and ``cbst-gateway`` share one definition of each.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "HANDSHAKE_VERSIONS",
    "HEADER_MISMATCH",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "LATEST_HANDSHAKE_VERSION",
    "LATEST_MODERN_VERSION",
    "META_CLIENT_CAPABILITIES",
    "META_CLIENT_INFO",
    "META_PROTOCOL_VERSION",
    "META_SUBSCRIPTION_ID",
    "METHOD_NOT_FOUND",
    "MODERN_VERSIONS",
    "PARSE_ERROR",
    "UNSUPPORTED_PROTOCOL_VERSION",
]

# JSON-RPC 2.0 error codes.
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
# MCP 2026-07-28 error codes (-32020.. are allocated by the spec).
HEADER_MISMATCH: Final = -32020
UNSUPPORTED_PROTOCOL_VERSION: Final = -32022

#: The handshake generation (``initialize``, sessions), oldest first.
HANDSHAKE_VERSIONS: Final[tuple[str, ...]] = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_HANDSHAKE_VERSION: Final = HANDSHAKE_VERSIONS[-1]
#: The modern generation (stateless requests, each with its own ``_meta`` envelope).
MODERN_VERSIONS: Final[tuple[str, ...]] = ("2026-07-28",)
LATEST_MODERN_VERSION: Final = MODERN_VERSIONS[-1]

# Keys of the 2026-07-28 envelope in ``params._meta``.
META_PROTOCOL_VERSION: Final = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_CAPABILITIES: Final = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO: Final = "io.modelcontextprotocol/clientInfo"
#: On every frame of a ``subscriptions/listen`` stream: the listen request's id (SEP-2575).
META_SUBSCRIPTION_ID: Final = "io.modelcontextprotocol/subscriptionId"
