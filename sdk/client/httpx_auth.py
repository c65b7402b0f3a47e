"""``httpx.Auth`` adapter (``httpx`` 0.28; what the MCP Python SDK 1.x client uses)."""

from __future__ import annotations

import httpx

from ._flow import FlowMixin


class HttpxAuth(FlowMixin, httpx.Auth):
    """Attaches CBST tokens to ``httpx`` requests. Make it with ``ClientCredentials.httpx_auth()``."""

    _http = httpx
