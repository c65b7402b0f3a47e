"""Authorization codes (RFC 6749 §4.1.2), in SQL: only a SHA-256 hash of each code is stored.

A code is 256 random bits, lives ``authorization_code_ttl`` seconds (default 60; RFC 6749
§4.1.2 recommends at most 10 minutes) and is redeemed once: the redeeming UPDATE sets
``used_at`` only ``WHERE used_at IS NULL``, so of two concurrent redemptions exactly one wins,
on SQLite and PostgreSQL alike. The winner starts the code's token family in the same
transaction; a later redemption finds the code used and revokes that family
(:meth:`AuthorizationCodes.replayed`).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections import namedtuple
from typing import Any

from sqlalchemy import Engine, bindparam, delete, insert, select, update

from . import audit, clock
from .config import Settings
from .models import AuthorizationCode
from .oauth2.grant_records import Authorization, CodeRecord
from .oauth2.subject import Subject
from .sql import Prepared
from .token_families import TokenFamilies

_codes = AuthorizationCode.__table__  # type: ignore[attr-defined]
_CodeRow = namedtuple("_CodeRow", [c.name for c in _codes.c])  # type: ignore[misc]
MAX_CODE_LENGTH = 256


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


class AuthorizationCodes:
    def __init__(self, engine: Engine, settings: Settings, families: TokenFamilies) -> None:
        self._engine = engine
        self._settings = settings
        self._families = families
        # Compiled once, run on the DB-API connection (idp/sql.py): one of each per round trip.
        code = _codes.c
        self._insert = Prepared(engine, insert(_codes), [c.name for c in code])
        self._select = Prepared(engine, select(_codes).where(code.code_hash == bindparam("digest")))
        self._use = Prepared(engine, update(_codes).where(
            code.code_hash == bindparam("digest"), code.used_at.is_(None), code.expires_at > bindparam("now"),
        ).values(used_at=bindparam("now")))

    def issue(self, *, client_id: str, redirect_uri: str, resource: str, scope: str, other_scopes: list[str],
              code_challenge: str, nonce: str | None, subject: Subject, auth_time: int,
              session_id: str) -> str:
        """A new code bound to all of this (audited as ``authorization_code.issued``)."""
        code = secrets.token_urlsafe(32)
        now = clock.now()
        auth = Authorization(client_id=client_id, subject=subject, resource=resource, scope=scope,
                             other_scopes=tuple(other_scopes), auth_time=auth_time, session_id=session_id,
                             family_id=secrets.token_hex(16))
        data = {**auth.to_json(), "redirect_uri": redirect_uri, "code_challenge": code_challenge, "nonce": nonce}
        with audit.transaction(self._engine) as tx:
            self._insert.rowcount_in(
                tx.conn, code_hash=code_hash(code), client_id=client_id,
                data=json.dumps(data, separators=(",", ":"), default=str),
                family_id=auth.family_id, expires_at=now + self._settings.authorization_code_ttl, used_at=None)
            tx.record(audit.Record("authorization_code.issued", subject.id, client_id=client_id, ts=now, data={
                "sub": subject.id, "resource": resource, "scope": scope, "other_scopes": list(other_scopes),
                "session_id": session_id[:16] if session_id else None, "family_id": auth.family_id}))
        return code

    def get(self, code: str) -> CodeRecord | None:
        """The code's record (used or not, expired or not), or None if there is no such code."""
        if not isinstance(code, str) or not code or len(code) > MAX_CODE_LENGTH or not code.isprintable():
            return None
        found = self._select.first_tuple(digest=code_hash(code))
        if found is None:
            return None
        row: Any = _CodeRow(*found)
        data: dict[str, Any] = json.loads(row.data)
        return CodeRecord(code_hash=row.code_hash, authorization=Authorization.from_json(data),
                          redirect_uri=data["redirect_uri"], code_challenge=data["code_challenge"],
                          nonce=data.get("nonce"), expires_at=row.expires_at, used_at=row.used_at)

    def consume(self, record: CodeRecord, *, access: tuple[str, int] | None = None,
                refresh: bool = False) -> tuple[bool, str | None]:
        """Mark the code used and start its token family with the access token (jti, exp) and, with
        ``refresh``, the first refresh token, in one transaction (one commit per redemption);
        (False, None) if the code was used (or expired) meanwhile."""
        now = clock.now()
        with self._engine.begin() as conn:
            if not self._use.rowcount_in(conn, digest=record.code_hash, now=now):
                return False, None
            return True, self._families.start(conn, record.authorization, now, access=access, refresh=refresh)

    def replayed(self, record: CodeRecord, *, actor: str) -> int:
        """A used code came back: revoke every token issued from it (RFC 6749 §4.1.2), audited."""
        revoked = self._families.revoke_family(record.authorization.family_id, reason="authorization_code_replayed",
                                               actor=actor)
        with audit.transaction(self._engine) as tx:
            tx.record(audit.Record("authorization_code.replayed", actor, client_id=record.authorization.client_id,
                                   data={"family_id": record.authorization.family_id,
                                         "sub": record.authorization.subject.id, "revoked_access_tokens": revoked}))
        return revoked

    def prune(self) -> int:
        """Forget codes a day after they expired: until then a replay still revokes its family (after
        that, merely an unknown code)."""
        cutoff = clock.now() - 86400
        with self._engine.begin() as conn:
            return conn.execute(delete(_codes).where(_codes.c.expires_at < cutoff)).rowcount or 0
