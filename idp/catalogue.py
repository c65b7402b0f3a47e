"""A protected resource's catalogue, pulled from its MCP server with the official Python MCP client.

``idp resources sync URI`` (and, when ``catalogue_max_age`` is set, the IdP's maintenance loop)
connects to the MCP server over Streamable HTTP with a token the IdP mints itself — signed by its
own key ring, for the client the operator registered for the resource (``--client``), carrying
that client's registered capabilities, audited like every token — lists tools, resources and
prompts page by page, and stores what it got (:meth:`idp.resources.ResourceRegistry.set_catalogue`)
in the catalogue format of docs/resources.md.

Everything is bounded, so a hostile or broken server cannot exhaust the IdP: total bytes read
(every response body counted as it streams), time, pages, entries per list, and the length of
every string. Names and URIs over their limit (or malformed) refuse the whole sync; descriptions
and titles over theirs are cut. Nothing is stored unless the whole sync succeeded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdk.capabilities import CapabilitySet

from . import audit, clock
from .errors import IdPError
from .oauth2 import access_token
from .oauth2.resource import ResourceRecord

if TYPE_CHECKING:
    from .provider import Provider

log = logging.getLogger("cbst.idp.catalogue")

__all__ = ["CatalogueError", "Limits", "fetch", "mint_token", "normalise", "refresh_stale", "sync"]


class CatalogueError(IdPError):
    """The catalogue could not be pulled or is not acceptable; nothing was stored."""


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 4 * 1024 * 1024  # every response body of one sync, together
    timeout: float = 30.0  # the whole sync, seconds
    max_pages: int = 50  # per list
    max_entries: int = 1000  # per list (tools, resources, prompts)
    max_name: int = 128  # a tool or prompt name (MCP: 1-128 characters)
    max_uri: int = 512
    max_title: int = 256
    max_description: int = 2048


DEFAULT_LIMITS = Limits()
CATALOGUE_TOKEN_TTL = 120


class _Bounded:
    """Counts the bytes of every response body the MCP client reads; past the limit, the read fails."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.read = 0
        self.exceeded = False

    def transport(self) -> Any:
        import httpx2

        counter = self
        inner = httpx2.AsyncHTTPTransport()

        class Stream(httpx2.AsyncByteStream):
            def __init__(self, stream: Any) -> None:
                self._stream = stream

            async def __aiter__(self) -> AsyncIterator[bytes]:
                async for chunk in self._stream:
                    counter.read += len(chunk)
                    if counter.read > counter.limit:
                        counter.exceeded = True
                        raise CatalogueError(f"the server sent more than {counter.limit} bytes")
                    yield chunk

            async def aclose(self) -> None:
                await self._stream.aclose()

        class Transport(httpx2.AsyncBaseTransport):
            async def handle_async_request(self, request: Any) -> Any:
                response = await inner.handle_async_request(request)
                return httpx2.Response(response.status_code, headers=response.headers, stream=Stream(response.stream),
                                       extensions=response.extensions, request=request)

            async def aclose(self) -> None:
                await inner.aclose()

        return Transport()


def _text(value: Any, limit: int, what: str, *, cut: bool) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise CatalogueError(f"{what} is not a string")
    if len(value) > limit:
        if not cut:
            raise CatalogueError(f"{what} is longer than {limit} characters")
        value = value[: limit - 1] + "…"
    return str(value)


def _name(value: Any, limits: Limits, what: str) -> str:
    name = _text(value, limits.max_name, what, cut=False)
    if not name or not name.isprintable() or any(c.isspace() for c in name):
        raise CatalogueError(f"{what} must be 1-{limits.max_name} printable characters without spaces")
    return name


