"""CBST gateway: capability enforcement in front of an MCP server you did not write.

``cbst-gateway`` (``gateway.cli``) wraps one of two ASGI apps in the SDK's
``CBSTMiddleware``: ``HTTPUpstreamProxy`` (a streaming reverse proxy to a streamable-HTTP MCP
server) or ``StdioBridge`` (a supervised stdio MCP server exposed over streamable HTTP).
Every exception it raises on purpose derives from ``GatewayError``. See docs/gateway.md.
"""

from .errors import GatewayConfigError, GatewayError, StdioStartError
from .http_proxy import HTTPUpstreamProxy
from .stdio_bridge import StdioBridge
from .stdio_child import StdioChild

__all__ = ["GatewayConfigError", "GatewayError", "HTTPUpstreamProxy", "StdioBridge", "StdioChild", "StdioStartError"]
