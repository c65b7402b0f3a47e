"""Append-only audit log: a database table (``audit_events``) and structured JSON log lines.

Every client registration, token issuance, revocation and key event is recorded. A record is
committed before the action it describes is reported as done (the token response waits for its
record), so an issued token always has a durable audit record.

Group commit: on the server, issuance records from concurrent requests that reach the audit
step in the same event-loop iteration are written in one transaction (one fsync), which keeps
durability without paying one commit per request under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select

from . import clock
from .models import AuditEvent
from .sql import Prepared

log = logging.getLogger("cbst.audit")
_table = AuditEvent.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Record:
    event: str
    actor: str
    client_id: str | None = None
    jti: str | None = None
    data: dict[str, Any] | None = None
    ts: int | None = None

    def row(self) -> dict[str, Any]:
        return {
            "ts": self.ts if self.ts is not None else clock.now(),
            "event": self.event,
            "actor": self.actor[:128],
            "client_id": self.client_id,
            "jti": self.jti,
            "data": json.dumps(self.data or {}, separators=(",", ":"), sort_keys=True, default=str),
        }


def _emit(rows: Sequence[dict[str, Any]]) -> None:
    if log.isEnabledFor(logging.INFO):
        for row in rows:
            fields = {k: v for k, v in row.items() if k != "data" and v is not None}
            fields["data"] = json.loads(row["data"])
            log.info(row["event"], extra={"fields": {"audit": fields}})


class Transaction:
    """A database transaction that also carries audit records; see :func:`transaction`."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._rows: list[dict[str, Any]] = []

    def record(self, *records: Record) -> None:
        rows = [r.row() for r in records]
        self.conn.execute(insert(_table), rows)
        self._rows.extend(rows)


@contextlib.contextmanager
def transaction(engine: Engine) -> Iterator[Transaction]:
    """A transaction whose audit records commit (or roll back) with the change they describe;
    their log lines are written only after the commit."""
    with engine.begin() as conn:
        tx = Transaction(conn)
        yield tx
    _emit(tx._rows)


def record(engine: Engine, *records: Record) -> None:
    with transaction(engine) as tx:
        tx.record(*records)


class GroupCommitter:
    """Batches records from concurrent requests into one transaction per event-loop turn."""

    def __init__(self, engine: Engine) -> None:
        self._insert = Prepared(engine, insert(_table), column_keys=["ts", "event", "actor", "client_id", "jti", "data"])
        self._pending: list[dict[str, Any]] = []
        self._done: asyncio.Future[None] | None = None

    async def record(self, rec: Record) -> None:
        self._pending.append(rec.row())
        if self._done is None:
            loop = asyncio.get_running_loop()
            self._done = loop.create_future()
            loop.call_soon(self._flush)
        await asyncio.shield(self._done)

    def _flush(self) -> None:
        rows, done = self._pending, self._done
        self._pending, self._done = [], None
        assert done is not None
        try:
            self._insert.execute_many(rows)
        except Exception as exc:  # noqa: BLE001 - every waiter learns the batch failed
            done.set_exception(exc)
            done.exception()  # mark retrieved: waiters that were cancelled must not warn
            return
        done.set_result(None)
        _emit(rows)


def tail(engine: Engine, *, limit: int = 50, after_id: int | None = None, event: str | None = None,
         client_id: str | None = None) -> list[dict[str, Any]]:
    """The newest ``limit`` records (oldest first), or those after ``after_id``."""
    query = select(_table)
    if after_id is not None:
        query = query.where(_table.c.id > after_id).order_by(_table.c.id).limit(limit)
    else:
        query = query.order_by(_table.c.id.desc()).limit(limit)
    if event:
        query = query.where(_table.c.event.like(event.replace("*", "%")))
    if client_id:
        query = query.where(_table.c.client_id == client_id)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
    if after_id is None:
        rows.reverse()
    for row in rows:
        row["data"] = json.loads(row["data"])
    return rows


def by_ids(engine: Engine, ids: Sequence[int]) -> list[dict[str, Any]]:
    """The records with these ids that exist (are committed), oldest first."""
    if not ids:
        return []
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(_table).where(_table.c.id.in_(list(ids))).order_by(_table.c.id))]
    for row in rows:
        row["data"] = json.loads(row["data"])
    return rows


def find_issuance(engine: Engine, jti: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(_table).where(_table.c.jti == jti, _table.c.event == "token.issued").limit(1)
        ).first()
    if row is None:
        return None
    out = dict(row._mapping)
    out["data"] = json.loads(out["data"])
    return out


def prune(engine: Engine, retention_days: int) -> int:
    """Delete records older than the retention; returns how many."""
    cutoff = clock.now() - retention_days * 86400
    with engine.begin() as conn:
        return conn.execute(delete(_table).where(_table.c.ts < cutoff)).rowcount or 0


def iter_json(rows: Sequence[dict[str, Any]]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, separators=(",", ":"), default=str)
