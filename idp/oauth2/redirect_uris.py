"""Redirect URIs: registration rules and exact matching (RFC 6749 §3.1.2, RFC 8252 §7, OAuth 2.1 §2.3).

- A redirect URI is absolute, has no fragment (RFC 6749 §3.1.2) and no userinfo, and is at
  most 512 characters of printable ASCII without spaces.
- ``https`` anywhere; ``http`` only on a loopback host (``127.0.0.1``, ``[::1]`` or
  ``localhost``; RFC 8252 §7.3, §8.3); a private-use scheme for native apps, which must be a
  reverse domain name (it contains a ``.``: ``com.example.app:/cb``, RFC 8252 §7.1) — so
  ``javascript:``, ``data:``, ``file:`` and friends can never be registered.
- Matching is exact string comparison (OAuth 2.1 §4.1.3), with one exception: a registered
  loopback URI matches a request for the same scheme, host, path and query on ANY port
  (RFC 8252 §7.3: native apps take an ephemeral port when they start).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

MAX_LENGTH = 512
MAX_PER_CLIENT = 16
LOOPBACK_HOSTS = ("127.0.0.1", "[::1]", "localhost")
# http://<loopback host>[:port][path][?query]: nothing else (no userinfo, no fragment).
_LOOPBACK = re.compile(r"http://(127\.0\.0\.1|\[::1\]|localhost)(?::(\d{1,5}))?(/[^?#]*)?(\?[^#]*)?")
_SCHEME = re.compile(r"[a-z][a-z0-9+.\-]*")


class RedirectUriError(ValueError):
    """A redirect URI that cannot be registered; the message says why."""


def _loopback(uri: str) -> tuple[str, str, str] | None:
    """(host, path, query) of an http loopback URI with a valid port, else None."""
    m = _LOOPBACK.fullmatch(uri)
    if m is None or (m.group(2) is not None and not 0 < int(m.group(2)) < 65536):
        return None
    return m.group(1), m.group(3) or "", m.group(4) or ""


def validate(uri: object) -> str:
    """The redirect URI if it may be registered, else RedirectUriError (registration, CLI, CIMD)."""
    if not isinstance(uri, str) or not uri:
        raise RedirectUriError("a redirect URI must be a non-empty string")
    if len(uri) > MAX_LENGTH:
        raise RedirectUriError(f"redirect URI longer than {MAX_LENGTH} characters")
    if not uri.isascii() or not uri.isprintable() or " " in uri or "\\" in uri:
        raise RedirectUriError("redirect URI must be printable ASCII without spaces or backslashes")
    if "#" in uri:
        raise RedirectUriError("redirect URI must not have a fragment (RFC 6749 section 3.1.2)")
    scheme, sep, _ = uri.partition(":")
    if not sep or not _SCHEME.fullmatch(scheme):
        raise RedirectUriError("redirect URI must be absolute, with a lower-case scheme")
    if scheme == "http":
        if _loopback(uri) is None:
            raise RedirectUriError("http redirect URIs are allowed only on loopback (http://127.0.0.1, "
                                   "http://[::1], http://localhost; RFC 8252 section 7.3); use https")
        return uri
    if scheme == "https":
        parts = urlsplit(uri)
        if not parts.hostname or "@" in parts.netloc:
            raise RedirectUriError("https redirect URI must name a host, without userinfo")
        try:
            parts.port  # noqa: B018  (raises on a malformed port)
        except ValueError:
            raise RedirectUriError("https redirect URI has a malformed port") from None
        return uri
    if "." not in scheme:
        raise RedirectUriError("a private-use scheme must be a reverse domain name such as com.example.app "
                               "(RFC 8252 section 7.1); other schemes need https")
    if uri[len(scheme) + 1:].startswith("//") and not uri[len(scheme) + 3:]:
        raise RedirectUriError("private-use redirect URI has no path")
    return uri


def validate_all(uris: Iterable[object]) -> tuple[str, ...]:
    """Every URI validated, duplicates dropped, at most MAX_PER_CLIENT."""
    out = tuple(dict.fromkeys(validate(u) for u in uris))
    if len(out) > MAX_PER_CLIENT:
        raise RedirectUriError(f"at most {MAX_PER_CLIENT} redirect URIs per client")
    return out


def matches(registered: str, requested: str) -> bool:
    """Whether ``requested`` is the registered redirect URI: byte for byte, or a registered
    loopback URI on another port (same host, path and query)."""
    if requested == registered:
        return True
    reg = _loopback(registered)
    return reg is not None and _loopback(requested) == reg


def find(registered: Iterable[str], requested: str) -> str | None:
    """The requested redirect URI if it matches one of the registered ones (None otherwise).
    The requested form is what the code is bound to and where the response goes."""
    if not isinstance(requested, str) or len(requested) > MAX_LENGTH or "#" in requested:
        return None
    return requested if any(matches(r, requested) for r in registered) else None
