"""Database tables (SQLModel). Times are integer Unix seconds, portable across SQLite and PostgreSQL.

The schema itself is owned by the Alembic migrations under ``migrations/``; these classes
describe it for queries. ``tests/idp/test_migrations.py`` checks the two agree.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, String, Text
from sqlmodel import Field, SQLModel


class Client(SQLModel, table=True):
    __tablename__ = "clients"

    client_id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=128, unique=True)
    auth_method: str = Field(max_length=32)
    secret_hash: str | None = Field(default=None, max_length=128)
    jwks: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    capabilities: str = Field(sa_column=Column(Text, nullable=False))
    audiences: str = Field(sa_column=Column(Text, nullable=False))  # JSON list of resource URIs
    enabled: bool = True
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    # 'client' or 'resource_server' (idp.oauth2.client.KINDS): who may introspect whose tokens.
    kind: str = Field(default="client", sa_column=Column(String(32), nullable=False, server_default="client"))


class SigningKey(SQLModel, table=True):
    __tablename__ = "signing_keys"

    kid: str = Field(primary_key=True, max_length=128)
    alg: str = Field(max_length=16)
    public_jwk: str = Field(sa_column=Column(Text, nullable=False))
    private_key: str = Field(sa_column=Column(Text, nullable=False))  # keystore envelope, never clear
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    activate_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    retired_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class RevokedToken(SQLModel, table=True):
    __tablename__ = "revoked_tokens"

    jti: str = Field(primary_key=True, max_length=64)
    client_id: str = Field(max_length=64)
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    revoked_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class AssertionJti(SQLModel, table=True):
    """Replay cache for ``private_key_jwt`` client assertions (RFC 7523 §3, item 7)."""

    __tablename__ = "assertion_jtis"

    key: str = Field(primary_key=True, max_length=64)  # sha256(client_id, jti)
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))


class AuditEvent(SQLModel, table=True):
    """Append-only: the migrations install triggers that refuse UPDATE and early DELETE."""

    __tablename__ = "audit_events"

    id: int | None = Field(default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"),
                                                          primary_key=True, autoincrement=True))
    ts: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    event: str = Field(max_length=64)
    actor: str = Field(max_length=128)
    client_id: str | None = Field(default=None, max_length=64, index=True)
    jti: str | None = Field(default=None, max_length=64, index=True)
    data: str = Field(sa_column=Column(Text, nullable=False))


class IdpState(SQLModel, table=True):
    """Small coordination rows shared by all IdP processes (e.g. one scheduled rotation per key)."""

    __tablename__ = "idp_state"

    name: str = Field(primary_key=True, max_length=191)
    value: str = Field(sa_column=Column(Text, nullable=False))
