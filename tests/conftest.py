"""Shared fixtures: every storage-touching test runs on a real SQLite file and on the local PostgreSQL.

PostgreSQL: ``IDP_TEST_POSTGRES_URL`` (default ``postgresql://root@127.0.0.1:5432/test``); each test
gets a database of its own, created from that server and dropped afterwards. If the server is
unreachable the PostgreSQL half fails loudly — set ``IDP_TEST_SKIP_POSTGRES=1`` to skip it knowingly.
Plain helpers (ServerProcess, run_cli, register, ...) are in ``idp_testing``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from idp.config import Settings
from idp.provider import Provider
from idp_testing import (  # noqa: F401  (re-exported for older imports)
    AUDIENCE,
    ISSUER,
    PG_URL,
    ROOT,
    SKIP_PG,
    ServerProcess,
    _pg_admin_url,
    env_for,
    free_port,
    random_kek,
    register,
    run_cli,
)


@pytest.fixture(scope="session")


def pg_server() -> str:
    if SKIP_PG:
        pytest.skip("IDP_TEST_SKIP_POSTGRES=1")
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at {PG_URL} is not reachable ({exc}); set IDP_TEST_SKIP_POSTGRES=1 to skip")
    return PG_URL


@pytest.fixture


def pg_database(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; its URL."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = "cbst_t_" + secrets.token_hex(6)
    admin = sa.create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])


def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Parametrises a test over both supported databases."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'idp.db'}"
    return request.getfixturevalue("pg_database")


@pytest.fixture


def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        issuer=ISSUER,
        database_url=db_url,
        keys_dir=tmp_path / "keys",
        keystore_kek=random_kek(),
        log_json=True,
    )


@pytest.fixture


def provider(settings: Settings) -> Iterator[Provider]:
    prov = Provider.open(settings)
    yield prov
    prov.close()


@pytest.fixture


def app(provider: Provider) -> Any:
    from idp.app import create_app

    return create_app(provider=provider, maintenance=False)


@pytest.fixture


def http(app: Any) -> Iterator[Any]:
    """A synchronous test client over the real ASGI app (lifespan run, no network)."""
    from starlette.testclient import TestClient

    with TestClient(app, base_url=ISSUER) as client:
        yield client
