"""Client ID Metadata Documents in SQL, and the client resolver that uses them.

A fetched document is kept in ``client_metadata_documents`` (its text, ETag and expiry from
the HTTP cache headers) and materialised as a ``clients`` row whose ``client_id`` is the URL
(``registered_by = 'cimd'``, no capabilities of its own, unreviewed), so that every other part
of the IdP — the token endpoint included — finds it with ``stores.clients.get``. An operator
who disables that row (``idp clients disable URL``) stops the client: its document is not
fetched again while it is disabled.

:class:`MetadataDocumentResolver` is the provider's ``client_resolver``: an https client_id is
resolved through its document (from the cache while fresh, else fetched or revalidated with
the ETag); any other id is a registered client. Fetches are single-flight per URL, limited in
number at once, and a failure is remembered for a short while, so that authorization requests
cannot make the IdP fetch at will.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from . import audit, blocking, clock
from .clients import ClientRegistry
from .config import Settings
from .dynamic_clients import derived_name, unused
from .models import Client, ClientMetadataDocument
from .oauth2 import cimd, cimd_fetch
from .oauth2.cimd import ClientDocumentError
from .oauth2.client import METADATA_DOCUMENT, ClientRecord
from .oauth2.client_metadata import ClientMetadata
from .oauth2.throttle import _Buckets

log = logging.getLogger("cbst.idp")
_docs = ClientMetadataDocument.__table__  # type: ignore[attr-defined]
_clients = Client.__table__  # type: ignore[attr-defined]
T = TypeVar("T")

#: How long a failed fetch or invalid document is remembered (per URL, per process).
FAILURE_TTL = 30.0
MAX_REMEMBERED = 10_000
#: Fetches in flight at once (per process), whatever the number of URLs.
MAX_CONCURRENT_FETCHES = 8


@dataclass(frozen=True)
class CachedDocument:
    url: str
    document: str
    etag: str | None
    fetched_at: int
    expires_at: int


class MetadataDocuments:
    """The cache table and the materialised ``clients`` rows."""

    def __init__(self, engine: Engine, clients: ClientRegistry) -> None:
        self._engine = engine
        self._clients = clients

    def cached(self, url: str) -> CachedDocument | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(_docs).where(_docs.c.url == url)).first()
        return CachedDocument(row.url, row.document, row.etag, row.fetched_at, row.expires_at) if row else None

    def store(self, url: str, meta: ClientMetadata, document: str, etag: str | None, expires_at: int) -> ClientRecord:
        """Keep the document and make (or update) its client row, in one transaction."""
        now = clock.now()
        meta_json = json.dumps(meta.to_json(), separators=(",", ":"), sort_keys=True)
        jwks = meta.extra.get("jwks") if meta.token_endpoint_auth_method == "private_key_jwt" else None
        values = {"auth_method": meta.token_endpoint_auth_method,
                  "jwks": json.dumps(jwks, separators=(",", ":")) if jwks else None,
                  "redirect_uris": json.dumps(list(meta.redirect_uris)),
                  "grant_types": json.dumps(list(meta.grant_types)), "client_metadata": meta_json}
        doc_row = {"document": document, "etag": etag[:256] if etag else None, "fetched_at": now,
                   "expires_at": expires_at}
        try:
            with audit.transaction(self._engine) as tx:
                if tx.conn.execute(update(_docs).where(_docs.c.url == url).values(**doc_row)).rowcount == 0:
                    tx.conn.execute(insert(_docs), [{"url": url, **doc_row}])
                existing = tx.conn.execute(select(_clients).where(_clients.c.client_id == url)).first()
                data = {"redirect_uris": list(meta.redirect_uris), "client_name": meta.client_name,
                        "auth_method": meta.token_endpoint_auth_method, "registered_by": METADATA_DOCUMENT}
                if existing is None:
                    host = url.split("/")[2].split(":")[0]
                    name = derived_name("cimd", host, hashlib.sha256(url.encode()).hexdigest()[:10])
                    tx.conn.execute(insert(_clients), [{
                        "client_id": url, "name": name, "secret_hash": None, "capabilities": "", "audiences": "[]",
                        "enabled": True, "created_at": now, "updated_at": now, "kind": "client",
                        "registered_by": METADATA_DOCUMENT, "registration_token_hash": None, "expires_at": None,
                        **values}])
                    tx.record(audit.Record("client.registered", "cimd", client_id=url, data={"name": name, **data}))
                elif any(getattr(existing, k) != v for k, v in values.items()):
                    tx.conn.execute(update(_clients).where(_clients.c.client_id == url)
                                    .values(updated_at=now, **values))
                    tx.record(audit.Record("client.updated", "cimd", client_id=url, data=data))
        except IntegrityError:  # another process materialised it at the same moment
            pass
        client = self._clients.get(url)
        if client is None:
            raise ClientDocumentError("the client could not be stored; retry")
        return client

    def prune(self, unused_ttl: int) -> int:
        """Forget documents expired for ``unused_ttl`` whose client never got a token (and that
        client), so a stream of made-up document URLs does not grow the tables for ever."""
        cutoff = clock.now() - unused_ttl
        with audit.transaction(self._engine) as tx:
            stale = [r.url for r in tx.conn.execute(select(_docs.c.url).where(_docs.c.expires_at < cutoff).limit(1000))]
            if not stale:
                return 0
            victims = [r.client_id for r in tx.conn.execute(select(_clients.c.client_id).where(
                _clients.c.client_id.in_(stale), _clients.c.registered_by == METADATA_DOCUMENT, unused(_clients)))]
            tx.conn.execute(delete(_docs).where(_docs.c.url.in_(stale)))
            if victims:
                tx.conn.execute(delete(_clients).where(_clients.c.client_id.in_(victims)))
                tx.record(audit.Record("client.expired", "maintenance", data={
                    "clients": victims, "reason": "metadata document expired and never used"}))
        return len(stale)


class MetadataDocumentResolver:
    """``Stores.client_resolver``: registered clients, and clients by metadata document URL."""

    def __init__(self, settings: Settings, clients: ClientRegistry, documents: MetadataDocuments, *,
                 clock_: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clients = clients
        self.documents = documents
        self.limits = cimd_fetch.FetchLimits(
            max_bytes=settings.cimd_max_bytes, connect_timeout=settings.cimd_connect_timeout,
            total_timeout=settings.cimd_timeout, allowed_hosts=tuple(settings.cimd_allowed_hosts),
            ca_file=str(settings.cimd_ca_file) if settings.cimd_ca_file else None)
        self.fetches = 0  # fetches started by this process (operators' metrics, tests)
        self._clock = clock_
        self._failures: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._semaphore: asyncio.Semaphore | None = None
        self._audit = _Buckets(settings.registration_audits, 60) if settings.registration_audits else None

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        if blocking.in_worker():  # already off the server's loop
            return fn(*args)
        return await blocking.call(self.settings.database_timeout, fn, *args)

    async def resolve(self, client_id: str) -> ClientRecord | None:
        if not isinstance(client_id, str) or not client_id:
            return None
        if not self.settings.cimd_enabled or not cimd.is_document_url(client_id):
            return await self._db(self.clients.get, client_id)
        url = cimd.check_url(client_id)
        existing = await self._db(self.clients.get, url)
        if existing is not None and (not existing.enabled or existing.registered_by != METADATA_DOCUMENT):
            return existing  # disabled by the operator: no fetch; (or not a document client at all)
        cached = await self._db(self.documents.cached, url)
        if existing is not None and cached is not None and cached.expires_at > clock.now():
            return existing
        self._recent_failure(url)
        lock = self._locks.setdefault(url, asyncio.Lock())
        try:
            async with lock:  # single flight: concurrent requests for one URL share one fetch
                cached = await self._db(self.documents.cached, url)
                existing = await self._db(self.clients.get, url)
                if existing is not None and cached is not None and cached.expires_at > clock.now():
                    return existing
                self._recent_failure(url)
                return await self._refresh(url, cached)
        finally:
            if not lock.locked() and self._locks.get(url) is lock:
                del self._locks[url]

    def _recent_failure(self, url: str) -> None:
        failed = self._failures.get(url)
        if failed is not None:
            if self._clock() < failed[0]:
                raise ClientDocumentError(failed[1])
            del self._failures[url]

    async def _refresh(self, url: str, cached: CachedDocument | None) -> ClientRecord:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(MAX_CONCURRENT_FETCHES)
        try:
            async with self._semaphore:
                self.fetches += 1
                result = await cimd_fetch.fetch(url, self.limits, etag=cached.etag if cached else None)
            now = clock.now()
            lifetime = cimd.cache_lifetime(result.headers, now, minimum=self.settings.cimd_min_cache,
                                           maximum=self.settings.cimd_max_cache)
            if result.status == 304 and cached is not None:
                meta = cimd.parse_document(url, cached.document.encode())
                return await self._db(self.documents.store, url, meta, cached.document, result.headers.get("etag")
                                      or cached.etag, now + lifetime)
            meta = cimd.parse_document(url, result.body)
            return await self._db(self.documents.store, url, meta, result.body.decode("utf-8"),
                                  result.headers.get("etag"), now + lifetime)
        except cimd_fetch.FetchError as exc:
            raise await self._failed(url, f"cannot fetch the client metadata document: {exc}") from None
        except ClientDocumentError as exc:
            raise await self._failed(url, exc.description) from None

    async def _failed(self, url: str, reason: str) -> ClientDocumentError:
        self._failures[url] = (self._clock() + FAILURE_TTL, reason)
        self._failures.move_to_end(url)
        while len(self._failures) > MAX_REMEMBERED:
            self._failures.popitem(last=False)
        log.info("client metadata document refused", extra={"fields": {"url": url[:200], "reason": reason}})
        if self._audit is not None and not self._audit.retry_after("audit", self._clock()):
            self._audit.take("audit", self._clock())
            rec = audit.Record("client.document_refused", "cimd", data={"url": url, "reason": reason})
            try:
                await self._db(_record, self.documents, rec)
            except Exception:  # the refusal stands even if its record cannot be written now
                log.exception("could not audit a refused client metadata document")
        return ClientDocumentError(reason)


def _record(documents: MetadataDocuments, rec: audit.Record) -> None:
    with audit.transaction(documents._engine) as tx:
        tx.record(rec)
