"""Alembic migrations on SQLite and PostgreSQL: up/down/up, models == migrations, append-only audit table."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import DBAPIError
from sqlmodel import SQLModel

import idp.models  # noqa: F401 - registers the tables
from idp import db

TABLES = {"clients", "signing_keys", "revoked_tokens", "assertion_jtis", "audit_events", "idp_state",
          # 0004: interactive authorization
          "resources", "users", "federation_upstreams", "federated_identities", "consent_grants", "web_sessions",
          "interactions", "authorization_codes", "token_families", "family_tokens", "refresh_tokens",
          "initial_access_tokens", "client_metadata_documents"}


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = db.create_db_engine(db_url)
    yield eng
    eng.dispose()


def head() -> str:
    return ScriptDirectory.from_config(db.alembic_config(None)).get_current_head()  # type: ignore[arg-type]


def tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def insert_audit(conn: sa.Connection, ts: int, event: str = "test.event") -> int:
    return conn.execute(sa.text(
        "INSERT INTO audit_events (ts, event, actor, data) VALUES (:ts, :e, 'test', '{}') RETURNING id"
    ), {"ts": ts, "e": event}).scalar_one()


def test_upgrade_head_downgrade_base_upgrade_again(engine: sa.Engine) -> None:
    assert db.current_revision(engine) is None
    db.upgrade(engine)
    assert db.current_revision(engine) == head()
    assert tables(engine) == TABLES
    db.upgrade(engine)  # idempotent
    with engine.begin() as conn:
        insert_audit(conn, int(time.time()))
    db.downgrade(engine, "base")
    assert db.current_revision(engine) is None
    assert tables(engine) == set()
    db.upgrade(engine)
    assert db.current_revision(engine) == head()
    assert tables(engine) == TABLES
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM audit_events")).scalar() == 0
    # The append-only guard is back after the round trip.
    with engine.begin() as conn:
        rid = insert_audit(conn, int(time.time()))
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_events SET actor = 'x' WHERE id = :id"), {"id": rid})


def test_models_agree_with_migrations(engine: sa.Engine) -> None:
    db.upgrade(engine)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        diff = compare_metadata(ctx, SQLModel.metadata)
    # Every table, column, type, nullability, index and unique constraint of the models exists,
    # as declared, in the migrated schema (and nothing more).
    assert diff == [], diff


def test_audit_table_is_append_only_at_the_database_level(engine: sa.Engine) -> None:
    db.upgrade(engine)
    now = int(time.time())
    with engine.begin() as conn:
        recent = insert_audit(conn, now - 60)
        six_days = insert_audit(conn, now - 6 * 86400)
        old = insert_audit(conn, now - 8 * 86400)
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_events SET event = 'forged' WHERE id = :id"), {"id": recent})
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_events SET ts = ts - 864000 WHERE id = :id"), {"id": old})  # no backdating
    for rid in (recent, six_days):
        with pytest.raises(DBAPIError, match="past retention"), engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM audit_events WHERE id = :id"), {"id": rid})
    with pytest.raises(DBAPIError, match="past retention"), engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_events"))  # all or nothing
    with engine.begin() as conn:
        assert conn.execute(sa.text("DELETE FROM audit_events WHERE id = :id"), {"id": old}).rowcount == 1
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, event FROM audit_events ORDER BY id")).all()
    assert rows == [(recent, "test.event"), (six_days, "test.event")]


def test_audit_table_cannot_be_truncated_on_postgresql(engine: sa.Engine) -> None:
    """TRUNCATE fires no row-level DELETE trigger: it needs a guard of its own. (SQLite has no
    TRUNCATE; its unqualified DELETE runs the row trigger, see the test above.)"""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL statement")
    db.upgrade(engine)
    with engine.begin() as conn:
        insert_audit(conn, int(time.time()))
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE audit_events"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM audit_events")).scalar() == 1
    # The guard goes away with a downgrade and comes back with the upgrade.
    db.downgrade(engine, "base")
    db.upgrade(engine)
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE audit_events"))


def test_concurrent_first_starts_migrate_once_and_create_one_initial_key(db_url: str, tmp_path: Path) -> None:
    """Several IdP processes starting together on an empty database (replicas, serve + CLI)."""
    import threading

    from idp.config import Settings
    from idp.provider import Provider
    from idp_testing import ISSUER, random_kek

    settings = Settings(issuer=ISSUER, database_url=db_url, keys_dir=tmp_path / "keys", keystore_kek=random_kek())
    barrier = threading.Barrier(4)
    results: list[object] = []

    def start() -> None:
        barrier.wait()
        try:
            prov = Provider.open(settings)
            try:
                results.append(prov.keys.signer().kid)
            finally:
                prov.close()
        except Exception as exc:  # noqa: BLE001 - reported below
            results.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert len(results) == 4 and len(set(results)) == 1  # everyone signs with the one initial key
    eng = db.create_db_engine(db_url)
    try:
        assert db.current_revision(eng) == head()
        with eng.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM signing_keys")).scalar() == 1
    finally:
        eng.dispose()
