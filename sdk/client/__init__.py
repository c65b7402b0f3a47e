"""CBST client side: obtain capability tokens from the IdP and attach them to MCP requests.

    from sdk.client import ClientCredentials

    creds = ClientCredentials(issuer="http://127.0.0.1:8000", client_id="c_...", client_secret="...",
                              scope="tools/call:search", resource="http://127.0.0.1:3000/mcp")

    # MCP Python SDK 2.x (httpx2)
    async with mcp.Client(creds.mcp_transport("http://127.0.0.1:3000/mcp"), mode="auto") as client: ...
    # MCP Python SDK 1.x (httpx)
    async with streamablehttp_client(url, auth=creds.httpx_auth()) as (read, write, _): ...

See docs/sdk-client.md. The logic lives in a sans-IO core (``_core``); ``httpx_auth`` and
``httpx2_auth`` are thin adapters, imported only when used (a 1.x environment has no httpx2).
"""

from ._core import (
    AccessToken,
    DiscoveryError,
    InvalidClientError,
    InvalidScopeError,
    InvalidTargetError,
    TokenError,
    parse_www_authenticate,
)
from .credentials import ClientCredentials, load_private_key

__all__ = [
    "AccessToken",
    "ClientCredentials",
    "DiscoveryError",
    "InvalidClientError",
    "InvalidScopeError",
    "InvalidTargetError",
    "TokenError",
    "load_private_key",
    "parse_www_authenticate",
]
