"""Server side of the CBST SDK: protect an MCP streamable-HTTP app with capability tokens.

    from sdk.server import CBSTMiddleware, ProtectionConfig

    config = ProtectionConfig(issuer="https://idp.example", resource="https://mcp.example/mcp")
    app = CBSTMiddleware(mcp_app, config)          # or: app = protect(mcp_app, issuer=..., resource=...)

See docs/sdk-server.md. The pieces are separate objects, each usable and testable alone:
:class:`TokenVerifier` (offline verification + cache + revocation), :class:`IssuerClient`
(metadata, JWKS, revocation list), :class:`ToolRateLimiter`, :class:`MCPEndpoint` (where MCP is
served: route with it wherever MCP is served behind the middleware), :class:`OriginPolicy`
(DNS rebinding), :class:`SessionPins`, :class:`ListFilter`, :class:`AuditRecorder` and the
audit sink.
"""

from ..access_token import AccessToken, InvalidToken
from .audit import AuditEvent, AuditRecorder, AuditSink, LoggerSink
from .config import ProtectionConfig
from .endpoint import MCPEndpoint, route_path
from .issuer import IssuerClient, IssuerUnavailable
from .list_filter import ListFilter
from .metadata import bearer_challenge, protected_resource_metadata
from .middleware import ACCESS_TOKEN_SCOPE_KEY, CBSTMiddleware, protect
from .origin import OriginGuard, OriginPolicy
from .ratelimit import ToolRateLimiter
from .session_pins import SessionPins
from .verifier import TokenVerifier

__all__ = [
    "ACCESS_TOKEN_SCOPE_KEY",
    "AccessToken",
    "AuditEvent",
    "AuditRecorder",
    "AuditSink",
    "CBSTMiddleware",
    "InvalidToken",
    "IssuerClient",
    "IssuerUnavailable",
    "ListFilter",
    "LoggerSink",
    "MCPEndpoint",
    "OriginGuard",
    "OriginPolicy",
    "ProtectionConfig",
    "SessionPins",
    "TokenVerifier",
    "ToolRateLimiter",
    "bearer_challenge",
    "protect",
    "protected_resource_metadata",
    "route_path",
]
