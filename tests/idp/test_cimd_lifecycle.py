"""What happens to metadata-document clients over time: the maintenance loop forgets documents
long expired whose client never got a token (and keeps those in use); an approved document
client is pinned (never refetched). SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cimd_testing import DocumentServer, Route, make_provider
from registration_testing import mark_used
from sqlalchemy import update

from idp import clock
from idp.models import ClientMetadataDocument
from idp.provider import Provider

_docs = ClientMetadataDocument.__table__  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server(ca: trustme.CA, tmp_path: Path) -> Iterator[DocumentServer]:
    srv = DocumentServer(ca, tmp_path)
    yield srv
    srv.close()


@pytest.fixture
def provider(db_url: str, tmp_path: Path, ca: trustme.CA) -> Iterator[Provider]:
    prov = make_provider(db_url, tmp_path, ca, unused_client_ttl=60, cimd_min_cache=0)
    yield prov
    prov.close()


def _expire(prov: Provider, url: str, ago: int) -> None:
    with prov.engine.begin() as conn:
        conn.execute(update(_docs).where(_docs.c.url == url).values(expires_at=clock.now() - ago))


def test_maintenance_forgets_long_expired_unused_documents(provider: Provider, server: DocumentServer) -> None:
    idle = server.document("/idle.json")
    used = server.document("/used.json")
    fresh = server.document("/fresh.json")
    for url in (idle, used, fresh):
        assert asyncio.run(provider.client_resolver.resolve(url)) is not None
    mark_used(provider, used)
    _expire(provider, idle, 120)
    _expire(provider, used, 120)
    _expire(provider, fresh, 30)  # expired, but not for unused_client_ttl yet
    events = provider.maintain()
    assert provider.clients.get(idle) is None and provider.metadata_documents.cached(idle) is None
    assert provider.clients.get(used) is not None  # in use: kept (its document is refetched when needed)
    assert provider.clients.get(fresh) is not None and provider.metadata_documents.cached(fresh) is not None
    assert any("unused registrations" in e for e in events)
    # A forgotten client comes back through its document, as new.
    assert asyncio.run(provider.client_resolver.resolve(idle)) is not None


def test_approved_document_client_is_pinned(provider: Provider, server: DocumentServer) -> None:
    url = server.document("/client.json", headers={"Cache-Control": "max-age=0"})
    asyncio.run(provider.client_resolver.resolve(url))
    approved = provider.clients.approve(url)
    assert approved.reviewed and approved.registered_by == "operator"
    server.routes["/client.json"] = Route(500, b"{}")
    _expire(provider, url, 10)
    again = asyncio.run(provider.client_resolver.resolve(url))
    assert again is not None and again.reviewed and again.redirect_uris == approved.redirect_uris
    assert server.hits["/client.json"] == 1
