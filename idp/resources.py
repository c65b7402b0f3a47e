"""Protected resources (MCP servers) the IdP mints tokens for: the operator's allowlist (RFC 8707).

A token of the authorization code grant names one registered resource as its audience; an
authorization request for any other is refused (against a spoofed MCP server collecting tokens).
Each resource carries the catalogue of its MCP server (tools with titles, descriptions and
annotations; resources; prompts), so the consent page speaks in the server's own words.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Engine, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from . import audit, clock
from .clients import ClientError, validate_audience
from .models import Resource
from .oauth2.resource import ResourceRecord
from .sql import Prepared

__all__ = ["ResourceRecord", "ResourceRegistry", "validate_name"]

_resources = Resource.__table__  # type: ignore[attr-defined]
_c = _resources.c
_VERSION_COLUMNS = (_c.uri, _c.name, _c.client_id, _c.created_at, _c.catalogue_updated_at)


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 128 or not name.isprintable():
        raise ClientError("resource name must be 1-128 printable characters")
    return name


class ResourceRegistry:
    """Storage of protected resources. :meth:`get` is on the token endpoint's path (every client
    credentials request checks its audience is still registered): one small prepared query of the
    row's version columns, and the catalogue is parsed again only when that version changes
    (:meth:`set_catalogue` makes ``catalogue_updated_at`` strictly increase)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._version = Prepared(engine, select(*_VERSION_COLUMNS).where(_c.uri == bindparam("uri")))
        self._cached: dict[str, tuple[tuple[Any, ...], ResourceRecord]] = {}

    @staticmethod
    def _record(row: Any) -> ResourceRecord:
        return ResourceRecord(uri=row.uri, name=row.name, catalogue=json.loads(row.catalogue or "{}"),
                              catalogue_updated_at=row.catalogue_updated_at, client_id=row.client_id,
                              created_at=row.created_at)

    def get(self, uri: str) -> ResourceRecord | None:
        if not isinstance(uri, str) or not uri or len(uri) > 512 or not uri.isprintable():
            return None
        version = self._version.first_tuple(uri=uri)
        if version is None:
            self._cached.pop(uri, None)
            return None
        hit = self._cached.get(uri)
        if hit is not None and hit[0] == version:
            return hit[1]
        with self._engine.connect() as conn:
            row = conn.execute(select(_resources).where(_c.uri == uri)).first()
        if row is None:
            return None
        record = self._record(row)
        if len(self._cached) > 1024:
            self._cached.clear()
        self._cached[uri] = (tuple(getattr(row, c.name) for c in _VERSION_COLUMNS), record)
        return record

    def list(self) -> list[ResourceRecord]:
        with self._engine.connect() as conn:
            return [self._record(r) for r in conn.execute(select(_resources).order_by(_resources.c.uri))]

    def add(self, uri: str, *, name: str, client_id: str | None = None, actor: str = "cli") -> ResourceRecord:
        validate_audience(uri)
        validate_name(name)
        row = {"uri": uri, "name": name, "catalogue": "{}", "catalogue_updated_at": None, "client_id": client_id,
               "created_at": clock.now()}
        try:
            with audit.transaction(self._engine) as tx:
                tx.conn.execute(insert(_resources), [row])
                tx.record(audit.Record("resource.registered", actor, client_id=client_id,
                                       data={"uri": uri, "name": name}))
        except IntegrityError:
            raise ClientError(f"resource {uri!r} is already registered (idp resources update changes it)") from None
        return self._record(SimpleNamespace(**row))

    def update(self, uri: str, *, name: str | None = None, client_id: str | None = None, clear_client: bool = False,
               actor: str = "cli") -> ResourceRecord:
        """Rename a resource or set (or clear) the client whose token pulls its catalogue."""
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = validate_name(name)
        if client_id is not None or clear_client:
            values["client_id"] = client_id
        if not values:
            raise ClientError("nothing to change (--name, --client or --no-client)")
        with audit.transaction(self._engine) as tx:
            if not tx.conn.execute(update(_resources).where(_c.uri == uri).values(**values)).rowcount:
                raise ClientError(f"no resource {uri!r}")
            tx.record(audit.Record("resource.updated", actor, client_id=values.get("client_id"),
                                   data={"uri": uri, **values}))
        return self._require(uri)

    def _require(self, uri: str) -> ResourceRecord:
        found = self.get(uri)
        if found is None:
            raise ClientError(f"no resource {uri!r}")
        return found

    def remove(self, uri: str, *, actor: str = "cli") -> ResourceRecord:
        found = self.get(uri)
        if found is None:
            raise ClientError(f"no resource {uri!r}")
        with audit.transaction(self._engine) as tx:
            tx.conn.execute(delete(_resources).where(_resources.c.uri == uri))
            tx.record(audit.Record("resource.removed", actor, data={"uri": uri}))
        return found

    def set_catalogue(self, uri: str, catalogue: dict[str, Any], *, actor: str) -> ResourceRecord:
        """Replace the resource's catalogue (already validated by the caller).

        ``catalogue_updated_at`` strictly increases (now, or one past the previous value), so it
        versions the catalogue for the caches of :meth:`get` and of the policy's decisions."""
        now = clock.now()
        with audit.transaction(self._engine) as tx:
            previous = tx.conn.execute(select(_c.catalogue_updated_at).where(_c.uri == uri)).first()
            if previous is None:
                raise ClientError(f"no resource {uri!r}")
            stamp = max(now, (previous[0] or 0) + 1)
            tx.conn.execute(update(_resources).where(_c.uri == uri).values(
                catalogue=json.dumps(catalogue, separators=(",", ":")), catalogue_updated_at=stamp))
            tx.record(audit.Record("resource.catalogue_updated", actor, data={
                "uri": uri, **{k: len(v) for k, v in catalogue.items() if isinstance(v, list)}}))
        return self._require(uri)
