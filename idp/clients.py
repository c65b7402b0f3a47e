"""The client registry: registration and lookup of OAuth clients (RFC 6749 §2), in SQL.

Client secrets are generated here with 256 bits of entropy and stored only as a SHA-256 hash
(see :mod:`idp.oauth2.client` for why, and for the record the protocol code works with).
"""

from __future__ import annotations

import json
import re
import secrets
from functools import lru_cache
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import urlsplit

from sqlalchemy import Engine, bindparam, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from sdk.capabilities import CapabilityError, CapabilitySet

from . import audit, clock
from .errors import IdPError
from .models import AuditEvent, Client, Resource, RevokedToken
from .oauth2 import client_auth, redirect_uris
from .oauth2.client import CLIENT, KINDS, ClientRecord, hash_secret
from .sql import Prepared

__all__ = ["AUTH_METHODS", "ClientError", "ClientRecord", "ClientRegistry", "generate_secret", "hash_secret"]

_clients = Client.__table__  # type: ignore[attr-defined]
_audit = AuditEvent.__table__  # type: ignore[attr-defined]
_revoked = RevokedToken.__table__  # type: ignore[attr-defined]
_resources = Resource.__table__  # type: ignore[attr-defined]
MAX_TOKEN_LIFETIME = 86400  # the upper bound of access_token_ttl (idp.config)

AUTH_METHODS = tuple(client_auth.METHODS)  # the registered client-authentication methods
SECRET_PREFIX = "cbsts_"  # makes leaked secrets easy for scanners to recognise
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_AUDIENCES = 32
MIN_RSA_BITS = 2048


# Parsed capability sets are immutable; cache them so the token endpoint does not recompile
# patterns on every request.
_parse_capabilities = lru_cache(maxsize=4096)(CapabilitySet.parse)


class ClientError(IdPError, ValueError):
    """A registration that cannot be made; the message says why."""


def generate_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)  # 256 bits


def validate_audience(uri: str) -> str:
    """RFC 8707 §2: a resource is an absolute URI without a fragment."""
    parts = urlsplit(uri)
    if not parts.scheme or not (parts.netloc or parts.scheme == "urn") or parts.fragment or len(uri) > 512 or any(
        c.isspace() for c in uri
    ):
        raise ClientError(f"audience {uri!r} must be an absolute URI without fragment (RFC 8707)")
    return uri


#: Grants a client may be registered for (RFC 7591 §2 grant_types), from the grant registry.
INTERACTIVE_GRANTS = ("authorization_code", "refresh_token")


