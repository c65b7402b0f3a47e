"""Upstream identities mapped to local subjects (table ``federated_identities``).

OpenID Connect Core 1.0 §2: the pair (``iss``, ``sub``) is the only stable identifier of a
person at an OpenID Provider (an e-mail address can change hands). Each new pair gets a
generated local subject id, kept for good, so the same upstream account is always the same
local subject; the claims the IdP uses (email, name, groups) are stored and refreshed on every
login, so policy sees what the upstream says today.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from .. import audit, clock
from ..models import FederatedIdentity

_table = FederatedIdentity.__table__  # type: ignore[attr-defined]

#: Claims copied from the upstream (ID token and userinfo), with their bounds.
MAPPED_CLAIMS = ("email", "email_verified", "name", "preferred_username", "groups")
_MAX_GROUPS = 256
_MAX_TEXT = 512


def mapped_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
    """The claims kept for a person: strings bounded, ``groups`` a list of strings; the rest dropped."""
    out: dict[str, Any] = {}
    for key in ("email", "name", "preferred_username"):
        value = claims.get(key)
        if isinstance(value, str) and value and len(value) <= _MAX_TEXT:
            out[key] = value
    if isinstance(claims.get("email_verified"), bool):
        out["email_verified"] = claims["email_verified"]
    groups = claims.get("groups")
    if isinstance(groups, str):  # some providers send one group as a string
        groups = [groups]
    if isinstance(groups, list):
        out["groups"] = [g for g in groups if isinstance(g, str) and g and len(g) <= _MAX_TEXT][:_MAX_GROUPS]
    return out


@dataclass(frozen=True)
class Link:
    subject: str
    created: bool  # the first login of this upstream identity


class FederatedIdentities:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def lookup(self, issuer: str, upstream_subject: str) -> tuple[str, dict[str, Any]] | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(_table.c.subject, _table.c.claims).where(
                _table.c.issuer == issuer, _table.c.upstream_subject == upstream_subject)).first()
        return (row.subject, json.loads(row.claims or "{}")) if row else None

    def link(self, issuer: str, upstream_subject: str, claims: Mapping[str, Any], *, upstream: str) -> Link:
        """The local subject of (issuer, sub), created on first login; its claims replaced by ``claims``."""
        now = clock.now()
        text = json.dumps(dict(claims), separators=(",", ":"), sort_keys=True)
        where = (_table.c.issuer == issuer, _table.c.upstream_subject == upstream_subject)
        for _ in range(2):  # a concurrent first login of the same person may insert first: then update
            with self._engine.begin() as conn:
                found = conn.execute(select(_table.c.subject).where(*where)).scalar()
                if found is not None:
                    conn.execute(update(_table).where(*where).values(claims=text, last_login_at=now))
                    return Link(found, created=False)
            subject = "fed-" + secrets.token_urlsafe(18)
            try:
                with audit.transaction(self._engine) as tx:
                    tx.conn.execute(insert(_table), [{"issuer": issuer, "upstream_subject": upstream_subject,
                                                      "subject": subject, "claims": text, "created_at": now,
                                                      "last_login_at": now}])
                    tx.record(audit.Record("federation.identity_linked", f"federation:{upstream}", data={
                        "issuer": issuer, "upstream_subject": upstream_subject, "subject": subject}))
                return Link(subject, created=True)
            except IntegrityError:
                continue
        raise RuntimeError("federated identity could not be linked")  # unreachable: the row exists now
