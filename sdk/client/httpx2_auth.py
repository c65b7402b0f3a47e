"""``httpx2.Auth`` adapter (what the MCP Python SDK 2.x client uses)."""

from __future__ import annotations

import httpx2

from ._flow import FlowMixin


class Httpx2Auth(FlowMixin, httpx2.Auth):
    """Attaches CBST tokens to ``httpx2`` requests. Make it with ``ClientCredentials.httpx2_auth()``."""

    _http = httpx2