def validate_redirect_uris(uris: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Redirect URIs as the authorization endpoint will match them (idp.oauth2.redirect_uris)."""
    try:
        return redirect_uris.validate_all(uris)
    except redirect_uris.RedirectUriError as exc:
        raise ClientError(str(exc)) from None


def validate_grant_types(grant_types: list[str] | tuple[str, ...] | None, *, redirect_uris: list[str] | tuple[str, ...],
                         auth_method: str) -> tuple[str, ...]:
    """RFC 7591 §2 grant_types: registered grants only; refresh tokens only beside the code grant;
    no client credentials for a public client (it has none)."""
    from .oauth2 import grants as grant_registry

    if grant_types is None:
        grant_types = ["authorization_code"] if redirect_uris else ["client_credentials"]
    out = tuple(dict.fromkeys(grant_types))
    unknown = [g for g in out if g not in grant_registry.GRANTS]
    if unknown:
        raise ClientError(f"unknown grant type {unknown[0]!r}; one of: {', '.join(grant_registry.GRANTS)}")
    if not out:
        raise ClientError("a client needs at least one grant type")
    if "refresh_token" in out and "authorization_code" not in out:
        raise ClientError("the refresh_token grant needs the authorization_code grant")
    if auth_method == "none" and "client_credentials" in out:
        raise ClientError("a public client (auth none) cannot use the client_credentials grant")
    return out


def validate_jwks(jwks: Any) -> dict[str, Any]:
    """A client's public keys for private_key_jwt: a JWKS with at least one public signing key."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet, KeySetSerialization

    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise ClientError("JWKS must be a JSON object with a non-empty 'keys' array")
    if len(jwks["keys"]) > 16:
        raise ClientError("JWKS has too many keys (max 16)")
    for jwk in jwks["keys"]:
        if not isinstance(jwk, dict) or any(m in jwk for m in ("d", "p", "q", "k")):
            raise ClientError("JWKS must contain public keys only")
    try:
        keys = KeySet.import_key_set(cast(KeySetSerialization, jwks)).keys
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ClientError(f"invalid JWKS: {exc}") from None
    for key in keys:  # RFC 7518 §3.3/§3.5: RS*/PS* keys MUST be at least 2048 bits
        raw = key.raw_value
        if isinstance(raw, (rsa.RSAPublicKey, rsa.RSAPrivateKey)) and raw.key_size < MIN_RSA_BITS:
            raise ClientError(f"RSA keys must be at least {MIN_RSA_BITS} bits (RFC 7518 section 3.3)")
    return jwks


_COLUMNS = tuple(c.name for c in _clients.columns)


@lru_cache(maxsize=4096)
def _record_of_row(row: tuple[Any, ...]) -> ClientRecord:
    """The record of a ``clients`` row, cached by the row's full contents: an updated client is a
    different row (new key), so nothing stale is ever returned, and the JSON columns are parsed
    once per version of a client instead of once per token request."""
    return ClientRegistry._record(SimpleNamespace(**dict(zip(_COLUMNS, row, strict=True))))


class ClientRegistry:
    """Storage of clients behind a narrow interface (one code path for SQLite and PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._by_id = Prepared(engine, select(_clients).where(_clients.c.client_id == bindparam("client_id")))

    @staticmethod
    def _record(row: Any) -> ClientRecord:
        return ClientRecord(
            client_id=row.client_id,
            name=row.name,
            auth_method=row.auth_method,
            secret_hash=row.secret_hash,
            jwks=json.loads(row.jwks) if row.jwks else None,
            capabilities=_parse_capabilities(row.capabilities),
            audiences=tuple(json.loads(row.audiences)),
            enabled=bool(row.enabled),
            created_at=row.created_at,
            updated_at=row.updated_at,
            kind=row.kind,
            redirect_uris=tuple(json.loads(row.redirect_uris or "[]")),
            grant_types=tuple(json.loads(row.grant_types or '["client_credentials"]')),
            registered_by=row.registered_by or "operator",
            metadata=json.loads(row.client_metadata) if row.client_metadata else None,
            registration_token_hash=row.registration_token_hash,
            expires_at=row.expires_at,
        )

    def add(
        self,
        name: str,
        *,
        capabilities: str,
        audiences: list[str] | tuple[str, ...] = (),
        auth_method: str = "client_secret_basic",
        jwks: dict[str, Any] | None = None,
        kind: str = CLIENT,
        actor: str = "cli",
        redirect_uris: list[str] | tuple[str, ...] = (),
        grant_types: list[str] | tuple[str, ...] | None = None,
    ) -> tuple[ClientRecord, str | None]:
        """Register a client; returns it and, for secret methods, the secret (shown once).

        ``grant_types`` defaults to client credentials, or to the authorization code grant when
        redirect URIs are given. An interactive client may have no capabilities: then the policy
        and the person's consent alone decide what it gets (with capabilities, they are its ceiling)."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ClientError(
                "name must be 1-128 characters of letters, digits, '.', '_' or '-', starting alphanumeric")
        try:
            caps = CapabilitySet.parse(capabilities)
        except CapabilityError as exc:
            raise ClientError(str(exc)) from None
        grants = validate_grant_types(grant_types, redirect_uris=redirect_uris, auth_method=auth_method)
        uris = validate_redirect_uris(redirect_uris)
        if "authorization_code" in grants and not uris:
            raise ClientError("the authorization_code grant needs at least one --redirect-uri")
        if uris and "authorization_code" not in grants:
            raise ClientError("redirect URIs are only for the authorization_code grant")
        if not len(caps) and "client_credentials" in grants:
            raise ClientError("a client needs at least one capability")
        if kind not in KINDS:
            raise ClientError(f"kind must be one of {', '.join(KINDS)}")
        method = client_auth.METHODS.get(auth_method)
        if method is None:
            raise ClientError(f"auth method must be one of {', '.join(client_auth.METHODS)}")
        if len(audiences) > MAX_AUDIENCES:
            raise ClientError(f"at most {MAX_AUDIENCES} audiences")
        auds = tuple(dict.fromkeys(validate_audience(a) for a in audiences))
        secret: str | None = None
        if method.credential == "none":
            if jwks is not None:
                raise ClientError("a public client (auth none) has no keys")
        elif method.credential == "jwks":
            if jwks is None:
                raise ClientError(f"{auth_method} needs the client's public keys (--jwks FILE)")
            jwks = validate_jwks(jwks)
        elif jwks is not None:
            raise ClientError("--jwks is only for private_key_jwt")
        else:
            secret = generate_secret()
        now = clock.now()
        client_id = secrets.token_hex(16)  # 128 bits; hex so it never starts with "-" (CLI argument)
        row = {
            "client_id": client_id,
            "name": name,
            "auth_method": auth_method,
            "secret_hash": hash_secret(secret) if secret else None,
            "jwks": json.dumps(jwks, separators=(",", ":")) if jwks else None,
            "capabilities": caps.to_scope(),
            "audiences": json.dumps(list(auds)),
            "enabled": True,
            "created_at": now,
            "updated_at": now,
            "kind": kind,
            "redirect_uris": json.dumps(list(uris)),
            "grant_types": json.dumps(list(grants)),
            "registered_by": "operator",
            "client_metadata": None,
            "registration_token_hash": None,
            "expires_at": None,
        }
        try:
            with audit.transaction(self._engine) as tx:
                if tx.conn.execute(select(_clients.c.client_id).where(_clients.c.name == name)).first():
                    raise ClientError(f"a client named {name!r} already exists")
                tx.conn.execute(insert(_clients), [row])
                tx.record(audit.Record(
                    "client.registered", actor, client_id=client_id,
                    data={"name": name, "kind": kind, "auth_method": auth_method, "capabilities": row["capabilities"],
                          "audiences": list(auds), "redirect_uris": list(uris), "grant_types": list(grants)},
                ))
                _register_resources(tx, auds, client_id=client_id, actor=actor, now=now)
        except IntegrityError:
            raise ClientError(f"a client named {name!r} already exists") from None
        return self._record(SimpleNamespace(**row)), secret

    def get(self, client_id: str) -> ClientRecord | None:
        """Look up by client_id (the token endpoint's hot path)."""
        # A NUL (PostgreSQL refuses it) or a lone surrogate (not encodable) from Basic credentials or
        # an assertion's iss names no client and must not become a database error: ids are printable.
        if not isinstance(client_id, str) or not client_id or len(client_id) > 512 or not client_id.isprintable():
            return None
        row = self._by_id.first_tuple(client_id=client_id)
        return _record_of_row(row) if row is not None else None

    def find(self, id_or_name: str) -> ClientRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(_clients).where(or_(_clients.c.client_id == id_or_name, _clients.c.name == id_or_name))
            ).first()
        return self._record(row) if row else None

    def list(self) -> list[ClientRecord]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(_clients).order_by(_clients.c.created_at, _clients.c.name))
            return [self._record(r) for r in rows]

    def set_enabled(self, id_or_name: str, enabled: bool, *, actor: str = "cli") -> ClientRecord:
        client = self._require(id_or_name)
        with audit.transaction(self._engine) as tx:
            tx.conn.execute(update(_clients).where(_clients.c.client_id == client.client_id)
                            .values(enabled=enabled, updated_at=clock.now()))
            data = {} if enabled else {
                "revoked_tokens": _revoke_outstanding(tx, client.client_id, actor=actor, reason="client disabled")}
            event = "client.enabled" if enabled else "client.disabled"
            tx.record(audit.Record(event, actor, client_id=client.client_id, data=data))
        return self._require(client.client_id)

    def remove(self, id_or_name: str, *, actor: str = "cli") -> ClientRecord:
        client = self._require(id_or_name)
        with audit.transaction(self._engine) as tx:
            tx.conn.execute(delete(_clients).where(_clients.c.client_id == client.client_id))
            revoked = _revoke_outstanding(tx, client.client_id, actor=actor, reason="client removed")
            tx.record(audit.Record("client.removed", actor, client_id=client.client_id,
                                   data={"name": client.name, "revoked_tokens": revoked}))
        return client

    def _require(self, id_or_name: str) -> ClientRecord:
        client = self.find(id_or_name)
        if client is None:
            raise ClientError(f"no client {id_or_name!r}")
        return client


