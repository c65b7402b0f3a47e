"""What a resource server needs from its IdP, fetched over HTTP and cached: the issuer's
metadata (RFC 8414), its signing keys (JWKS, RFC 7517) and its revocation list (the CBST
extension ``cbst_revocation_list_uri``).

* Metadata is fetched from ``{issuer}/.well-known/oauth-authorization-server`` (RFC 8414 §3,
  path inserted for issuers with a path), falling back to OpenID Connect discovery; its
  ``issuer`` must equal the configured issuer byte for byte (RFC 8414 §3.3).
* The JWKS is cached for its ``Cache-Control: max-age`` (bounded; a default when absent),
  revalidated with ``If-None-Match``. A token naming an unknown ``kid`` triggers one refetch,
  at most once per ``jwks_min_refetch_interval`` (counted from the last such refetch, whatever
  other fetches happened since) however many such tokens arrive, so forged
  kids cannot make the server hammer the IdP. When the IdP is unreachable a stale JWKS keeps
  being used (keys are public; a key is retired only after its tokens expired).
* The revocation list is refetched every ``revocation_poll_interval`` seconds (a request that
  finds it stale waits for the single in-flight fetch), and after
  ``revocation_fail_closed_after`` seconds without a successful fetch every token is refused
  — the bound on how long a revoked token keeps working is the poll interval (docs).

All fetches are single-flight (one in progress at a time) and bounded in size.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

from ..errors import CBSTError
from ..jws import JWSError, PublicKey

__all__ = ["IssuerClient", "IssuerUnavailable"]

MAX_DOCUMENT_BYTES = 1024 * 1024
#: The revocation list grows with revocations of unexpired tokens (~60 bytes each).
MAX_REVOCATION_LIST_BYTES = 64 * 1024 * 1024
MAX_KEYS = 64
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|[,\s])(no-store|no-cache)(?:$|[,\s=])", re.IGNORECASE)


class IssuerUnavailable(CBSTError):
    """The IdP could not be reached or answered nonsense; requests get 503."""


def cache_lifetime(headers: Mapping[str, str], default: float, cap: float) -> float:
    value = headers.get("cache-control", "")
    if _NO_CACHE.search(value):
        return 0.0
    m = _MAX_AGE.search(value)
    if m is None:
        return min(default, cap)
    return min(float(m.group(1)), cap)


def metadata_urls(issuer: str) -> list[str]:
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    return [
        f"{origin}/.well-known/oauth-authorization-server{path}",
        f"{origin}/.well-known/openid-configuration{path}",
        f"{issuer}/.well-known/openid-configuration",
    ]


class IssuerClient:
    def __init__(
        self,
        issuer: str,
        *,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = 5.0,
        jwks_min_refetch_interval: float = 10.0,
        jwks_default_max_age: float = 300.0,
        jwks_max_age_cap: float = 86_400.0,
        revocation_poll_interval: float = 10.0,
        revocation_fail_closed_after: float | None = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self._client = http_client
        self._own_client = http_client is None
        self._timeout = timeout
        self._min_refetch = jwks_min_refetch_interval
        self._default_max_age = jwks_default_max_age
        self._max_age_cap = jwks_max_age_cap
        self._poll = revocation_poll_interval
        self._fail_closed_after = revocation_fail_closed_after
        self._clock = clock
        self._lock_meta = anyio.Lock()
        self._lock_jwks = anyio.Lock()
        self._lock_revoked = anyio.Lock()
        self._meta: dict[str, Any] | None = None
        self._meta_expires = float("-inf")
        self._keys: dict[str, PublicKey] = {}
        self._jwks_etag: str | None = None
        self._jwks_expires = float("-inf")
        self._jwks_fetched_at = float("-inf")
        self._unknown_kid_fetched_at = float("-inf")
        self._revoked: frozenset[str] = frozenset()
        self._revoked_fresh_until = float("-inf")
        self._revoked_ok_at: float | None = None
        self._revocation_supported: bool | None = None
        self._closed: str | None = None  # why tokens are refused (fail closed), if they are
        #: Counters for tests and operators.
        self.stats = {"metadata_fetches": 0, "jwks_fetches": 0, "revocation_fetches": 0,
                      "unknown_kid_refetches": 0, "unknown_kid_throttled": 0}
        self.on_revoked: Callable[[frozenset[str]], object] | None = None

    # --- HTTP -------------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False,
                                             headers={"Accept": "application/json"})
        return self._client

    async def _get(self, url: str, headers: Mapping[str, str] | None = None, *,
                   limit: int = MAX_DOCUMENT_BYTES) -> httpx.Response:
        try:
            async with self._http().stream("GET", url, headers=headers, timeout=self._timeout) as resp:
                chunks, size = [], 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise IssuerUnavailable(f"{url}: document larger than {limit} bytes")
                    chunks.append(chunk)
                resp._content = b"".join(chunks)
                return resp
        except httpx.HTTPError as exc:
            raise IssuerUnavailable(f"{url}: {type(exc).__name__}") from None

    @staticmethod
    def _json(resp: httpx.Response, what: str) -> dict[str, Any]:
        if resp.status_code != 200:
            raise IssuerUnavailable(f"{what}: HTTP {resp.status_code}")
        try:
            doc = json.loads(resp.content)
        except ValueError:
            raise IssuerUnavailable(f"{what}: not JSON") from None
        if not isinstance(doc, dict):
            raise IssuerUnavailable(f"{what}: not a JSON object")
        return doc

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- metadata ---------------------------------------------------------------------------

    async def metadata(self) -> dict[str, Any]:
        if self._meta is not None and self._clock() < self._meta_expires:
            return self._meta
        async with self._lock_meta:
            if self._meta is not None and self._clock() < self._meta_expires:
                return self._meta
            try:
                self._meta, lifetime = await self._fetch_metadata()
                self._meta_expires = self._clock() + max(lifetime, 60.0)
            except IssuerUnavailable:
                if self._meta is None:
                    raise
                self._meta_expires = self._clock() + self._min_refetch  # keep the stale copy
            return self._meta

    async def _fetch_metadata(self) -> tuple[dict[str, Any], float]:
        errors = []
        for url in metadata_urls(self.issuer):
            self.stats["metadata_fetches"] += 1
            try:
                resp = await self._get(url)
                if resp.status_code == 404:
                    errors.append(f"{url}: 404")
                    continue
                doc = self._json(resp, url)
            except IssuerUnavailable as exc:
                errors.append(str(exc))
                continue
            if doc.get("issuer") != self.issuer:
                raise IssuerUnavailable(f"{url}: metadata issuer {str(doc.get('issuer'))[:200]!r} is not "
                                        f"{self.issuer!r}")
            jwks_uri = doc.get("jwks_uri")
            if not isinstance(jwks_uri, str) or urlsplit(jwks_uri).scheme not in ("http", "https"):
                raise IssuerUnavailable(f"{url}: metadata has no jwks_uri")
            return doc, cache_lifetime(resp.headers, 3600.0, self._max_age_cap)
        raise IssuerUnavailable("issuer metadata unavailable: " + "; ".join(errors))

    # --- keys ---------------------------------------------------------------------------------

    @property
    def cached_keys(self) -> Mapping[str, PublicKey]:
        return self._keys

    def fresh_keys(self) -> Mapping[str, PublicKey] | None:
        """The key set if it is within its cache lifetime, else None (then await :meth:`keys`)."""
        return self._keys if self._keys and self._clock() < self._jwks_expires else None

    async def keys(self) -> Mapping[str, PublicKey]:
        """The current key set, refetched when its cache lifetime has passed."""
        if self._keys and self._clock() < self._jwks_expires:
            return self._keys
        await self._refresh_jwks(reason="expired")
        return self._keys

    async def refetch_for_unknown_kid(self) -> bool:
        """Refetch the JWKS once because a token named an unknown kid; False when throttled.

        The limit counts from the last refetch *for an unknown kid*, not from any fetch: a JWKS
        fetched (on expiry, or first use) a moment before ``idp keys rotate --now`` cannot hold
        the new key, and must not delay the refetch that brings it.
        """
        fetched_at = self._jwks_fetched_at
        async with self._lock_jwks:
            if self._jwks_fetched_at != fetched_at:
                return True  # someone else refetched while we waited: retry with that
            if self._clock() - self._unknown_kid_fetched_at < self._min_refetch:
                self.stats["unknown_kid_throttled"] += 1
                return False
            self.stats["unknown_kid_refetches"] += 1
            self._unknown_kid_fetched_at = self._clock()
            await self._refresh_jwks_locked()
            return True

    async def _refresh_jwks(self, reason: str) -> None:
        async with self._lock_jwks:
            if self._keys and self._clock() < self._jwks_expires:
                return
            try:
                await self._refresh_jwks_locked()
            except IssuerUnavailable:
                if not self._keys:
                    raise
                # Stale keys are better than none; try again after the refetch interval.
                self._jwks_expires = self._clock() + self._min_refetch

    async def _refresh_jwks_locked(self) -> None:
        meta = await self.metadata()
        headers = {"If-None-Match": self._jwks_etag} if self._jwks_etag and self._keys else None
        self.stats["jwks_fetches"] += 1
        self._jwks_fetched_at = self._clock()
        resp = await self._get(meta["jwks_uri"], headers)
        lifetime = cache_lifetime(resp.headers, self._default_max_age, self._max_age_cap)
        if resp.status_code == 304 and self._keys:
            self._jwks_expires = self._clock() + lifetime
            return
        doc = self._json(resp, "jwks")
        raw = doc.get("keys")
        if not isinstance(raw, list):
            raise IssuerUnavailable("jwks: no keys array")
        keys: dict[str, PublicKey] = {}
        for jwk in raw[:MAX_KEYS]:
            try:
                key = PublicKey.from_jwk(jwk)
            except JWSError:
                continue  # a key we cannot use (other alg, encryption key...) is skipped
            if isinstance(jwk, dict) and jwk.get("use", "sig") != "sig":
                continue
            keys[key.kid] = key
        self._keys = keys
        self._jwks_etag = resp.headers.get("etag")
        self._jwks_expires = self._clock() + lifetime

    # --- revocation ---------------------------------------------------------------------------

    def is_revoked(self, jti: str) -> bool:
        return jti in self._revoked

    @property
    def revoked(self) -> frozenset[str]:
        return self._revoked

    def revocations_fresh(self) -> bool:
        """True when the revocation list is fresh and tokens may be accepted (no await needed)."""
        return self._closed is None and self._clock() < self._revoked_fresh_until

    async def ensure_revocations(self) -> None:
        """Make sure the revocation list is at most ``revocation_poll_interval`` old.

        Raises :class:`IssuerUnavailable` when it has not been fetched successfully for longer
        than ``revocation_fail_closed_after`` (or never).
        """
        if self._clock() < self._revoked_fresh_until:
            if self._closed is not None:
                raise IssuerUnavailable(self._closed)
            return
        async with self._lock_revoked:
            if self._clock() < self._revoked_fresh_until:
                if self._closed is not None:
                    raise IssuerUnavailable(self._closed)
                return
            try:
                await self._refresh_revoked()
                self._closed = None
            except IssuerUnavailable as exc:
                now = self._clock()
                self._revoked_fresh_until = now + min(self._poll, 1.0)  # retry back-off
                if self._fail_closed_after is not None and (
                    self._revoked_ok_at is None or now - self._revoked_ok_at > self._fail_closed_after
                ):
                    self._closed = f"revocation list unavailable: {exc}"
                    raise IssuerUnavailable(self._closed) from None

    async def _refresh_revoked(self) -> None:
        meta = await self.metadata()
        url = meta.get("cbst_revocation_list_uri")
        if not isinstance(url, str):
            # The IdP publishes no revocation list: nothing to check (documented).
            self._revocation_supported = False
            self._revoked_ok_at = self._clock()
            self._revoked_fresh_until = self._clock() + self._poll
            return
        self._revocation_supported = True
        self.stats["revocation_fetches"] += 1
        resp = await self._get(url, limit=MAX_REVOCATION_LIST_BYTES)
        doc = self._json(resp, "revocation list")
        entries = doc.get("revoked")
        if not isinstance(entries, list):
            raise IssuerUnavailable("revocation list: no revoked array")
        jtis = frozenset(e["jti"] for e in entries if isinstance(e, dict) and isinstance(e.get("jti"), str))
        new = jtis - self._revoked
        self._revoked = jtis
        now = self._clock()
        self._revoked_ok_at = now
        self._revoked_fresh_until = now + self._poll
        if new and self.on_revoked is not None:
            self.on_revoked(new)
