"""DNS-rebinding protection: the ``Origin`` and ``Host`` checks of the MCP transport.

MCP transport spec, Streamable HTTP → Security Warning: servers MUST validate the ``Origin``
header on all incoming connections; if it is present and invalid they MUST answer HTTP 403
(the body MAY be a JSON-RPC error without an id). Servers running locally should bind to
loopback only — and a loopback server must also refuse a ``Host`` that is not a loopback name,
because a rebinding page (``evil.example`` re-resolved to 127.0.0.1) is *same-origin* to the
browser and may send no ``Origin`` at all.

:class:`OriginPolicy`:

* ``Origin`` absent → pass (not a browser: browsers send it on every POST and cross-origin GET).
* ``Origin`` present → it must be one of ``allowed_origins`` (default: the resource's own
  origin, plus every loopback origin — any scheme-http(s) origin on ``localhost``,
  ``127.0.0.0/8`` or ``[::1]``, any port — when the resource itself is on loopback). ``*``
  allows any origin (explicit opt-out). Anything that is not a plain ``scheme://host[:port]``
  (``null``, a path, user info) is invalid. → 403.
* The resource on loopback → the ``Host`` must be a loopback name (any port). → 421
  (Misdirected Request, as the official SDK answers). For a public resource the ``Host`` is the
  deployment's business (reverse proxies rewrite it); ``Origin`` still protects browsers.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from ..net import is_loopback as _is_loopback

__all__ = ["OriginGuard", "OriginPolicy", "OriginRefusal", "normalize_origin"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(value: str) -> str | None:
    """``scheme://host[:port]`` in canonical form (lower case, default port dropped), or None
    when ``value`` is not a tuple origin (RFC 6454 §6.1 serialisation)."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if (scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None
            or parts.password is not None or parts.path or parts.query or parts.fragment
            or "?" in value or "#" in value):
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _host_name(value: str) -> str | None:
    """The host name of a ``Host`` header value (``[::1]:8080`` → ``::1``), or None."""
    try:
        return urlsplit("//" + value).hostname
    except ValueError:
        return None


class OriginRefusal(NamedTuple):
    status: int  #: 403 (Origin) or 421 (Host)
    reason: str  #: "invalid_origin" or "invalid_host" (audit)
    message: str
    detail: str


class OriginPolicy:
    """Decides on a request's ``Origin`` and ``Host`` headers (raw bytes, as ASGI gives them)."""

    __slots__ = ("_bad_hosts", "_good_origins", "allow_any", "allowed", "check_host", "good_hosts",
                 "loopback_origins")

    def __init__(self, resource: str, allowed_origins: Sequence[str] | None = None) -> None:
        parts = urlsplit(resource)
        own = normalize_origin(f"{parts.scheme}://{parts.netloc}")
        loopback = _is_loopback(parts.hostname)
        self.check_host = loopback
        #: ``Host`` values already judged (a server sees few distinct ones; both sets bounded).
        self.good_hosts: set[bytes] = set()
        self._bad_hosts: set[bytes] = set()
        self._good_origins: set[bytes] = set()
        if allowed_origins is None:
            self.allow_any = False
            self.allowed = frozenset({own} if own else ())
            self.loopback_origins = loopback
        else:
            self.allow_any = "*" in allowed_origins
            self.allowed = frozenset(o for o in (normalize_origin(v) for v in allowed_origins if v != "*") if o)
            self.loopback_origins = False

    def check(self, origin: bytes | None, host: bytes | None) -> OriginRefusal | None:
        """None when the request may proceed; else how to refuse it."""
        if origin is not None and origin not in self._good_origins:
            if self.origin_allowed(origin):
                if len(self._good_origins) < 64:
                    self._good_origins.add(origin)
            else:
                return OriginRefusal(403, "invalid_origin", "requests from this Origin are not allowed",
                                     f"Origin {origin[:200].decode('latin-1')!r}")
        if host is not None and host not in self.good_hosts:
            if host in self._bad_hosts or not self.host_allowed(host):
                if len(self._bad_hosts) < 64:
                    self._bad_hosts.add(host)
                return OriginRefusal(421, "invalid_host", "this server does not answer for this Host",
                                     f"Host {host[:200].decode('latin-1')!r}")
            if len(self.good_hosts) < 64:
                self.good_hosts.add(host)
        return None

    def origin_allowed(self, raw: bytes | None) -> bool:
        if raw is None or self.allow_any:
            return True
        try:
            origin = normalize_origin(raw.decode("ascii"))
        except UnicodeDecodeError:
            return False
        if origin is None:
            return False
        if origin in self.allowed:
            return True
        return self.loopback_origins and _is_loopback(urlsplit(origin).hostname)

    def host_allowed(self, raw: bytes | None) -> bool:
        if not self.check_host:
            return True
        if raw is None:  # HTTP/1.0 without Host: not a browser
            return True
        try:
            return _is_loopback(_host_name(raw.decode("ascii")))
        except UnicodeDecodeError:
            return False


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class OriginGuard:
    """ASGI middleware doing only these checks, for an MCP app served without
    :class:`~sdk.server.CBSTMiddleware` (which does them itself), e.g. ``cbst-gateway --no-auth``."""

    def __init__(self, app: ASGIApp, *, resource: str, allowed_origins: Sequence[str] | None = None) -> None:
        self.app = app
        self.policy = OriginPolicy(resource, allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            origin = host = None
            for k, v in scope["headers"]:
                if k == b"origin" and origin is None:
                    origin = v
                elif k == b"host" and host is None:
                    host = v
            refusal = self.policy.check(origin, host)
            if refusal is not None:
                body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {
                    "code": -32003 if refusal.status == 403 else -32600, "message": refusal.message}}).encode()
                await send({"type": "http.response.start", "status": refusal.status, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
