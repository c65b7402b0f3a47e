"""Initial schema: clients, signing keys, revocations, assertion replay cache, audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The audit log is append-only: no UPDATE ever, DELETE only of records older than the
# shortest retention the IdP allows (7 days), i.e. only by pruning.
MIN_RETENTION_SECONDS = 7 * 86400

_SQLITE_TRIGGERS = [
    """CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
       BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END""",
    f"""CREATE TRIGGER audit_events_no_early_delete BEFORE DELETE ON audit_events
       WHEN OLD.ts > CAST(strftime('%s','now') AS INTEGER) - {MIN_RETENTION_SECONDS}
       BEGIN SELECT RAISE(ABORT, 'audit_events: only records past retention may be deleted'); END""",
]
_PG_TRIGGERS = [
    f"""CREATE FUNCTION audit_events_guard() RETURNS trigger AS $$
       BEGIN
         IF TG_OP = 'UPDATE' THEN RAISE EXCEPTION 'audit_events is append-only'; END IF;
         IF OLD.ts > extract(epoch from now())::bigint - {MIN_RETENTION_SECONDS} THEN
           RAISE EXCEPTION 'audit_events: only records past retention may be deleted';
         END IF;
         RETURN OLD;
       END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER audit_events_guard BEFORE UPDATE OR DELETE ON audit_events
       FOR EACH ROW EXECUTE FUNCTION audit_events_guard()""",
]


def upgrade() -> None:
    op.create_table(
        "clients",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("auth_method", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=True),
        sa.Column("jwks", sa.Text, nullable=True),
        sa.Column("capabilities", sa.Text, nullable=False),
        sa.Column("audiences", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(128), primary_key=True),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("public_jwk", sa.Text, nullable=False),
        sa.Column("private_key", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("activate_at", sa.BigInteger, nullable=False),
        sa.Column("retired_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
        sa.Column("revoked_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "assertion_jtis",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("ts", sa.BigInteger, nullable=False, index=True),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=True, index=True),
        sa.Column("jti", sa.String(64), nullable=True, index=True),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_table(
        "idp_state",
        sa.Column("name", sa.String(191), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    triggers = _PG_TRIGGERS if op.get_bind().dialect.name == "postgresql" else _SQLITE_TRIGGERS
    for statement in triggers:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_guard ON audit_events")
        op.execute("DROP FUNCTION IF EXISTS audit_events_guard()")
    for table in ("idp_state", "audit_events", "assertion_jtis", "revoked_tokens", "signing_keys", "clients"):
        op.drop_table(table)
