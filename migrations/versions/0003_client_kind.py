"""Clients get a kind: 'client' (default) or 'resource_server'.

Only a resource server's own client may introspect the tokens of its audience (RFC 7662 §4);
existing clients become ordinary clients.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clients") as batch:  # batch: SQLite cannot alter in place
        batch.add_column(sa.Column("kind", sa.String(length=32), nullable=False, server_default="client"))


def downgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("kind")
