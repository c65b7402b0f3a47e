"""Dynamically registered clients (RFC 7591, managed per RFC 7592) and initial access tokens
(RFC 7591 §3), in SQL.

A dynamic client has no capabilities of its own (policy and the person's consent decide what
it gets) and is unreviewed until the operator approves it. Only hashes are stored: of its
registration access token (RFC 7592 §1), of its client secret if it has one, of initial access
tokens. A flood of registrations must not lock out real clients: the number of *unused*
dynamic clients is capped, and past the cap the oldest unused ones are evicted (not every new
registration refused); unused ones also expire after ``registration_unused_ttl``. "Used" means a
token was issued to the client (an audit ``token.issued`` record or a token family).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, exists, func, insert, select, update
from sqlalchemy.sql import ColumnElement

from . import audit, clock
from .clients import ClientError, ClientRegistry, _revoke_outstanding, generate_secret, hash_secret
from .models import AuditEvent, Client, InitialAccessToken, TokenFamily
from .oauth2.client import DYNAMIC, ClientRecord
from .oauth2.client_metadata import ClientMetadata
from .oauth2.registration import InvalidToken, Registration

_clients = Client.__table__  # type: ignore[attr-defined]
_audit = AuditEvent.__table__  # type: ignore[attr-defined]
_families = TokenFamily.__table__  # type: ignore[attr-defined]
_iats = InitialAccessToken.__table__  # type: ignore[attr-defined]

REGISTRATION_TOKEN_PREFIX = "cbstr_"
INITIAL_TOKEN_PREFIX = "cbsti_"
_SLUG = re.compile(r"[^a-z0-9]+")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def unused(table: Any) -> ColumnElement[bool]:
    """SQL: the client row has never had a token issued."""
    return and_(
        ~exists().where(_audit.c.client_id == table.c.client_id, _audit.c.event == "token.issued"),
        ~exists().where(_families.c.client_id == table.c.client_id),
    )


def derived_name(prefix: str, label: str | None, unique: str) -> str:
    """A unique ``clients.name`` from an untrusted label: ``dcr-my-app-1a2b3c4d5e``."""
    slug = _SLUG.sub("-", (label or "").lower()).strip("-")[:60]
    return f"{prefix}-{slug + '-' if slug else ''}{unique}"


def _metadata_json(meta: ClientMetadata) -> str:
    return json.dumps(meta.to_json(), separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class InitialTokenInfo:
    id: str  # the first 12 hex digits of the token's hash: enough to name it, nothing to use
    label: str
    uses_left: int | None
    created_at: int
    expires_at: int | None

    def public_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "uses_left": self.uses_left, "created_at": self.created_at,
                "expires_at": self.expires_at}


class InitialAccessTokens:
    """RFC 7591 §3 initial access tokens: bearer tokens that permit registration, with an
    optional use count and expiry. Only their hashes are kept."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, *, label: str = "", uses: int | None = None, expires_at: int | None = None,
               actor: str = "cli") -> tuple[InitialTokenInfo, str]:
        if uses is not None and uses < 1:
            raise ClientError("--uses must be at least 1")
        if len(label) > 128 or not label.isprintable():
            raise ClientError("the label is at most 128 printable characters")
        now = clock.now()
        if expires_at is not None and expires_at <= now:
            raise ClientError("the expiry must be in the future")
        token = INITIAL_TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = token_hash(token)
        row: dict[str, Any] = {"token_hash": digest, "label": label, "uses_left": uses, "created_at": now,
               "expires_at": expires_at}
        with audit.transaction(self._engine) as tx:
            tx.conn.execute(insert(_iats), [row])
            tx.record(audit.Record("registration.token_created", actor, data={
                "id": digest[:12], "label": label, "uses": uses, "expires_at": expires_at}))
        return self._info(SimpleNamespace(**row)), token

    @staticmethod
    def _info(row: Any) -> InitialTokenInfo:
        return InitialTokenInfo(row.token_hash[:12], row.label, row.uses_left, row.created_at, row.expires_at)

    def list(self) -> list[InitialTokenInfo]:
        with self._engine.connect() as conn:
            return [self._info(r) for r in conn.execute(select(_iats).order_by(_iats.c.created_at))]

    def revoke(self, token_id: str, *, actor: str = "cli") -> InitialTokenInfo:
        if not re.fullmatch(r"[0-9a-f]{8,64}", token_id or ""):
            raise ClientError("a token id is 8 to 64 hex digits (see `idp registration tokens list`)")
        with audit.transaction(self._engine) as tx:
            rows = tx.conn.execute(select(_iats).where(_iats.c.token_hash.startswith(token_id))).all()
            if len(rows) != 1:
                raise ClientError(f"no initial access token {token_id!r}" if not rows else f"{token_id!r} is ambiguous")
            tx.conn.execute(delete(_iats).where(_iats.c.token_hash == rows[0].token_hash))
            tx.record(audit.Record("registration.token_revoked", actor, data={"id": rows[0].token_hash[:12]}))
        return self._info(rows[0])

    @staticmethod
    def consume(conn: Connection, token: str, now: int) -> str | None:
        """Use the token once, in the caller's transaction; its id, or None if it is unknown,
        expired or used up. The decrement is one conditional UPDATE, so two registrations racing
        for the last use cannot both get it."""
        digest = token_hash(token)
        live = and_(_iats.c.token_hash == digest, (_iats.c.expires_at.is_(None)) | (_iats.c.expires_at > now))
        limited = conn.execute(update(_iats).where(live, _iats.c.uses_left > 0)
                               .values(uses_left=_iats.c.uses_left - 1)).rowcount
        if limited:
            return digest[:12]
        unlimited = conn.execute(select(_iats.c.token_hash).where(live, _iats.c.uses_left.is_(None))).first()
        return digest[:12] if unlimited else None


