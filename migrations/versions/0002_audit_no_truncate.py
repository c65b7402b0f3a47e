"""Audit log: refuse TRUNCATE on PostgreSQL.

TRUNCATE fires no row-level DELETE trigger, so 0001's guard let ``TRUNCATE audit_events`` wipe
the append-only log in one statement. SQLite has no TRUNCATE (an unqualified DELETE runs the
row trigger), so there is nothing to do there.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """CREATE FUNCTION audit_events_no_truncate() RETURNS trigger AS $$
           BEGIN RAISE EXCEPTION 'audit_events is append-only: TRUNCATE refused'; END $$ LANGUAGE plpgsql"""
    )
    op.execute(
        """CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
           FOR EACH STATEMENT EXECUTE FUNCTION audit_events_no_truncate()"""
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
    op.execute("DROP FUNCTION IF EXISTS audit_events_no_truncate()")
