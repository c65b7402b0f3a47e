"""Alembic environment: the IdP passes its engine/connection in ``config.attributes``.

Run from the command line too: ``IDP_DATABASE_URL=... alembic -c migrations/alembic.ini upgrade head``.
"""

from __future__ import annotations

from alembic import context

import idp.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from sqlmodel import SQLModel

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = config.attributes.get("engine")
    if engine is None:
        from idp.config import Settings
        from idp.db import create_db_engine

        engine = create_db_engine(Settings().database_url)
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
