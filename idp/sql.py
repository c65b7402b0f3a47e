"""Hot-path SQL: a Core statement compiled once for the engine's dialect, run on the raw DB-API
connection from SQLAlchemy's pool.

Why: measured in-process on this machine, SQLAlchemy's per-execute machinery (cache key,
execution context, result wrapping) cost ~150 µs per statement, versus ~5 µs for the same
SQLite query through the DB-API cursor — more than signing the token. The token endpoint runs
one read (the client) and, via group commit, one batched insert (the audit record) per request,
so those two use this; so do the statements of every code redemption and refresh (idp/authorization_codes.py,
idp/token_families.py), run inside their SQLAlchemy transaction (``rowcount_in``, ``first_in``).
Everything else goes through SQLAlchemy normally. The statement is still
built with SQLAlchemy Core and compiled by the dialect, so SQLite and PostgreSQL share one code
path and parameters are always bound, never formatted into the SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.sql import ClauseElement


class Prepared:
    def __init__(self, engine: Engine, statement: ClauseElement, column_keys: Sequence[str] | None = None) -> None:
        compiled = statement.compile(dialect=engine.dialect, column_keys=list(column_keys) if column_keys else None)
        self._engine = engine
        self.sql = str(compiled)
        # SQLCompiler attributes (every dialect's compiler is one); the Compiled base type lacks them.
        keys = tuple(getattr(compiled, "positiontup", None) or ()) if getattr(compiled, "positional", False) else None
        if keys is None:
            self._getter: Any = dict
        elif len(keys) == 1:
            only = keys[0]
            self._getter = lambda v: (v[only],)
        else:
            self._getter = itemgetter(*keys)  # C-level: a tuple of the values in SQL order

    def _params(self, values: Mapping[str, Any]) -> Any:
        return self._getter(values)

    def first_tuple(self, **values: Any) -> tuple[Any, ...] | None:
        """The first row as a tuple in the statement's column order, or None."""
        raw = self._engine.raw_connection()
        try:
            cur = raw.cursor()
            try:
                cur.execute(self.sql, self._params(values))
                row = cur.fetchone()
                return tuple(row) if row is not None else None
            finally:
                cur.close()
        finally:
            raw.close()  # back to the pool, which rolls back the implicit read transaction

    def rowcount_in(self, conn: Connection, **values: Any) -> int:
        """Execute on ``conn``'s DB-API connection, inside ``conn``'s transaction; rows affected."""
        cur = conn.connection.cursor()
        try:
            cur.execute(self.sql, self._getter(values))
            return int(cur.rowcount)
        finally:
            cur.close()

    def first_in(self, conn: Connection, **values: Any) -> tuple[Any, ...] | None:
        """The first row, read on ``conn``'s DB-API connection inside ``conn``'s transaction."""
        cur = conn.connection.cursor()
        try:
            cur.execute(self.sql, self._getter(values))
            row = cur.fetchone()
            return tuple(row) if row is not None else None
        finally:
            cur.close()

    def execute_many(self, rows: Sequence[Mapping[str, Any]], raw: Any = None) -> None:
        """Execute once per row in ONE transaction, committed before returning — on ``raw`` (a
        DB-API connection the caller keeps) or on one from the pool."""
        own = raw is None
        if own:
            raw = self._engine.raw_connection()
        try:
            cur = raw.cursor()
            try:
                cur.executemany(self.sql, [self._getter(r) for r in rows])
            finally:
                cur.close()
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            if own:
                raw.close()
