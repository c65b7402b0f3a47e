"""Database tables (SQLModel). Times are integer Unix seconds, portable across SQLite and PostgreSQL.

The schema itself is owned by the Alembic migrations under ``migrations/``; these classes
describe it for queries. ``tests/idp/test_migrations.py`` checks the two agree.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, String, Text
from sqlmodel import Field, SQLModel


class Client(SQLModel, table=True):
    __tablename__ = "clients"

    client_id: str = Field(primary_key=True, max_length=512)
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
    # Interactive clients (authorization code flow): exact redirect URIs, grants, who registered it
    # ('operator' = idp clients add, reviewed; 'dcr' = RFC 7591; 'cimd' = a Client ID Metadata Document).
    redirect_uris: str = Field(default="[]", sa_column=Column(Text, nullable=False, server_default="[]"))
    grant_types: str = Field(default='["client_credentials"]', sa_column=Column(
        Text, nullable=False, server_default='["client_credentials"]'))
    registered_by: str = Field(default="operator", sa_column=Column(
        String(16), nullable=False, server_default="operator"))
    client_metadata: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # JSON (RFC 7591 §2)
    registration_token_hash: str | None = Field(default=None, max_length=64)  # RFC 7592 access token
    expires_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


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
    client_id: str = Field(max_length=512)
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
    client_id: str | None = Field(default=None, max_length=512, index=True)
    jti: str | None = Field(default=None, max_length=64, index=True)
    data: str = Field(sa_column=Column(Text, nullable=False))


class IdpState(SQLModel, table=True):
    """Small coordination rows shared by all IdP processes (e.g. one scheduled rotation per key)."""

    __tablename__ = "idp_state"

    name: str = Field(primary_key=True, max_length=191)
    value: str = Field(sa_column=Column(Text, nullable=False))


# --- interactive authorization (issue 7): resources, people, consent, codes, refresh tokens ---
# Client ids are up to 512 characters: a Client ID Metadata Document's client_id is its URL.


class Resource(SQLModel, table=True):
    """A protected resource (an MCP server) the IdP mints tokens for (RFC 8707), and its catalogue."""

    __tablename__ = "resources"

    uri: str = Field(primary_key=True, max_length=512)
    name: str = Field(max_length=128)
    # JSON: {"tools": [...], "resources": [...], "prompts": [...]} as the MCP server lists them.
    catalogue: str = Field(sa_column=Column(Text, nullable=False, server_default="{}"))
    catalogue_updated_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # The resource server's client (kind resource_server) allowed to push the catalogue.
    client_id: str | None = Field(default=None, max_length=512)
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class User(SQLModel, table=True):
    """A local account (argon2id password hash)."""

    __tablename__ = "users"

    subject: str = Field(primary_key=True, max_length=128)
    username: str = Field(max_length=128, unique=True)
    password_hash: str = Field(max_length=256)
    claims: str = Field(sa_column=Column(Text, nullable=False, server_default="{}"))  # JSON: email, groups...
    enabled: bool = True
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class FederationUpstream(SQLModel, table=True):
    """An upstream OpenID Connect provider people may log in at."""

    __tablename__ = "federation_upstreams"

    name: str = Field(primary_key=True, max_length=64)
    issuer: str = Field(max_length=512)
    client_id: str = Field(max_length=512)
    client_secret: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # keystore envelope
    scopes: str = Field(max_length=512, default="openid email profile")
    label: str = Field(max_length=128)
    enabled: bool = True
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class FederatedIdentity(SQLModel, table=True):
    """An upstream identity (issuer, subject) mapped to a local subject."""

    __tablename__ = "federated_identities"

    issuer: str = Field(primary_key=True, max_length=512)
    upstream_subject: str = Field(primary_key=True, max_length=255)
    subject: str = Field(max_length=128, index=True)
    claims: str = Field(sa_column=Column(Text, nullable=False, server_default="{}"))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_login_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class ConsentGrant(SQLModel, table=True):
    """Capabilities a person approved for a client at a resource, remembered until revoked."""

    __tablename__ = "consent_grants"

    subject: str = Field(primary_key=True, max_length=128)
    client_id: str = Field(primary_key=True, max_length=512)
    resource: str = Field(primary_key=True, max_length=512)
    capabilities: str = Field(sa_column=Column(Text, nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class WebSession(SQLModel, table=True):
    """A browser session at the IdP's pages (cookie holds the id; only its hash is stored)."""

    __tablename__ = "web_sessions"

    id_hash: str = Field(primary_key=True, max_length=64)
    subject: str | None = Field(default=None, max_length=128)
    data: str = Field(sa_column=Column(Text, nullable=False, server_default="{}"))  # JSON: claims, csrf, method
    auth_time: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))


class Interaction(SQLModel, table=True):
    """An authorization request waiting for the person (login, chooser, consent)."""

    __tablename__ = "interactions"

    id: str = Field(primary_key=True, max_length=64)
    request: str = Field(sa_column=Column(Text, nullable=False))  # JSON of the validated request
    data: str = Field(sa_column=Column(Text, nullable=False, server_default="{}"))  # JSON: upstream state, nonce...
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))


class AuthorizationCode(SQLModel, table=True):
    """RFC 6749 §4.1.2 codes: only a hash is stored; single use (used_at) and short-lived."""

    __tablename__ = "authorization_codes"

    code_hash: str = Field(primary_key=True, max_length=64)
    client_id: str = Field(max_length=512)
    data: str = Field(sa_column=Column(Text, nullable=False))  # JSON: subject, redirect_uri, resource, scope, PKCE...
    family_id: str = Field(max_length=64)  # tokens issued from this code (revoked on replay)
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    used_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class TokenFamily(SQLModel, table=True):
    """Everything issued from one authorization code: its access tokens and refresh-token chain."""

    __tablename__ = "token_families"

    family_id: str = Field(primary_key=True, max_length=64)
    client_id: str = Field(max_length=512, index=True)
    subject: str = Field(max_length=128, index=True)
    resource: str = Field(max_length=512)
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    revoked_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    revoked_reason: str | None = Field(default=None, max_length=64)


class FamilyToken(SQLModel, table=True):
    """An access token of a family, so that revoking the family revokes it (by jti)."""

    __tablename__ = "family_tokens"

    jti: str = Field(primary_key=True, max_length=64)
    family_id: str = Field(max_length=64, index=True)
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class RefreshToken(SQLModel, table=True):
    """Rotated refresh tokens (only hashes). A used one that comes back revokes its family."""

    __tablename__ = "refresh_tokens"

    token_hash: str = Field(primary_key=True, max_length=64)
    family_id: str = Field(max_length=64, index=True)
    client_id: str = Field(max_length=512)
    data: str = Field(sa_column=Column(Text, nullable=False))  # JSON: subject, scope, resource, claims
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    used_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # Set on rotation: the answer to a retry within the grace window (docs/authorization.md).
    successor_hash: str | None = Field(default=None, max_length=64)


class InitialAccessToken(SQLModel, table=True):
    """RFC 7591 §3 initial access tokens (registration policy ``initial-access-token``)."""

    __tablename__ = "initial_access_tokens"

    token_hash: str = Field(primary_key=True, max_length=64)
    label: str = Field(max_length=128)
    uses_left: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class ClientMetadataDocument(SQLModel, table=True):
    """Fetched Client ID Metadata Documents, cached per their HTTP cache headers."""

    __tablename__ = "client_metadata_documents"

    url: str = Field(primary_key=True, max_length=512)
    document: str = Field(sa_column=Column(Text, nullable=False))
    etag: str | None = Field(default=None, max_length=256)
    fetched_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False))
