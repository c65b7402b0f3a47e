"""Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; MCP 2026-07-28
"Client Registration"): the client identifier is an https URL, and the JSON document there is
the client's metadata.

This module holds the rules that need no network or storage: which client ids are document
URLs (§3), what a fetched document must hold (§4), and how long it may be cached (§4.3, by the
HTTP cache headers, bounded by the operator's minimum and maximum). The fetch is in
:mod:`idp.oauth2.cimd_fetch`, the cache and the ``clients`` row in
:mod:`idp.client_metadata_documents`.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Mapping
from urllib.parse import urlsplit

from . import client_metadata
from .client_metadata import ClientMetadata, InvalidClientMetadata
from .errors import InvalidClient, OAuthError

MAX_URL = 512  # the clients.client_id column
#: §4.1: a document may name private_key_jwt with its keys; shared secrets are impossible (no
#: one could have been given one).
DOCUMENT_AUTH_METHODS = ("none", "private_key_jwt")
_SECRET_METHODS = ("client_secret_basic", "client_secret_post", "client_secret_jwt")


class ClientDocumentError(InvalidClient):
    """The client_id names a metadata document that cannot be used (bad URL, fetch failed,
    invalid document). ``invalid_client`` per MCP 2026-07-28; the authorization endpoint shows
    it on its error page and never redirects (the redirect URI is unverified)."""

    status = 400


def is_document_url(client_id: str) -> bool:
    """Whether a client_id is meant as a metadata document URL (then it must be a valid one:
    an ``http://`` id is refused as such, with the reason, rather than as an unknown client)."""
    return client_id[:8].lower() == "https://" or client_id[:7].lower() == "http://"


def check_url(client_id: str) -> str:
    """§3: https scheme, a host, a path; no fragment, no user information, no dot segments.
    A query is discouraged (SHOULD NOT) and refused here: the id must be one stable URL."""
    if len(client_id) > MAX_URL or not client_id.isascii() or not client_id.isprintable() or " " in client_id:
        raise ClientDocumentError(f"a client_id URL is at most {MAX_URL} printable ASCII characters")
    try:
        parts = urlsplit(client_id)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ClientDocumentError("the client_id is not a valid URL") from None
    if not client_id.startswith("https://"):
        raise ClientDocumentError("a client_id URL must use the https scheme in lower case")
    if "#" in client_id:
        raise ClientDocumentError("a client_id URL must not have a fragment")
    if "@" in parts.netloc:
        raise ClientDocumentError("a client_id URL must not contain user information")
    if not parts.hostname:
        raise ClientDocumentError("a client_id URL needs a host")
    if parts.query or "?" in client_id:
        raise ClientDocumentError("a client_id URL must not have a query")
    if not parts.path or parts.path == "/":
        raise ClientDocumentError("a client_id URL must have a path (https://app.example/client.json)")
    if any(seg.lower().replace("%2e", ".") in (".", "..") for seg in parts.path.split("/")):
        raise ClientDocumentError("a client_id URL must not contain . or .. path segments")
    if "\\" in client_id:
        raise ClientDocumentError("a client_id URL must not contain backslashes")
    return client_id


def parse_document(url: str, body: bytes) -> ClientMetadata:
    """§4: the document is a JSON object whose client_id equals the URL exactly, with the
    required members; no shared secret. Redirect URIs and other metadata as for registration."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ClientDocumentError("the client metadata document is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ClientDocumentError("the client metadata document is not a JSON object")
    if doc.get("client_id") != url:
        raise ClientDocumentError("the document's client_id does not equal its URL")
    if "client_secret" in doc or "client_secret_expires_at" in doc:
        raise ClientDocumentError("a client metadata document must not contain a client secret")
    if doc.get("token_endpoint_auth_method") in _SECRET_METHODS:
        raise ClientDocumentError("a client metadata document cannot use a shared-secret auth method")
    if not isinstance(doc.get("client_name"), str):
        raise ClientDocumentError("the client metadata document has no client_name")
    try:
        meta = client_metadata.validate(doc, auth_methods=DOCUMENT_AUTH_METHODS)
    except OAuthError as exc:
        raise ClientDocumentError(f"invalid client metadata document: {exc.description}") from None
    if meta.token_endpoint_auth_method == "private_key_jwt" and not ("jwks" in meta.extra or "jwks_uri" in meta.extra):
        raise ClientDocumentError("private_key_jwt needs jwks (or jwks_uri) in the document")
    if "jwks_uri" in meta.extra and "jwks" not in meta.extra:
        # Fetching a second URL would need the same SSRF care; embed the keys instead.
        raise ClientDocumentError("jwks_uri is not supported in metadata documents: embed jwks")
    return meta


def cache_lifetime(headers: Mapping[str, str], now: int, *, minimum: int, maximum: int) -> int:
    """Seconds the document may be used without refetching: ``max-age`` (less ``Age``), else
    ``Expires`` - ``Date``, else the minimum; always within [minimum, maximum]. ``no-store`` and
    ``no-cache`` count as zero, i.e. the minimum: refetching on every request would let anyone
    make the IdP fetch at will."""
    lifetime: float | None = None
    directives = _directives(headers.get("cache-control", ""))
    if "no-store" in directives or "no-cache" in directives:
        lifetime = 0
    elif "max-age" in directives:
        value = directives["max-age"]
        lifetime = int(value) if value.isdigit() else 0
        age = headers.get("age", "")
        if age.isdigit():
            lifetime -= int(age)
    elif "expires" in headers:
        expires = _http_date(headers["expires"])
        date = _http_date(headers.get("date", "")) or now
        lifetime = (expires - date) if expires is not None else 0
    if lifetime is None:
        lifetime = minimum
    return int(max(minimum, min(maximum, lifetime)))


def _directives(value: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in value.split(","):
        name, _, arg = item.strip().partition("=")
        if name:
            out.setdefault(name.lower(), arg.strip().strip('"'))
    return out


def _http_date(value: str) -> int | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return int(parsed.timestamp()) if parsed is not None else None


__all__ = ["DOCUMENT_AUTH_METHODS", "ClientDocumentError", "InvalidClientMetadata", "cache_lifetime", "check_url",
           "is_document_url", "parse_document"]
