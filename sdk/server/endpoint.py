"""Where the MCP endpoint is: the one definition everything that routes shares.

MCP transport spec (Streamable HTTP): the server provides *a single HTTP endpoint path*, the
MCP endpoint. The middleware enforces capabilities there, and whatever serves MCP behind it
(an app, the gateway's proxy and stdio bridge) must serve MCP *only* there: if the two
disagreed on a spelling (``/mcp//``), requests on it would reach the MCP handler as "another
path of the app", with nothing but a valid token checked (issue 6, defect 1).

Exactly two spellings are the endpoint: the path and the path with one trailing slash. They are
compared with the ASGI ``path`` (already percent-decoded by the server, so ``/mc%70`` is
``/mcp``) relative to ``root_path``, as Starlette routes. Nothing else is normalised: ``//mcp``,
``/mcp//``, ``/./mcp``, ``/MCP``, ``/mcp;x`` are not the endpoint, for the middleware and for
the handler alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["MCPEndpoint", "route_path"]


def route_path(scope: Mapping[str, Any]) -> str:
    """The request's path inside the app: ``root_path`` removed, as Starlette routes it."""
    path: str = scope["path"]
    root = scope.get("root_path")
    if root and path.startswith(root):
        return path[len(root):] or "/"
    return path


class MCPEndpoint:
    """The MCP endpoint at ``path`` (``"/mcp"`` and ``"/mcp/"`` are the same endpoint)."""

    __slots__ = ("_paths", "path")

    def __init__(self, path: str = "/mcp") -> None:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"the MCP endpoint path must start with '/', got {path!r}")
        self.path = path.rstrip("/") or "/"
        self._paths = frozenset({self.path, self.path.rstrip("/") + "/"})

    def matches(self, path: str) -> bool:
        """Whether ``path`` (a route path, see :func:`route_path`) is this endpoint."""
        return path in self._paths

    def serves(self, scope: Mapping[str, Any]) -> bool:
        """Whether the HTTP request of ``scope`` is addressed to this endpoint."""
        return route_path(scope) in self._paths

    def __repr__(self) -> str:
        return f"MCPEndpoint({self.path!r})"