def normalise(raw: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The catalogue format (docs/resources.md) from the MCP list results (wire JSON, camelCase),
    keeping only the fields consent and policy use, bounded; :class:`CatalogueError` otherwise."""
    out: dict[str, Any] = {"tools": [], "resources": [], "prompts": []}
    for kind in ("tools", "resources", "prompts"):
        entries = raw.get(kind) or []
        if not isinstance(entries, list):
            raise CatalogueError(f"{kind} is not a list")
        if len(entries) > limits.max_entries:
            raise CatalogueError(f"the server lists more than {limits.max_entries} {kind}")
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            what = f"{kind}[{i}]"
            if not isinstance(entry, Mapping):
                raise CatalogueError(f"{what} is not an object")
            item: dict[str, Any] = {}
            if kind == "resources":
                uri = _text(entry.get("uri"), limits.max_uri, f"{what}.uri", cut=False)
                if not uri or not uri.isprintable() or any(c.isspace() for c in uri):
                    raise CatalogueError(f"{what}.uri must be a URI of at most {limits.max_uri} characters")
                item["uri"] = key = uri
                name = _text(entry.get("name"), limits.max_title, f"{what}.name", cut=True)
                if name:
                    item["name"] = name
            else:
                item["name"] = key = _name(entry.get("name"), limits, f"{what}.name")
            if key in seen:
                raise CatalogueError(f"{what}: {key!r} is listed twice")
            seen.add(key)
            for field, limit in (("title", limits.max_title), ("description", limits.max_description)):
                value = _text(entry.get(field), limit, f"{what}.{field}", cut=True)
                if value:
                    item[field] = value
            if kind == "tools" and entry.get("annotations") is not None:
                annotations = entry["annotations"]
                if not isinstance(annotations, Mapping):
                    raise CatalogueError(f"{what}.annotations is not an object")
                kept: dict[str, Any] = {}
                title = _text(annotations.get("title"), limits.max_title, f"{what}.annotations.title", cut=True)
                if title:
                    kept["title"] = title
                for hint in ("destructiveHint", "readOnlyHint"):
                    value = annotations.get(hint)
                    if value is not None and not isinstance(value, bool):
                        raise CatalogueError(f"{what}.annotations.{hint} is not a boolean")
                    if value is not None:
                        kept[hint] = value
                item["annotations"] = kept
            out[kind].append(item)
    return out


def mint_token(provider: Provider, resource: ResourceRecord, *, actor: str) -> tuple[str, CapabilitySet]:
    """A short-lived token for the resource's catalogue client, signed with the IdP's own keys
    (and audited as issued, so disabling the client revokes it)."""
    if resource.client_id is None:
        raise CatalogueError(f"resource {resource.uri} has no client to pull its catalogue with "
                             "(idp resources update URI --client CLIENT)")
    client = provider.clients.get(resource.client_id)
    if client is None or not client.enabled:
        raise CatalogueError(f"the catalogue client {resource.client_id} of {resource.uri} is missing or disabled")
    now = clock.now()
    claims = access_token.build_claims(
        issuer=provider.settings.issuer, client_id=client.client_id, subject=client.client_id,
        audience=resource.uri, scope=client.capabilities.to_scope(),
        ttl=min(CATALOGUE_TOKEN_TTL, provider.settings.access_token_ttl), now=now)
    token = access_token.sign(provider.keys.signer(now), claims)
    with audit.transaction(provider.engine) as tx:
        tx.record(audit.Record("token.issued", actor, client_id=client.client_id, jti=claims["jti"], ts=now, data={
            "grant_type": "catalogue_sync", "scope": claims["scope"], "aud": resource.uri, "exp": claims["exp"]}))
    return token, client.capabilities


Lister = Callable[[str | None], Awaitable[Any]]


async def _pages(list_page: Lister, kind: str, limits: Limits) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(limits.max_pages):
        page = await list_page(cursor)
        items = getattr(page, kind, None)
        if not isinstance(items, list):
            raise CatalogueError(f"the server's {kind}/list result has no {kind} list")
        entries.extend(item.model_dump(by_alias=True, mode="json", exclude_none=True) for item in items)
        if len(entries) > limits.max_entries:
            raise CatalogueError(f"the server lists more than {limits.max_entries} {kind}")
        cursor = page.next_cursor
        if not cursor:
            return entries
    raise CatalogueError(f"the server's {kind} list has more than {limits.max_pages} pages")


async def fetch(url: str, token: str, capabilities: CapabilitySet, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The raw catalogue of the MCP server at ``url``: each list the token's capabilities allow."""
    import httpx2
    from mcp import Client, MCPError
    from mcp.client.streamable_http import streamable_http_client

    bounded = _Bounded(limits.max_bytes)

    async def run() -> dict[str, Any]:
        raw: dict[str, Any] = {}
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, transport=bounded.transport(),
                                  timeout=limits.timeout, follow_redirects=False)
        async with http, Client(streamable_http_client(url, http_client=http), read_timeout_seconds=limits.timeout,
                                raise_exceptions=True) as client:
            listers: dict[str, Lister] = {
                "tools": lambda c: client.list_tools(cursor=c, cache_mode="refresh"),
                "resources": lambda c: client.list_resources(cursor=c, cache_mode="refresh"),
                "prompts": lambda c: client.list_prompts(cursor=c, cache_mode="refresh"),
            }
            for kind, lister in listers.items():
                if not capabilities.allows_list(f"{kind}/list"):
                    raw[kind] = []  # the token cannot list them: the middleware would refuse
                    continue
                try:
                    raw[kind] = await _pages(lister, kind, limits)
                except MCPError as exc:
                    if getattr(getattr(exc, "error", None), "code", None) == -32601:  # method not found
                        raw[kind] = []
                        continue
                    raise
        return raw

    try:
        return await asyncio.wait_for(run(), limits.timeout)
    except CatalogueError:
        raise
    except TimeoutError:
        raise CatalogueError(f"the MCP server at {url} did not answer within {limits.timeout:g} s") from None
    except BaseException as exc:  # the client wraps failures in exception groups; flatten them
        if isinstance(exc, (KeyboardInterrupt, SystemExit, asyncio.CancelledError)):
            raise
        if bounded.exceeded:
            raise CatalogueError(f"the MCP server at {url} sent more than {limits.max_bytes} bytes") from None
        raise CatalogueError(f"cannot list the catalogue of {url}: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    inner = getattr(exc, "exceptions", None)
    if inner:
        return _describe(inner[0])
    text = f"{type(exc).__name__}: {exc}".strip()
    return text[:300]


def sync(provider: Provider, uri: str, *, actor: str = "cli", limits: Limits = DEFAULT_LIMITS) -> ResourceRecord:
    """Pull, check and store the catalogue of one registered resource (blocking; runs its own loop)."""
    resource = provider.resources.get(uri)
    if resource is None:
        raise CatalogueError(f"no resource {uri!r}")
    token, capabilities = mint_token(provider, resource, actor=actor)
    raw = asyncio.run(fetch(resource.uri, token, capabilities, limits))
    return provider.resources.set_catalogue(resource.uri, normalise(raw, limits), actor=actor)


def refresh_stale(provider: Provider, max_age: int, *, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """Maintenance: re-pull catalogues older than ``max_age`` (resources with a catalogue client).
    One failure is logged and does not stop the others; returns maintenance events."""
    events: list[str] = []
    now = clock.now()
    for resource in provider.resources.list():
        if resource.client_id is None or (resource.catalogue_updated_at or 0) > now - max_age:
            continue
        try:
            sync(provider, resource.uri, actor="maintenance", limits=limits)
            events.append(f"catalogue of {resource.uri} refreshed")
        except (IdPError, OSError) as exc:
            log.warning("catalogue refresh failed", extra={"fields": {"uri": resource.uri, "error": str(exc)}})
    return events
