"""The upstream OpenID Connect providers people may log in at (table ``federation_upstreams``).

An upstream is the IdP's own client registration at another OpenID Provider (OpenID Connect
Core 1.0 §3.1): its issuer identifier, the client_id and client_secret that provider issued, the
scopes to ask for and the label of its button on the chooser page. The client secret is stored
only sealed by the IdP keystore (AES-256-GCM, the upstream's name as associated data, so an
envelope cannot be moved to another upstream's row), like the signing keys.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from .. import audit, clock
from ..errors import IdPError
from ..keystore import Keystore
from ..models import FederationUpstream

_table = FederationUpstream.__table__  # type: ignore[attr-defined]

#: Names appear in URL paths (/login/upstream/NAME, /federation/callback/NAME): keep them plain.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
#: RFC 6749 §3.3 scope-token characters.
_SCOPE_RE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")
DEFAULT_SCOPES = ("openid", "email", "profile")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class UpstreamError(IdPError, ValueError):
    """An upstream cannot be added, found or changed as asked."""


@dataclass(frozen=True)
class Upstream:
    name: str
    issuer: str
    client_id: str
    scopes: tuple[str, ...]
    label: str
    enabled: bool
    created_at: int
    has_secret: bool

    def callback_path(self) -> str:
        return f"/federation/callback/{self.name}"

    def public_dict(self) -> dict[str, Any]:
        return {"name": self.name, "issuer": self.issuer, "client_id": self.client_id, "scopes": list(self.scopes),
                "label": self.label, "enabled": self.enabled, "client_secret": "set" if self.has_secret else "none",
                "created_at": self.created_at}


def _secret_aad(name: str) -> str:
    return f"federation-upstream:{name}"


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UpstreamError("upstream name must be 1-64 characters: lowercase letters, digits, '-' or '_'")
    return name


def validate_issuer(issuer: str) -> str:
    """An issuer identifier (OpenID Connect Discovery 1.0 §2): https, no query or fragment; plain
    http only on loopback (development and tests)."""
    if not isinstance(issuer, str) or not issuer or len(issuer) > 512 or not issuer.isprintable():
        raise UpstreamError("issuer must be a URL of at most 512 printable characters")
    try:
        parts = urlsplit(issuer)
        host = parts.hostname
    except ValueError:
        raise UpstreamError(f"issuer {issuer!r} is not a URL") from None
    if parts.scheme not in ("https", "http") or not host or parts.query or parts.fragment or "#" in issuer:
        raise UpstreamError(f"issuer {issuer!r} must be an https URL without query or fragment")
    if parts.scheme == "http" and host not in _LOOPBACK:
        raise UpstreamError(f"issuer {issuer!r} must use https (plain http only on loopback)")
    if parts.username is not None or parts.password is not None:
        raise UpstreamError("issuer must not carry user information")
    return issuer


def validate_scopes(scopes: Sequence[str] | None) -> tuple[str, ...]:
    tokens: list[str] = []
    for item in scopes or DEFAULT_SCOPES:
        for token in item.split():
            if not _SCOPE_RE.match(token):
                raise UpstreamError(f"invalid scope {token!r}")
            if token not in tokens:
                tokens.append(token)
    if "openid" not in tokens:
        tokens.insert(0, "openid")  # an OpenID Connect request needs it (OIDC Core §3.1.2.1)
    if len(" ".join(tokens)) > 512:
        raise UpstreamError("scopes are longer than 512 characters")
    return tuple(tokens)


def _printable(value: str, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit or not value.isprintable():
        raise UpstreamError(f"{what} must be 1-{limit} printable characters")
    return value


class UpstreamRegistry:
    """SQL-backed registry of upstreams; the opened client secrets are cached in memory."""

    def __init__(self, engine: Engine, keystore: Keystore) -> None:
        self._engine = engine
        self._keystore = keystore
        self._secrets: dict[tuple[str, str], str] = {}  # (name, envelope) -> secret (scrypt is slow)
        self._lock = threading.Lock()

    @staticmethod
    def _record(row: Any) -> Upstream:
        return Upstream(name=row.name, issuer=row.issuer, client_id=row.client_id, scopes=tuple(row.scopes.split()),
                        label=row.label, enabled=bool(row.enabled), created_at=row.created_at,
                        has_secret=row.client_secret is not None)

    def get(self, name: str) -> Upstream | None:
        if not isinstance(name, str) or not NAME_RE.match(name):
            return None
        with self._engine.connect() as conn:
            row = conn.execute(select(_table).where(_table.c.name == name)).first()
        return self._record(row) if row else None

    def list(self, *, enabled_only: bool = False) -> list[Upstream]:
        query = select(_table).order_by(_table.c.name)
        if enabled_only:
            query = query.where(_table.c.enabled.is_(True))
        with self._engine.connect() as conn:
            return [self._record(r) for r in conn.execute(query)]

    def client_secret(self, name: str) -> str | None:
        """The upstream's client secret, opened from its keystore envelope (None: a public client)."""
        with self._engine.connect() as conn:
            envelope = conn.execute(select(_table.c.client_secret).where(_table.c.name == name)).scalar()
        if envelope is None:
            return None
        with self._lock:
            cached = self._secrets.get((name, envelope))
        if cached is None:
            cached = self._keystore.open_envelope(envelope, kid=_secret_aad(name)).decode("utf-8")
            with self._lock:
                self._secrets[(name, envelope)] = cached
        return cached

    def add(self, name: str, *, issuer: str, client_id: str, client_secret: str | None,
            scopes: Sequence[str] | None = None, label: str | None = None,
            actor: str = "cli") -> Upstream:
        validate_name(name)
        validate_issuer(issuer)
        _printable(client_id, "client_id", 512)
        if client_secret is not None:
            _printable(client_secret, "client_secret", 1024)
        tokens = validate_scopes(scopes)
        label = _printable(label if label is not None else name, "label", 128)
        row = {"name": name, "issuer": issuer, "client_id": client_id,
               "client_secret": self._keystore.seal(client_secret.encode("utf-8"), kid=_secret_aad(name))
               if client_secret is not None else None,
               "scopes": " ".join(tokens), "label": label, "enabled": True, "created_at": clock.now()}
        try:
            with audit.transaction(self._engine) as tx:
                tx.conn.execute(insert(_table), [row])
                tx.record(audit.Record("federation.upstream_added", actor, data={
                    "name": name, "issuer": issuer, "client_id": client_id, "scopes": list(tokens), "label": label,
                    "client_secret": client_secret is not None}))
        except IntegrityError:
            raise UpstreamError(f"upstream {name!r} already exists") from None
        return self._record(type("Row", (), row))

    def set_enabled(self, name: str, enabled: bool, *, actor: str = "cli") -> Upstream:
        with audit.transaction(self._engine) as tx:
            done = tx.conn.execute(update(_table).where(_table.c.name == name).values(enabled=enabled)).rowcount
            if not done:
                raise UpstreamError(f"no upstream {name!r}")
            tx.record(audit.Record("federation.upstream_enabled" if enabled else "federation.upstream_disabled",
                                   actor, data={"name": name}))
        found = self.get(name)
        if found is None:
            raise UpstreamError(f"no upstream {name!r}")
        return found

    def remove(self, name: str, *, actor: str = "cli") -> Upstream:
        """Remove the upstream. Its people keep their local subjects (federated_identities): added
        again with the same issuer, the same upstream accounts map to the same subjects."""
        found = self.get(name)
        if found is None:
            raise UpstreamError(f"no upstream {name!r}")
        with audit.transaction(self._engine) as tx:
            tx.conn.execute(delete(_table).where(_table.c.name == name))
            tx.record(audit.Record("federation.upstream_removed", actor, data={"name": name, "issuer": found.issuer}))
        return found
