"""``ClientCredentials``: the public front door of the client side.

One object per (client, MCP server): it knows the IdP, the client's credentials, the
capabilities to ask for and the MCP server's resource URI, and hands out ``httpx`` / ``httpx2``
auth objects and ready-made HTTP clients that share one token cache.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ..jws import PrivateKey, jwk_thumbprint, public_jwk_members
from ._core import AUTH_METHODS, AccessToken, Core, CoreConfig, normalize_scope

if TYPE_CHECKING:  # pragma: no cover
    import httpx
    import httpx2

    from .httpx2_auth import Httpx2Auth
    from .httpx_auth import HttpxAuth

#: Timeouts the official MCP clients use: 30 s to connect/write, 300 s to read (SSE streams).
MCP_TIMEOUT = 30.0
MCP_SSE_READ_TIMEOUT = 300.0

PrivateKeyLike = PrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | bytes | str | Path


def load_private_key(key: PrivateKeyLike, *, key_id: str | None = None) -> PrivateKey:
    """A signing key from a :class:`~sdk.jws.PrivateKey`, a ``cryptography`` key (EC P-256 or
    Ed25519), PEM text/bytes, or a path to an unencrypted PEM (PKCS#8) file."""
    if isinstance(key, PrivateKey):
        return PrivateKey(key_id, key.alg, key.key) if key_id else key
    if isinstance(key, Path) or (isinstance(key, str) and "-----BEGIN" not in key):
        key = Path(key).read_bytes()
    if isinstance(key, str):
        key = key.encode()
    if isinstance(key, bytes):
        loaded: Any = serialization.load_pem_private_key(key, password=None)
    else:
        loaded = key
    if isinstance(loaded, ec.EllipticCurvePrivateKey) and isinstance(loaded.curve, ec.SECP256R1):
        alg = "ES256"
    elif isinstance(loaded, ed25519.Ed25519PrivateKey):
        alg = "EdDSA"
    else:
        raise ValueError("private_key must be an EC P-256 (ES256) or Ed25519 (EdDSA) private key")
    kid = key_id or jwk_thumbprint(public_jwk_members(loaded.public_key()))
    return PrivateKey(kid, alg, loaded)


class ClientCredentials:
    """Obtain, cache and attach CBST access tokens by the OAuth client credentials grant.

    >>> creds = ClientCredentials(
    ...     issuer="http://127.0.0.1:8000", client_id="c_...", client_secret="...",
    ...     scope="tools/call:search resources/read:file:///docs/**",
    ...     resource="http://127.0.0.1:3000/mcp")
    >>> async with Client(creds.mcp_transport("http://127.0.0.1:3000/mcp")) as mcp:  # mcp 2.x
    ...     await mcp.call_tool("search", {"q": "x"})

    Exactly one of ``client_secret`` or ``private_key`` (``private_key_jwt``, RFC 7523) is given.
    ``auth_method`` defaults to ``client_secret_basic`` with a secret; ``client_secret_post`` is
    the alternative. ``scope`` is what every token request asks for (``None``: every capability
    the client is registered for); ``resource`` is the MCP server's resource URI (RFC 8707; may
    be omitted when the client has exactly one registered audience). The token endpoint is
    discovered from the issuer's RFC 8414 metadata unless ``token_endpoint`` is given.

    A cached token is reused until ``refresh_margin`` seconds (at most half its lifetime) before
    it expires. With ``step_up`` (the default) a 403 ``insufficient_scope`` makes the client ask
    once for the union of its scope and the challenged one, and retry the request once.

    Requests to the IdP time out after ``timeout`` seconds (each of connect, read, write).
    Token errors raise :class:`~sdk.client.TokenError` subclasses with the IdP's explanation.
    """

    def __init__(
        self,
        issuer: str,
        client_id: str,
        *,
        client_secret: str | None = None,
        private_key: PrivateKeyLike | None = None,
        key_id: str | None = None,
        auth_method: str | None = None,
        scope: str | Iterable[str] | None = None,
        resource: str | None = None,
        token_endpoint: str | None = None,
        refresh_margin: float = 30.0,
        step_up: bool = True,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not issuer.startswith(("http://", "https://")):
            raise ValueError(f"issuer must be an http(s) URL, got {issuer!r}")
        if not client_id:
            raise ValueError("client_id is required")
        if (client_secret is None) == (private_key is None):
            raise ValueError("give exactly one of client_secret or private_key")
        if auth_method is None:
            auth_method = "private_key_jwt" if private_key is not None else "client_secret_basic"
        if auth_method not in AUTH_METHODS:
            raise ValueError(f"auth_method must be one of {', '.join(AUTH_METHODS)}")
        if (auth_method == "private_key_jwt") != (private_key is not None):
            raise ValueError("private_key_jwt needs private_key; client_secret_basic/post need client_secret")
        if refresh_margin < 0:
            raise ValueError("refresh_margin must be >= 0")
        if not timeout > 0:
            raise ValueError("timeout must be > 0")
        key = load_private_key(private_key, key_id=key_id) if private_key is not None else None
        self._core = Core(CoreConfig(
            issuer=issuer, client_id=client_id, auth_method=auth_method, client_secret=client_secret,
            private_key=key, scope=normalize_scope(scope), resource=resource, token_endpoint=token_endpoint,
            refresh_margin=refresh_margin, step_up=step_up, timeout=timeout, clock=clock,
        ))
        self._httpx_auth: HttpxAuth | None = None
        self._httpx2_auth: Httpx2Auth | None = None

    @classmethod
    def from_env(cls, prefix: str = "CBST_", **overrides: Any) -> ClientCredentials:
        """Build from ``CBST_ISSUER``, ``CBST_CLIENT_ID``, ``CBST_CLIENT_SECRET`` or
        ``CBST_PRIVATE_KEY_FILE``, ``CBST_AUTH_METHOD``, ``CBST_SCOPE``, ``CBST_RESOURCE``."""
        env = {k[len(prefix):].lower(): v for k, v in os.environ.items() if k.startswith(prefix) and v}
        kwargs: dict[str, Any] = {k: env[k] for k in ("issuer", "client_id", "client_secret", "auth_method",
                                                      "scope", "resource", "token_endpoint") if k in env}
        if "private_key_file" in env:
            kwargs["private_key"] = Path(env["private_key_file"])
        kwargs.update(overrides)
        missing = [n for n in ("issuer", "client_id") if not kwargs.get(n)]
        if missing:
            raise ValueError("missing " + ", ".join(prefix + n.upper() for n in missing))
        return cls(**kwargs)

    # -- state -----------------------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return self._core.config.client_id

    @property
    def scope(self) -> str | None:
        """The scope the next token request asks for (the configured one, grown by step-ups)."""
        return self._core.scope

    @property
    def token(self) -> AccessToken | None:
        """The cached token, if any (it may be stale)."""
        return self._core.token

    @property
    def token_requests(self) -> int:
        """How many token requests this object has sent."""
        return self._core.token_requests

    def public_jwks(self) -> dict[str, Any]:
        """The JWKS to register for ``private_key_jwt`` (``idp clients add --jwks FILE``)."""
        key = self._core.config.private_key
        if key is None:
            raise ValueError("this client authenticates with a secret; it has no key")
        return {"keys": [key.public.to_jwk()]}

    def invalidate(self) -> None:
        """Drop the cached token: the next request fetches a new one."""
        self._core.token = None

    # -- adapters --------------------------------------------------------------------------------

    def httpx_auth(self) -> HttpxAuth:
        """An ``httpx.Auth`` (MCP Python SDK 1.x: ``streamablehttp_client(url, auth=...)``)."""
        if self._httpx_auth is None:
            from .httpx_auth import HttpxAuth

            self._httpx_auth = HttpxAuth(self._core)
        return self._httpx_auth

    def httpx2_auth(self) -> Httpx2Auth:
        """An ``httpx2.Auth`` (MCP Python SDK 2.x)."""
        if self._httpx2_auth is None:
            from .httpx2_auth import Httpx2Auth

            self._httpx2_auth = Httpx2Auth(self._core)
        return self._httpx2_auth

    def httpx_async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` with this auth and the MCP clients' timeouts (MCP 1.x:
        ``streamable_http_client(url, http_client=...)``). The caller closes it."""
        import httpx

        kwargs.setdefault("timeout", httpx.Timeout(MCP_TIMEOUT, read=MCP_SSE_READ_TIMEOUT))
        return httpx.AsyncClient(auth=self.httpx_auth(), **kwargs)

    def httpx2_async_client(self, **kwargs: Any) -> httpx2.AsyncClient:
        """An ``httpx2.AsyncClient`` with this auth and the MCP clients' timeouts (MCP 2.x:
        ``streamable_http_client(url, http_client=...)``). The caller closes it."""
        import httpx2

        kwargs.setdefault("timeout", httpx2.Timeout(MCP_TIMEOUT, read=MCP_SSE_READ_TIMEOUT))
        return httpx2.AsyncClient(auth=self.httpx2_auth(), **kwargs)

    @asynccontextmanager
    async def mcp_transport(self, url: str, **kwargs: Any) -> AsyncIterator[Any]:
        """An MCP 2.x streamable HTTP transport with this auth, owning its HTTP client:
        ``mcp.Client(creds.mcp_transport(url), mode="auto")``. ``kwargs`` go to
        ``mcp.client.streamable_http.streamable_http_client``."""
        from mcp.client.streamable_http import streamable_http_client

        async with self.httpx2_async_client() as http, \
                streamable_http_client(url, http_client=http, **kwargs) as streams:
            yield streams

    # -- explicit token access -------------------------------------------------------------------

    def get_token(self, client: httpx.Client | None = None) -> AccessToken:
        """A fresh token (cached or newly fetched), synchronously, over ``client`` or a new one."""
        import httpx

        own = client is None
        http = client or httpx.Client(timeout=MCP_TIMEOUT)
        try:
            auth = self.httpx_auth()
            with auth._thread_lock:
                flow = self._core.ensure_token()
                try:
                    req = next(flow)
                    while True:
                        response = http.send(auth._to_http(req))
                        req = flow.send(auth._to_neutral(response, response.read()))
                except StopIteration as stop:
                    return cast(AccessToken, stop.value)
        finally:
            if own:
                http.close()

    async def aget_token(self, client: httpx2.AsyncClient | None = None) -> AccessToken:
        """A fresh token (cached or newly fetched) over ``httpx2``, asynchronously."""
        import httpx2

        own = client is None
        http = client or httpx2.AsyncClient(timeout=MCP_TIMEOUT)
        try:
            auth = self.httpx2_auth()
            async with auth._async_lock:
                flow = self._core.ensure_token()
                try:
                    req = next(flow)
                    while True:
                        response = await http.send(auth._to_http(req))
                        req = flow.send(auth._to_neutral(response, await response.aread()))
                except StopIteration as stop:
                    return cast(AccessToken, stop.value)
        finally:
            if own:
                await http.aclose()


__all__ = ["ClientCredentials", "load_private_key"]