def resource_name_of(uri: str) -> str:
    """The name a resource registered from a client's audience gets: its host (or the URI)."""
    host = urlsplit(uri).hostname
    name = (host if host else uri)[:128]
    return name if name.strip() and name.isprintable() else "resource"


def _register_resources(tx: audit.Transaction, audiences: tuple[str, ...], *, client_id: str, actor: str,
                        now: int) -> None:
    """Register the audiences that are not yet protected resources, in the client's transaction:
    tokens are minted only for registered resources, and ``idp clients add --audience URI`` keeps
    meaning "this client may get tokens for URI"."""
    if not audiences:
        return
    known = {r.uri for r in tx.conn.execute(select(_resources.c.uri).where(_resources.c.uri.in_(list(audiences))))}
    for uri in audiences:
        if uri in known:
            continue
        name = resource_name_of(uri)
        tx.conn.execute(insert(_resources), [{"uri": uri, "name": name, "catalogue": "{}", "catalogue_updated_at": None,
                                              "client_id": None, "created_at": now}])
        # (client_id is the resource's catalogue client, none here; the client is in the data)
        tx.record(audit.Record("resource.registered", actor,
                               data={"uri": uri, "name": name, "audience_of": client_id}))


def _revoke_outstanding(tx: audit.Transaction, client_id: str, *, actor: str, reason: str) -> int:
    """Revoke every unexpired token of a client being disabled or removed, in the same transaction.

    Introspection then reports them inactive at once, and resource servers that verify offline
    learn of them from the revocation list. The issued tokens are found in the audit log (no
    token outlives the longest configurable lifetime, one day).
    """
    now = clock.now()
    issued = tx.conn.execute(
        select(_audit.c.jti, _audit.c.data).where(
            _audit.c.client_id == client_id, _audit.c.event == "token.issued", _audit.c.ts >= now - MAX_TOKEN_LIFETIME
        )
    ).all()
    outstanding = {row.jti: json.loads(row.data).get("exp", 0) for row in issued if row.jti}
    outstanding = {jti: exp for jti, exp in outstanding.items() if isinstance(exp, int) and exp > now}
    if not outstanding:
        return 0
    already = {r.jti for r in tx.conn.execute(select(_revoked.c.jti).where(_revoked.c.jti.in_(list(outstanding))))}
    rows = [{"jti": j, "client_id": client_id, "expires_at": e, "revoked_at": now}
            for j, e in outstanding.items() if j not in already]
    if rows:
        tx.conn.execute(insert(_revoked), rows)
        tx.record(*(audit.Record("token.revoked", actor, client_id=client_id, jti=r["jti"],
                                 data={"exp": r["expires_at"], "reason": reason}) for r in rows))
    return len(rows)
