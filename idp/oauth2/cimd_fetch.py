"""Fetching a Client ID Metadata Document without becoming an SSRF proxy
(draft-ietf-oauth-client-id-metadata-document §8.6; MCP 2026-07-28 security considerations).

The URL comes from anyone who can send an authorization request, so the fetch is the
attacker's request made from inside the IdP's network. Hence:

- ``https`` only, default port 443 or the one in the URL;
- the host name is resolved **once**; if any address it resolves to is not a public unicast
  address (private, loopback, link-local, multicast, reserved, CGNAT, documentation, or an IPv4
  address hidden in IPv6: mapped, 6to4, Teredo, NAT64), the fetch is refused — unless the
  operator allows that host (``cimd_allowed_hosts``);
- the connection goes to the checked address itself (TLS still verifies the certificate for
  the host name, sent as SNI): no second lookup, so no DNS-rebinding window;
- redirects are refused, never followed (a redirect would be a second, unchecked request);
- the body is read in chunks and the fetch fails past ``max_bytes``; connect and the whole
  exchange are bounded in time;
- the response must be ``200`` (or ``304`` to a revalidation) with a JSON content type.

HTTP/1.1 is spoken with ``h11`` over an asyncio TLS stream: a handful of lines, each limit
visible here rather than in the options of a general-purpose client.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Collection
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11

USER_AGENT = "cbst-idp (client-id-metadata-document fetcher)"
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_CGNAT = ipaddress.ip_network("100.64.0.0/10")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchError(Exception):
    """The document could not be fetched; the message says why (safe to show)."""


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = 16 * 1024
    connect_timeout: float = 3.0
    total_timeout: float = 5.0
    allowed_hosts: Collection[str] = ()  # hosts that may resolve to non-public addresses
    ca_file: str | None = None  # CA bundle instead of the system's (tests, private PKI)


@dataclass(frozen=True)
class FetchResult:
    status: int  # 200, or 304 (not modified: only when an ETag was sent)
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names, last value wins


def public_address(ip: IPAddress) -> bool:
    """True for a global unicast address, after unwrapping IPv4 addresses carried in IPv6."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address] = []
        if ip.ipv4_mapped is not None:
            embedded.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if any(ip in net for net in _NAT64):
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if int(ip) >> 32 == 0:
            return False  # ::/96: unspecified, loopback, the deprecated IPv4-compatible form
        if embedded and not all(public_address(e) for e in embedded):
            return False
    if ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_loopback or ip.is_link_local:
        return False
    if ip.is_private or not ip.is_global:
        return False
    return not (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT)


def _host_allowed(host: str, allowed: Collection[str]) -> bool:
    return host.lower().rstrip(".") in {h.lower().rstrip(".") for h in allowed}


async def resolve(host: str, port: int, allowed: Collection[str]) -> str:
    """The one address to connect to: resolved once, every answer checked."""
    literal = host.strip("[]")
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(literal)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError) as exc:
            raise FetchError(f"cannot resolve {host}: {exc.strerror if hasattr(exc, 'strerror') else exc}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
        if not addresses:
            raise FetchError(f"{host} has no address") from None
    if not _host_allowed(host, allowed):
        refused = [a for a in addresses if not public_address(a)]
        if refused:
            # Any non-public answer refuses the host: an attacker's name may mix public and private ones.
            raise FetchError(f"{host} resolves to a non-public address ({refused[0]}); "
                             "the operator can allow the host with cimd_allowed_hosts")
    return str(addresses[0])


def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def fetch(url: str, limits: FetchLimits, *, etag: str | None = None) -> FetchResult:
    """GET the document at ``url`` (already validated as a client identifier URL)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise FetchError("client metadata documents are fetched over https only")
    host = parts.hostname
    port = parts.port or 443
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        async with asyncio.timeout(limits.total_timeout):
            address = await resolve(host, port, limits.allowed_hosts)
            return await _get(address, host, port, target, limits, etag)
    except TimeoutError:
        raise FetchError(f"fetching the document took longer than {limits.total_timeout:g} s") from None


async def _get(address: str, host: str, port: int, target: str, limits: FetchLimits,
               etag: str | None) -> FetchResult:
    try:
        async with asyncio.timeout(limits.connect_timeout):
            reader, writer = await asyncio.open_connection(
                address, port, ssl=_tls_context(limits.ca_file), server_hostname=host,
                limit=min(limits.max_bytes, 64 * 1024))
    except TimeoutError:
        raise FetchError(f"connecting to {host} took longer than {limits.connect_timeout:g} s") from None
    except ssl.SSLError as exc:
        raise FetchError(f"TLS with {host} failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise FetchError(f"cannot connect to {host}: {exc.strerror or exc}") from None
    try:
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=8 * 1024)
        headers = [("Host", host if port == 443 else f"{host}:{port}"), ("User-Agent", USER_AGENT),
                   ("Accept", "application/json"), ("Accept-Encoding", "identity"), ("Connection", "close")]
        if etag:
            headers.append(("If-None-Match", etag))
        writer.write(conn.send(h11.Request(method="GET", target=target, headers=headers)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        return await _read_response(conn, reader, host, limits.max_bytes, etag is not None)
    except h11.ProtocolError as exc:
        raise FetchError(f"malformed HTTP response from {host}: {exc}") from None
    except (ssl.SSLError, OSError) as exc:
        raise FetchError(f"connection to {host} failed: {exc}") from None
    finally:
        writer.close()


async def _read_response(conn: h11.Connection, reader: asyncio.StreamReader, host: str, max_bytes: int,
                         revalidating: bool) -> FetchResult:
    response: h11.Response | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(8192))
            continue
        if isinstance(event, h11.Response):
            response = event
            status = event.status_code
            if 300 <= status < 400 and not (status == 304 and revalidating):
                raise FetchError(f"the document URL answered {status} (a redirect): redirects are not followed")
            if status not in (200, 304):
                raise FetchError(f"the document URL answered HTTP {status}")
            length = _headers(event).get("content-length")
            if length is not None and (not length.isdigit() or int(length) > max_bytes):
                raise FetchError(f"the document is larger than {max_bytes} bytes")
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > max_bytes:
                raise FetchError(f"the document is larger than {max_bytes} bytes")
        elif isinstance(event, h11.EndOfMessage):
            break
        elif isinstance(event, h11.ConnectionClosed):
            raise FetchError(f"{host} closed the connection before the document was complete")
        elif isinstance(event, h11.InformationalResponse):
            continue
    assert response is not None
    headers = _headers(response)
    if response.status_code == 200:
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
            raise FetchError(f"the document's content type is {media or 'missing'}, not application/json")
    return FetchResult(response.status_code, bytes(body), headers)


def _headers(response: h11.Response) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
