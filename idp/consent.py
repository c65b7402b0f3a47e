"""Remembered consent: capabilities a person approved for a client at a resource.

One row per (subject, client, resource) in ``consent_grants``; an approval adds to it (union), so
a step-up asks only for what is new. Revoking (``idp grants revoke``) deletes the row; the tokens
already issued from it are revoked by :class:`idp.token_families.TokenFamilies`. Which remembered
capability covers which request — and why a destructive tool is covered only by an explicit
approval of exactly that tool — is :mod:`idp.web.consent_page`'s business.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from sdk.capabilities import CapabilityError, CapabilitySet

from . import audit, clock
from .models import ConsentGrant

__all__ = ["ConsentGrantRecord", "ConsentGrants"]

_grants = ConsentGrant.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ConsentGrantRecord:
    subject: str
    client_id: str
    resource: str
    capabilities: CapabilitySet
    created_at: int
    updated_at: int

    def public_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "client_id": self.client_id, "resource": self.resource,
                "capabilities": self.capabilities.to_scope(), "created_at": self.created_at,
                "updated_at": self.updated_at}


def _parse(scope: str) -> CapabilitySet:
    try:
        return CapabilitySet.parse(scope)
    except CapabilityError:  # never written by us; grant nothing rather than fail the page
        return CapabilitySet()


class ConsentGrants:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @staticmethod
    def _record(row: Any) -> ConsentGrantRecord:
        return ConsentGrantRecord(subject=row.subject, client_id=row.client_id, resource=row.resource,
                                  capabilities=_parse(row.capabilities), created_at=row.created_at,
                                  updated_at=row.updated_at)

    def _key(self, subject: str, client_id: str, resource: str) -> Any:
        return and_(_grants.c.subject == subject, _grants.c.client_id == client_id, _grants.c.resource == resource)

    def get(self, subject: str, client_id: str, resource: str) -> CapabilitySet:
        """The remembered capabilities (empty when nothing is remembered)."""
        with self._engine.connect() as conn:
            row = conn.execute(select(_grants.c.capabilities).where(self._key(subject, client_id, resource))).first()
        return _parse(row.capabilities) if row else CapabilitySet()

    def remember(self, tx: audit.Transaction, subject: str, client_id: str, resource: str,
                 granted: CapabilitySet) -> CapabilitySet:
        """Add ``granted`` to what is remembered, inside the caller's transaction (with its audit
        record); returns the union stored."""
        conn, now = tx.conn, clock.now()
        key = self._key(subject, client_id, resource)
        # Make sure the row exists (a concurrent first approval may be inserting it too), then
        # read it locked and write the union: two approvals at once both end up remembered.
        dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        conn.execute(dialect_insert(_grants).values(
            subject=subject, client_id=client_id, resource=resource, capabilities="", created_at=now,
            updated_at=now).on_conflict_do_nothing())
        row = conn.execute(select(_grants.c.capabilities).where(key).with_for_update()).one()
        union = self._union(_parse(row.capabilities), granted)
        conn.execute(update(_grants).where(key).values(capabilities=union.to_scope(), updated_at=now))
        return union

    @staticmethod
    def _union(old: CapabilitySet, new: CapabilitySet) -> CapabilitySet:
        try:
            return CapabilitySet([*old, *new])
        except CapabilityError:  # past the size bounds: the newest approval wins over older ones
            return new

    def list(self, *, subject: str | None = None, client_id: str | None = None) -> list[ConsentGrantRecord]:
        query = select(_grants).order_by(_grants.c.subject, _grants.c.client_id, _grants.c.resource)
        if subject is not None:
            query = query.where(_grants.c.subject == subject)
        if client_id is not None:
            query = query.where(_grants.c.client_id == client_id)
        with self._engine.connect() as conn:
            return [self._record(r) for r in conn.execute(query)]

    def revoke(self, subject: str, client_id: str, resource: str | None = None, *,
               actor: str = "cli") -> builtins.list[ConsentGrantRecord]:
        """Forget the remembered grants of a subject for a client (at one resource or all); audited."""
        cond = and_(_grants.c.subject == subject, _grants.c.client_id == client_id)
        if resource is not None:
            cond = and_(cond, _grants.c.resource == resource)
        with audit.transaction(self._engine) as tx:
            rows = [self._record(r) for r in tx.conn.execute(select(_grants).where(cond))]
            if rows:
                tx.conn.execute(delete(_grants).where(cond))
                tx.record(*(audit.Record("consent.revoked", actor, client_id=client_id, data={
                    "subject": subject, "resource": r.resource, "capabilities": r.capabilities.to_scope()})
                    for r in rows))
        return rows
