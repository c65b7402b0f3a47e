"""The gateway's exceptions: one root, so a caller can catch everything the gateway raises on
purpose (``except GatewayError``) apart from bugs."""

from __future__ import annotations

__all__ = ["GatewayConfigError", "GatewayError", "StdioStartError"]


class GatewayError(Exception):
    """Root of the exceptions of the ``gateway`` package; raised alone for a broken invariant."""


class GatewayConfigError(GatewayError, ValueError):
    """A bad option, found before anything starts (a ``ValueError`` too, as Python's own)."""


class StdioStartError(GatewayError):
    """The stdio MCP server could not be started and initialised."""
