"""Interactive authorization: redirect URIs on clients, resources, people, consent, codes, refresh tokens.

Client ids widen to 512 characters (a Client ID Metadata Document's client_id is its URL), in
every table that holds one. On SQLite that rebuilds ``audit_events`` (batch mode), so its
append-only triggers are created again afterwards.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

MIN_RETENTION_SECONDS = 7 * 86400  # as in 0001
_SQLITE_AUDIT_TRIGGERS = [
    "DROP TRIGGER IF EXISTS audit_events_no_update",
    "DROP TRIGGER IF EXISTS audit_events_no_early_delete",
    """CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
       BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END""",
    f"""CREATE TRIGGER audit_events_no_early_delete BEFORE DELETE ON audit_events
       WHEN OLD.ts > CAST(strftime('%s','now') AS INTEGER) - {MIN_RETENTION_SECONDS}
       BEGIN SELECT RAISE(ABORT, 'audit_events: only records past retention may be deleted'); END""",
]
_WIDENED = (("clients", "client_id", False), ("revoked_tokens", "client_id", False), ("audit_events", "client_id", True))


def _resize_client_ids(length: int) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table, column, nullable in _WIDENED:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, type_=sa.String(length), existing_nullable=nullable)
    if sqlite:  # the batch rebuild of audit_events dropped its triggers
        for statement in _SQLITE_AUDIT_TRIGGERS:
            op.execute(statement)


def upgrade() -> None:
    _resize_client_ids(512)
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("redirect_uris", sa.Text, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("grant_types", sa.Text, nullable=False, server_default='["client_credentials"]'))
        batch.add_column(sa.Column("registered_by", sa.String(16), nullable=False, server_default="operator"))
        batch.add_column(sa.Column("client_metadata", sa.Text, nullable=True))
        batch.add_column(sa.Column("registration_token_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.BigInteger, nullable=True))
    op.create_table(
        "resources",
        sa.Column("uri", sa.String(512), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("catalogue", sa.Text, nullable=False, server_default="{}"),
        sa.Column("catalogue_updated_at", sa.BigInteger, nullable=True),
        sa.Column("client_id", sa.String(512), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("subject", sa.String(128), primary_key=True),
        sa.Column("username", sa.String(128), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("claims", sa.Text, nullable=False, server_default="{}"),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "federation_upstreams",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("client_id", sa.String(512), nullable=False),
        sa.Column("client_secret", sa.Text, nullable=True),
        sa.Column("scopes", sa.String(512), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "federated_identities",
        sa.Column("issuer", sa.String(512), primary_key=True),
        sa.Column("upstream_subject", sa.String(255), primary_key=True),
        sa.Column("subject", sa.String(128), nullable=False, index=True),
        sa.Column("claims", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("last_login_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "consent_grants",
        sa.Column("subject", sa.String(128), primary_key=True),
        sa.Column("client_id", sa.String(512), primary_key=True),
        sa.Column("resource", sa.String(512), primary_key=True),
        sa.Column("capabilities", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("subject", sa.String(128), nullable=True),
        sa.Column("data", sa.Text, nullable=False, server_default="{}"),
        sa.Column("auth_time", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
    )
    op.create_table(
        "interactions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("data", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
    )
    op.create_table(
        "authorization_codes",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(512), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("family_id", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
        sa.Column("used_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "token_families",
        sa.Column("family_id", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(512), nullable=False, index=True),
        sa.Column("subject", sa.String(128), nullable=False, index=True),
        sa.Column("resource", sa.String(512), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
        sa.Column("revoked_reason", sa.String(64), nullable=True),
    )
    op.create_table(
        "family_tokens",
        sa.Column("jti", sa.String(64), primary_key=True),
        sa.Column("family_id", sa.String(64), nullable=False, index=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("family_id", sa.String(64), nullable=False, index=True),
        sa.Column("client_id", sa.String(512), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
        sa.Column("used_at", sa.BigInteger, nullable=True),
        sa.Column("successor_hash", sa.String(64), nullable=True),
    )
    op.create_table(
        "initial_access_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("uses_left", sa.Integer, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "client_metadata_documents",
        sa.Column("url", sa.String(512), primary_key=True),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("etag", sa.String(256), nullable=True),
        sa.Column("fetched_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )


_NEW_TABLES = ("client_metadata_documents", "initial_access_tokens", "refresh_tokens", "family_tokens",
               "token_families", "authorization_codes", "interactions", "web_sessions", "consent_grants",
               "federated_identities", "federation_upstreams", "users", "resources")


def downgrade() -> None:
    for table in _NEW_TABLES:
        op.drop_table(table)
    with op.batch_alter_table("clients") as batch:
        for column in ("expires_at", "registration_token_hash", "client_metadata", "registered_by", "grant_types",
                       "redirect_uris"):
            batch.drop_column(column)
    _resize_client_ids(64)