class DynamicClients:
    """The :class:`idp.oauth2.registration.Registrar` over SQL."""

    def __init__(self, engine: Engine, clients: ClientRegistry, *, max_unused: int, unused_ttl: int) -> None:
        self._engine = engine
        self._clients = clients
        self.max_unused = max_unused
        self.unused_ttl = unused_ttl
        self.initial_tokens = InitialAccessTokens(engine)

    def register(self, meta: ClientMetadata, *, actor: str, initial_access_token: str | None,
                 token_required: bool, audited: bool) -> Registration:
        """Register; evicts the oldest unused dynamic clients past the cap (same transaction)."""
        now = clock.now()
        client_id = secrets.token_hex(16)
        secret = generate_secret() if meta.token_endpoint_auth_method != "none" else None
        registration_token = REGISTRATION_TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = {
            "client_id": client_id, "name": derived_name("dcr", meta.client_name, client_id[:10]),
            "auth_method": meta.token_endpoint_auth_method, "secret_hash": hash_secret(secret) if secret else None,
            "jwks": None, "capabilities": "", "audiences": "[]", "enabled": True, "created_at": now,
            "updated_at": now, "kind": "client", "redirect_uris": json.dumps(list(meta.redirect_uris)),
            "grant_types": json.dumps(list(meta.grant_types)), "registered_by": DYNAMIC,
            "client_metadata": _metadata_json(meta), "registration_token_hash": token_hash(registration_token),
            "expires_at": None,
        }
        with audit.transaction(self._engine) as tx:
            data: dict[str, Any] = {"name": row["name"], "client_name": meta.client_name,
                                    "redirect_uris": list(meta.redirect_uris), "auth_method": row["auth_method"]}
            if token_required:
                used = InitialAccessTokens.consume(tx.conn, initial_access_token or "", now)
                if used is None:
                    raise InvalidToken("the initial access token is unknown, expired or used up")
                data["initial_access_token"] = used
            evicted = self._evict(tx, max(0, self._count_unused(tx.conn) - self.max_unused + 1), "cap reached")
            if evicted:
                data["evicted"] = evicted
            tx.conn.execute(insert(_clients), [row])
            if audited or token_required or evicted:
                tx.record(audit.Record("client.registered", actor, client_id=client_id, data={
                    **data, "registered_by": DYNAMIC}))
        record = self._clients.get(client_id)
        assert record is not None
        return Registration(record, secret, registration_token)

    def _count_unused(self, conn: Connection) -> int:
        return int(conn.execute(select(func.count()).select_from(_clients).where(
            _clients.c.registered_by == DYNAMIC, unused(_clients))).scalar_one())

    def _evict(self, tx: audit.Transaction, count: int, reason: str) -> int:
        if count <= 0:
            return 0
        victims = [r.client_id for r in tx.conn.execute(
            select(_clients.c.client_id).where(_clients.c.registered_by == DYNAMIC, unused(_clients))
            .order_by(_clients.c.created_at, _clients.c.client_id).limit(count))]
        if victims:
            tx.conn.execute(delete(_clients).where(_clients.c.client_id.in_(victims)))
            tx.record(audit.Record("client.evicted", "registration", data={"clients": victims, "reason": reason}))
        return len(victims)

    def authorized(self, client_id: str, registration_token: str | None) -> ClientRecord:
        """The dynamic client, if the registration access token is its own; else InvalidToken
        (the same answer for an unknown client: RFC 7592 §2.1 tells nothing of its existence)."""
        client = self._clients.get(client_id) if isinstance(client_id, str) else None
        expected = client.registration_token_hash if client is not None else None
        presented = token_hash(registration_token or "")
        # compare_digest even when there is nothing to compare with: the same time either way.
        if not hmac.compare_digest(presented, expected or "0" * 64) or client is None or expected is None \
                or not registration_token:
            raise InvalidToken("the registration access token is not valid for this client")
        return client

    def update(self, client_id: str, registration_token: str | None, meta: ClientMetadata, *,
               actor: str) -> tuple[ClientRecord, str | None]:
        """RFC 7592 §2.2: replace the metadata. A change from no authentication to a secret
        method issues a secret (returned once); the reverse drops it; otherwise it is kept."""
        client = self.authorized(client_id, registration_token)
        secret: str | None = None
        secret_hash = client.secret_hash
        if meta.token_endpoint_auth_method == "none":
            secret_hash = None
        elif client.secret_hash is None:
            secret = generate_secret()
            secret_hash = hash_secret(secret)
        with audit.transaction(self._engine) as tx:
            tx.conn.execute(update(_clients).where(_clients.c.client_id == client.client_id).values(
                auth_method=meta.token_endpoint_auth_method, secret_hash=secret_hash,
                redirect_uris=json.dumps(list(meta.redirect_uris)), grant_types=json.dumps(list(meta.grant_types)),
                client_metadata=_metadata_json(meta), updated_at=clock.now()))
            tx.record(audit.Record("client.updated", actor, client_id=client.client_id, data={
                "redirect_uris": list(meta.redirect_uris), "client_name": meta.client_name,
                "auth_method": meta.token_endpoint_auth_method}))
        record = self._clients.get(client.client_id)
        assert record is not None
        return record, secret

    def delete(self, client_id: str, registration_token: str | None, *, actor: str) -> None:
        """RFC 7592 §2.3: deregister; its outstanding tokens are revoked with it."""
        client = self.authorized(client_id, registration_token)
        with audit.transaction(self._engine) as tx:
            tx.conn.execute(delete(_clients).where(_clients.c.client_id == client.client_id))
            revoked = _revoke_outstanding(tx, client.client_id, actor=actor, reason="client deregistered")
            tx.record(audit.Record("client.removed", actor, client_id=client.client_id,
                                   data={"name": client.name, "revoked_tokens": revoked, "by": "registration"}))

    def expire_unused(self, now: int | None = None) -> int:
        """Remove dynamic clients never used within ``unused_ttl`` of their registration."""
        cutoff = (now if now is not None else clock.now()) - self.unused_ttl
        with audit.transaction(self._engine) as tx:
            victims = [r.client_id for r in tx.conn.execute(
                select(_clients.c.client_id).where(_clients.c.registered_by == DYNAMIC,
                                                   _clients.c.created_at < cutoff, unused(_clients)).limit(1000))]
            if victims:
                tx.conn.execute(delete(_clients).where(_clients.c.client_id.in_(victims)))
                tx.record(audit.Record("client.expired", "maintenance", data={
                    "clients": victims, "reason": f"never used within {self.unused_ttl} s"}))
        return len(victims)
