"""Protected resources (MCP servers) the IdP mints tokens for: the operator's allowlist (RFC 8707).

A token of the authorization code grant names one registered resource as its audience; an
authorization request for any other is refused (against a spoofed MCP server collecting tokens).
Each resource carries the catalogue of its MCP server (tools with titles, descriptions and
annotations; resources; prompts), so the consent page speaks in the server's own words.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from . import audit, clock
from .clients import ClientError, validate_audience
from .models import Resource
from .oauth2.resource import ResourceRecord

__all__ = ["ResourceRecord", "ResourceRegistry"]

_resources = Resource.__table__  # type: ignore[attr-defined]


class ResourceRegistry:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @staticmethod
    def _record(row: Any) -> ResourceRecord:
        return ResourceRecord(uri=row.uri, name=row.name, catalogue=json.loads(row.catalogue or "{}"),
                              catalogue_updated_at=row.catalogue_updated_at, client_id=row.client_id,
                              created_at=row.created_at)

    def get(self, uri: str) -> ResourceRecord | None:
        if not isinstance(uri, str) or not uri or len(uri) > 512 or not uri.isprintable():
            return None
        with self._engine.connect() as conn:
            row = conn.execute(select(_resources).where(_resources.c.uri == uri)).first()
        return self._record(row) if row else None

    def list(self) -> list[ResourceRecord]:
        with self._engine.connect() as conn:
            return [self._record(r) for r in conn.execute(select(_resources).order_by(_resources.c.uri))]

    def add(self, uri: str, *, name: str, client_id: str | None = None, actor: str = "cli") -> ResourceRecord:
        validate_audience(uri)
        if not isinstance(name, str) or not name.strip() or len(name) > 128 or not name.isprintable():
            raise ClientError("resource name must be 1-128 printable characters")
        row = {"uri": uri, "name": name, "catalogue": "{}", "catalogue_updated_at": None, "client_id": client_id,
               "created_at": clock.now()}
        try:
            with audit.transaction(self._engine) as tx:
                tx.conn.execute(insert(_resources), [row])
                tx.record(audit.Record("resource.registered", actor, client_id=client_id,
                                       data={"uri": uri, "name": name}))
        except IntegrityError:
            raise ClientError(f"resource {uri!r} is already registered") from None
        return self._record(type("Row", (), row))

    def remove(self, uri: str, *, actor: str = "cli") -> ResourceRecord:
        found = self.get(uri)
        if found is None:
            raise ClientError(f"no resource {uri!r}")
        with audit.transaction(self._engine) as tx:
            tx.conn.execute(delete(_resources).where(_resources.c.uri == uri))
            tx.record(audit.Record("resource.removed", actor, data={"uri": uri}))
        return found

    def set_catalogue(self, uri: str, catalogue: dict[str, Any], *, actor: str) -> ResourceRecord:
        """Replace the resource's catalogue (already validated by the caller)."""
        now = clock.now()
        with audit.transaction(self._engine) as tx:
            done = tx.conn.execute(update(_resources).where(_resources.c.uri == uri).values(
                catalogue=json.dumps(catalogue, separators=(",", ":")), catalogue_updated_at=now)).rowcount
            if not done:
                raise ClientError(f"no resource {uri!r}")
            tx.record(audit.Record("resource.catalogue_updated", actor, data={
                "uri": uri, **{k: len(v) for k, v in catalogue.items() if isinstance(v, list)}}))
        found = self.get(uri)
        if found is None:
            raise ClientError(f"no resource {uri!r}")
        return found
