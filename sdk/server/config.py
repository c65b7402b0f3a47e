"""Configuration of the CBST resource-server middleware: one validated, immutable object.

Every option has a safe default; :class:`ProtectionConfig` validates everything up front and
fails loudly (``ValueError``) on a bad configuration, so a misconfigured server never starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..capabilities import Capability, CapabilityError
from .endpoint import MCPEndpoint

if TYPE_CHECKING:
    import httpx

    from .audit import AuditEvent

__all__ = ["ProtectionConfig"]

_WELL_KNOWN = "/.well-known/oauth-protected-resource"


def _is_loopback(host: str | None) -> bool:
    from ..net import is_loopback  # one definition, shared with the gateway

    return is_loopback(host)


def _check_url(name: str, value: str, *, allow_http: bool) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string URL")
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.fragment:
        raise ValueError(f"{name} must be an absolute http(s) URL without fragment, got {value!r}")
    if parts.scheme == "http" and not allow_http and not _is_loopback(parts.hostname):
        raise ValueError(
            f"{name} {value!r} uses plain http on a non-loopback host; use https "
            "(or allow_insecure_http=True for a test network)"
        )


@dataclass(frozen=True, kw_only=True)
class ProtectionConfig:
    """How :class:`~sdk.server.CBSTMiddleware` protects one MCP endpoint.

    Required: ``issuer`` (the IdP, compared byte for byte with the token's ``iss`` and with its
    RFC 8414 metadata) and ``resource`` (this server's resource URI: the token's ``aud``, and
    the ``resource`` of the RFC 9728 metadata).
    """

    issuer: str
    resource: str
    #: Path of the MCP endpoint inside the wrapped app: ``/mcp`` and ``/mcp/`` and no other
    #: spelling (:class:`~sdk.server.endpoint.MCPEndpoint`, shared with whatever serves MCP).
    mcp_path: str = "/mcp"
    #: Capabilities advertised in the protected resource metadata and in 401 challenges for
    #: requests that need no particular capability. Keep it short (old clients request all).
    scopes_supported: Sequence[str] | None = None
    #: Human-readable name in the resource metadata (RFC 9728 ``resource_name``).
    resource_name: str | None = None
    #: Allowed clock skew for ``exp``/``nbf``/``iat``, seconds.
    clock_skew: int = 60
    #: Largest request body accepted on the MCP endpoint, bytes (413 beyond).
    max_body_size: int = 1024 * 1024
    #: Most JSON-RPC messages in one batch.
    max_batch_size: int = 32
    #: Verified tokens remembered (by SHA-256 of the token), LRU; 0 disables the cache.
    token_cache_size: int = 10_000
    #: Minimum seconds between two JWKS fetches triggered by an unknown ``kid``.
    jwks_min_refetch_interval: float = 10.0
    #: JWKS freshness when the IdP sends no usable Cache-Control max-age, seconds.
    jwks_default_max_age: float = 300.0
    #: Upper bound on how long a JWKS is trusted without refetching, whatever max-age says.
    jwks_max_age_cap: float = 86_400.0
    #: How often the revocation list (``cbst_revocation_list_uri``) is fetched, seconds. A
    #: revoked token stops working within this interval plus one fetch (docs/sdk-server.md).
    revocation_poll_interval: float = 10.0
    #: Refuse every token (503) when the revocation list could not be fetched for this long,
    #: seconds; ``None`` keeps accepting tokens on a stale list (fail open — not recommended).
    revocation_fail_closed_after: float | None = 60.0
    #: Tool calls per second per client (token bucket; burst = ``tool_burst`` or the rate).
    #: ``None`` disables rate limiting.
    tool_rate: float | None = 3.0
    tool_burst: float | None = None
    #: Per-tool rates (calls/s per client), each with its own bucket; ``None`` = unlimited.
    tool_rate_overrides: Mapping[str, float | None] = field(default_factory=dict)
    #: Clients tracked by the rate limiter (least recently seen evicted).
    rate_limit_max_clients: int = 10_000
    #: Audit sink: called with every :class:`~sdk.server.audit.AuditEvent`. Default: the
    #: ``audit_logger`` at INFO, one JSON object per line.
    audit: Callable[[AuditEvent], None] | None = None
    audit_logger: logging.Logger | str = "cbst.audit"
    #: Include ``tools/call`` arguments (and prompt arguments) in audit events. Off by default:
    #: arguments may carry personal data or secrets.
    log_tool_arguments: bool = False
    #: How a capability denial of one request inside a handshake-generation session is answered:
    #: ``"http"`` (default) — HTTP 403 ``insufficient_scope`` with the JSON-RPC error in the body,
    #: so OAuth-aware clients can step up; ``"jsonrpc"`` — HTTP 200 carrying only the JSON-RPC
    #: error, for clients that end the whole session on any HTTP error status (the mcp 1.x
    #: Python client). Outside a session, and for batches, a denial is always a 403.
    in_session_denials: str = "http"
    #: Paths outside the MCP endpoint served without a token (e.g. ``("/healthz",)``). Every
    #: other path of the wrapped app needs a valid token (capabilities are MCP-only).
    public_paths: Sequence[str] = ()
    #: Sessions (``Mcp-Session-Id``) remembered and pinned to the client that opened them, in all
    #: and per client (``client_id`` and subject). A session id the middleware did not see
    #: created (or has forgotten) is answered 404, so its client starts a new session.
    max_sessions: int = 10_000
    max_sessions_per_client: int = 100
    #: Most bytes of a ``*/list`` response buffered for filtering: the whole JSON body, or one
    #: SSE event. Beyond it the list request gets a JSON-RPC error (the result is withheld).
    max_list_response_size: int = 16 * 1024 * 1024
    #: Browser origins (``scheme://host[:port]``) allowed to call the server (MCP transport: an
    #: invalid ``Origin`` is refused with 403). ``None``: the resource's own origin, plus any
    #: loopback origin when the resource is on loopback; ``["*"]``: any origin. Requests
    #: without ``Origin`` (non-browser clients) always pass. On a loopback resource the ``Host``
    #: must also be a loopback name (421 otherwise: DNS rebinding).
    allowed_origins: Sequence[str] | None = None
    #: Timeout of each request to the IdP (metadata, JWKS, revocation list), seconds.
    http_timeout: float = 5.0
    #: HTTP client for the IdP requests (tests, proxies, custom TLS); default: a private one.
    http_client: httpx.AsyncClient | None = field(default=None, repr=False, compare=False)
    #: Pass the client's ``Authorization`` header on to the wrapped app. Off by default: the app
    #: gets the verified token as ``scope["cbst.access_token"]`` and can never forward the
    #: client's token to an upstream API by accident (MCP authorization spec: no passthrough).
    forward_authorization: bool = False
    #: Fetch the IdP metadata and JWKS while the app starts (ASGI lifespan), best effort.
    warm_up: bool = True
    #: Permit plain-http issuer/resource on non-loopback hosts (test networks only).
    allow_insecure_http: bool = False

    def __post_init__(self) -> None:
        _check_url("issuer", self.issuer, allow_http=self.allow_insecure_http)
        if self.issuer.endswith("/"):
            raise ValueError("issuer must not end with '/' (it is compared byte for byte)")
        _check_url("resource", self.resource, allow_http=self.allow_insecure_http)
        if self.in_session_denials not in ("http", "jsonrpc"):
            raise ValueError('in_session_denials must be "http" or "jsonrpc"')
        if not isinstance(self.mcp_path, str) or not self.mcp_path.startswith("/"):
            raise ValueError("mcp_path must start with '/'")
        if self.scopes_supported is not None:
            if isinstance(self.scopes_supported, str):
                raise ValueError("scopes_supported is a sequence of capability strings, not one string")
            for scope in self.scopes_supported:
                try:
                    Capability.parse(scope)
                except CapabilityError as exc:
                    raise ValueError(f"scopes_supported: {exc}") from None
        positive = {
            "max_body_size": self.max_body_size, "max_batch_size": self.max_batch_size,
            "jwks_min_refetch_interval": self.jwks_min_refetch_interval,
            "jwks_default_max_age": self.jwks_default_max_age, "jwks_max_age_cap": self.jwks_max_age_cap,
            "revocation_poll_interval": self.revocation_poll_interval, "http_timeout": self.http_timeout,
            "rate_limit_max_clients": self.rate_limit_max_clients, "max_sessions": self.max_sessions,
        }
        for name, count in (("max_sessions_per_client", self.max_sessions_per_client),
                            ("max_list_response_size", self.max_list_response_size)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"{name} must be a positive integer, got {count!r}")
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not isinstance(self.clock_skew, int) or not 0 <= self.clock_skew <= 600:
            raise ValueError("clock_skew must be an int between 0 and 600 seconds")
        if not isinstance(self.token_cache_size, int) or self.token_cache_size < 0:
            raise ValueError("token_cache_size must be an int >= 0")
        if self.revocation_fail_closed_after is not None and not (
            self.revocation_fail_closed_after >= self.revocation_poll_interval
        ):
            raise ValueError("revocation_fail_closed_after must be >= revocation_poll_interval (or None)")
        for name, rate in [("tool_rate", self.tool_rate), ("tool_burst", self.tool_burst),
                           *((f"tool_rate_overrides[{k!r}]", v) for k, v in self.tool_rate_overrides.items())]:
            if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0):
                raise ValueError(f"{name} must be a positive number or None, got {rate!r}")
        if self.audit is not None and not callable(self.audit):
            raise ValueError("audit must be a callable taking an AuditEvent")
        if self.allowed_origins is not None:
            from .origin import normalize_origin

            if not isinstance(self.allowed_origins, (list, tuple)) or not all(
                isinstance(o, str) and (o == "*" or normalize_origin(o) is not None) for o in self.allowed_origins
            ):
                raise ValueError('allowed_origins must be a sequence of origins ("https://app.example[:port]") '
                                 'or ["*"], got ' + repr(self.allowed_origins))
        if not isinstance(self.public_paths, (list, tuple)) or not all(
            isinstance(p, str) and p.startswith("/") for p in self.public_paths
        ):
            raise ValueError("public_paths must be a sequence of paths starting with '/'")

    # --- derived -----------------------------------------------------------------------------

    @cached_property
    def endpoint(self) -> MCPEndpoint:
        """The MCP endpoint: route with ``endpoint.serves(scope)`` wherever MCP is served."""
        return MCPEndpoint(self.mcp_path)

    def is_mcp_endpoint(self, path: str) -> bool:
        """Whether ``path`` (relative to ``root_path``) is the MCP endpoint."""
        return self.endpoint.matches(path)

    @property
    def resource_origin(self) -> str:
        parts = urlsplit(self.resource)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def resource_metadata_path(self) -> str:
        """RFC 9728 §3.1: the well-known suffix inserted before the resource's path."""
        path = urlsplit(self.resource).path.rstrip("/")
        return _WELL_KNOWN + path

    @property
    def resource_metadata_url(self) -> str:
        return self.resource_origin + self.resource_metadata_path

    @property
    def metadata_paths(self) -> frozenset[str]:
        """Where the metadata is served: the path form and the root form (older clients)."""
        return frozenset({self.resource_metadata_path, _WELL_KNOWN})

    def with_options(self, **changes: Any) -> ProtectionConfig:
        from dataclasses import replace

        return replace(self, **changes)
