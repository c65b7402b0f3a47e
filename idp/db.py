"""Database engine and schema management (SQLite by default, PostgreSQL by URL).

The schema is created and upgraded only by the Alembic migrations in ``migrations/``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from .errors import IdPError

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class DatabaseError(IdPError, RuntimeError):
    """The database cannot be used (bad URL, unreachable, schema too new)."""


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use the psycopg 3 driver for them."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise DatabaseError(f"invalid database URL: {exc}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername not in ("sqlite", "postgresql+psycopg"):
        raise DatabaseError(f"unsupported database {parsed.drivername!r}: use sqlite:/// or postgresql://")
    return parsed.render_as_string(hide_password=False)


def _create_private(path: Path) -> None:
    """Create a new database file owner-only (0600) whatever the umask. SQLite gives its -wal,
    -shm and -journal files the mode of the database file, so they are private too."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # an existing database keeps the mode its operator gave it
    except OSError as exc:
        raise DatabaseError(f"cannot create the database {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # the umask may have taken bits the owner needs
    finally:
        os.close(fd)


def create_db_engine(url: str, *, sqlite_synchronous: str = "FULL") -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:" and not path.startswith("file:"):
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(f"cannot create the directory of the database {path}: {exc.strerror}") from None
            _create_private(Path(path))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # WAL: readers never block the writer; FULL: a committed audit record survives power loss.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={sqlite_synchronous}")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True, pool_timeout=POOL_TIMEOUT,
                         connect_args=_postgres_connect_args(make_url(url).query))


#: Backstops that free a thread stuck on PostgreSQL (requests stop waiting for it much earlier,
#: after ``database_timeout``; see idp.blocking). A paused server or a partition still ACKs TCP,
#: so only these bound the wait: libpq's connect timeout; server-side statement and lock
#: timeouts; TCP keepalives and TCP_USER_TIMEOUT for a peer that vanished. Libpq parameters in
#: the URL (``?connect_timeout=10&options=...``) take precedence.
CONNECT_TIMEOUT = 5
POOL_TIMEOUT = 10.0
STATEMENT_TIMEOUT_MS = 30_000
LOCK_TIMEOUT_MS = 10_000


def _postgres_connect_args(query: Mapping[str, object]) -> dict[str, object]:
    args: dict[str, object] = {
        "connect_timeout": CONNECT_TIMEOUT,
        "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
        "tcp_user_timeout": 30_000,
        "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={LOCK_TIMEOUT_MS}",
    }
    return {k: v for k, v in args.items() if k not in query}


def alembic_config(engine: Engine):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent; safe for several processes on PostgreSQL)."""
    from alembic import command

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # A migration may outlast the request-sized statement timeout (and wait for another).
            conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
            conn.exec_driver_sql("SET LOCAL lock_timeout = 0")
            # One migrator at a time when several IdP processes start together.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4242017)")
        elif conn.dialect.name == "sqlite":
            # The same on SQLite: take the write lock first (waiting up to busy_timeout), so the
            # migration runs in one transaction and a concurrent starter finds it done, instead
            # of both creating the same tables ("table alembic_version already exists").
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    with engine.begin() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
