"""Append-only audit log: a database table (``audit_events``) and structured JSON log lines.

Every client registration, token issuance, revocation and key event is recorded. A record is
committed before the action it describes is reported as done (the token response waits for its
record), so an issued token always has a durable audit record.

Group commit: on the server, issuance records from concurrent requests that reach the audit
step while a commit is in flight are written together in the next transaction (one fsync),
which keeps durability without paying one commit per request under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
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


#: Threads for the batches no request leads. Not the request threads of ``idp.blocking``: those
#: may all be waiting for exactly these commits (a shared pool deadlocks under load). Each
#: committer has at most one batch in flight, so a few threads serve every committer of a process.
_COMMIT_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="idp-audit")


class GroupCommitter:
    """Group commit of issuance records: one transaction (one fsync) per batch, one batch in flight.

    Requests append their record and wait. The first to find no batch in flight commits the
    pending records itself; records that arrive meanwhile gather into the next batch, which a
    worker thread commits as soon as the current one is done. Under load a batch holds every
    request that arrived during the previous commit; at concurrency 1 it is one record,
    committed at once by its own request.

    No commit ever runs on the server's event loop: a request handler runs in a worker thread of
    ``idp.blocking`` (on that thread's own loop), where the leader commits inline; anywhere else,
    and for the batches that gather meanwhile, the committer's own thread commits. Waiters on any
    loop are woken thread-safely.

    SQLite allows one writer per database file. Its busy handler backs off in sleeps of 1 ms up to
    100 ms, which put the p99 of two contending worker processes in the hundreds of ms (token
    endpoint bench, c=8: 361 ms); an advisory file lock beside the database makes the processes
    queue in the kernel instead, woken the moment the holder commits.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        columns = ["ts", "event", "actor", "client_id", "jti", "data"]
        self._insert = Prepared(engine, insert(_table), column_keys=columns)
        self._lock_path = _writer_lock_path(engine)
        self._lock_fd: int | None = None
        self._conn: Any = None  # one DB-API connection of its own: one batch is in flight at a time
        self._mutex = threading.Lock()
        self._pending: list[tuple[dict[str, Any], asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._flushing = False

    async def record(self, rec: Record) -> None:
        from . import blocking

        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        with self._mutex:
            self._pending.append((rec.row(), loop, done))
            lead, self._flushing = not self._flushing, True
        if lead:
            if blocking.in_worker():
                self._commit_next(hand_off=True)  # this thread serves only this request: block it
            else:
                _COMMIT_THREADS.submit(self._commit_next, hand_off=False)
        await done

    def _commit_next(self, *, hand_off: bool) -> None:
        """Commit pending batches; with ``hand_off``, only the first, handing later ones to the
        committer thread (so the leading request is answered after its own batch, not everyone's)."""
        while True:
            with self._mutex:
                batch, self._pending = self._pending, []
                if not batch:
                    self._flushing = False
                    return
            try:
                self._write([row for row, _, _ in batch])
            except Exception as exc:
                self._settle(batch, exc)
            else:
                self._settle(batch, None)
            if hand_off:
                with self._mutex:
                    if not self._pending:
                        self._flushing = False
                        return
                _COMMIT_THREADS.submit(self._commit_next, hand_off=False)
                return

    def _settle(self, batch: list[tuple[dict[str, Any], asyncio.AbstractEventLoop, asyncio.Future[None]]],
                exc: BaseException | None) -> None:
        for _, loop, done in batch:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_resolve, done, exc)
        if exc is None:
            _emit([row for row, _, _ in batch])

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if self._conn is None:
            self._conn = self._engine.raw_connection()
        try:
            if self._lock_path is None:
                self._insert.execute_many(rows, self._conn)
                return
            if self._lock_fd is None:
                self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                self._insert.execute_many(rows, self._conn)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        except Exception:
            conn, self._conn = self._conn, None  # a broken connection is replaced on the next batch
            with contextlib.suppress(Exception):
                conn.invalidate()
            raise


def _resolve(done: asyncio.Future[None], exc: BaseException | None) -> None:
    if done.done():  # the waiter was cancelled (client went away); its record stands
        return
    if exc is None:
        done.set_result(None)
    else:
        done.set_exception(exc)


def _writer_lock_path(engine: Engine) -> str | None:
    """``<database>.writer-lock`` for an SQLite file; None for servers that handle concurrency."""
    if engine.dialect.name != "sqlite" or not engine.url.database or engine.url.database == ":memory:":
        return None
    return engine.url.database + ".writer-lock"


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
        query = select(_table).where(_table.c.id.in_(list(ids))).order_by(_table.c.id)
        rows = [dict(r._mapping) for r in conn.execute(query)]
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
