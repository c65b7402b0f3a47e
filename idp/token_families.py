"""Token families: everything issued from one authorization code, so it can be revoked together.

A family starts when a code is redeemed (RFC 6749 §4.1.3). Its access tokens are recorded by
``jti`` (``family_tokens``) and its refresh tokens form a chain (``refresh_tokens``, hashes
only), each rotated on use (OAuth 2.1 §4.3.1, RFC 9700 §4.14.2). Revoking a family puts its
unexpired access tokens on the revocation list (introspection inactive, ``/revoked``) and kills
every refresh token of the chain (they are checked against the family on use).

A family is revoked when its code is redeemed a second time (RFC 6749 §4.1.2: "SHOULD revoke
all tokens previously issued based on that authorization code"), when one of its refresh tokens
is reused outside the retry grace (RFC 9700 §4.14.2), by ``idp grants revoke``
(:meth:`TokenFamilies.revoke_for`) and by RFC 7009 revocation of one of its refresh tokens.

Retry grace (``refresh_retry_grace`` seconds, default 10; docs/authorization.md): a client that
lost the answer to a refresh and presents the same refresh token again within the grace window,
while the successor it never received is still unused, gets a fresh successor once; the unused
successor is invalidated (presenting it later counts as reuse and revokes the family). A second
retry, a retry after the window, or one after the successor was used revokes the family.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections import namedtuple
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, insert, select, update

from . import audit, clock
from .config import Settings
from .models import FamilyToken, RefreshToken, RevokedToken, TokenFamily
from .oauth2.grant_records import Authorization, InvalidGrant, RefreshRotation
from .sql import Prepared

_families = TokenFamily.__table__  # type: ignore[attr-defined]
_family_tokens = FamilyToken.__table__  # type: ignore[attr-defined]
_refresh = RefreshToken.__table__  # type: ignore[attr-defined]
_revoked = RevokedToken.__table__  # type: ignore[attr-defined]
_RefreshRow = namedtuple("_RefreshRow", [c.name for c in _refresh.c])  # type: ignore[misc]
REFRESH_PREFIX = "cbstr_"  # makes leaked refresh tokens easy for scanners to recognise
SUPERSEDED = ""  # successor_hash of a token that may not be retried again
MAX_TOKEN_LENGTH = 256


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _new_refresh_token() -> tuple[str, str]:
    token = REFRESH_PREFIX + secrets.token_urlsafe(32)  # 256 bits
    return token, token_hash(token)


class TokenFamilies:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        # The statements of every redemption and refresh, compiled once and run on the
        # transaction's own DB-API connection: building and executing them through SQLAlchemy
        # cost more than the rest of the request (idp/sql.py). Cold paths stay plain SQLAlchemy.
        fam, ref = _families.c, _refresh.c
        self._insert_family = Prepared(engine, insert(_families), [c.name for c in _families.c])
        self._insert_family_token = Prepared(engine, insert(_family_tokens), [c.name for c in _family_tokens.c])
        self._insert_refresh_token = Prepared(engine, insert(_refresh), [c.name for c in _refresh.c])
        self._lock = Prepared(engine, update(_families).where(
            fam.family_id == bindparam("family_id"), fam.revoked_at.is_(None), fam.expires_at > bindparam("now"),
        ).values(revoked_at=fam.revoked_at))
        self._family_expiry = Prepared(engine, select(fam.expires_at).where(fam.family_id == bindparam("family_id")))
        self._family_state = Prepared(engine, select(fam.revoked_at, fam.expires_at)
                                      .where(fam.family_id == bindparam("family_id")))
        self._refresh_row = Prepared(engine, select(_refresh).where(ref.token_hash == bindparam("digest")))
        self._use_refresh = Prepared(engine, update(_refresh).where(
            ref.token_hash == bindparam("digest"), ref.used_at.is_(None)).values(used_at=bindparam("now")))
        self._set_successor = Prepared(engine, update(_refresh).where(ref.token_hash == bindparam("digest"))
                                       .values(successor_hash=bindparam("successor")))

    # --- starting a family and adding to it ---------------------------------------------------

    def start(self, conn: Connection, auth: Authorization, now: int, *, access: tuple[str, int] | None = None,
              refresh: bool = False) -> str | None:
        """Create the family of a code being redeemed (in the redeeming transaction), with its first
        access token (jti, exp) and, with ``refresh``, its first refresh token (returned)."""
        family_expires = now + self._settings.refresh_family_lifetime
        self._insert_family.rowcount_in(
            conn, family_id=auth.family_id, client_id=auth.client_id, subject=auth.subject.id[:128],
            resource=auth.resource, created_at=now, expires_at=family_expires, revoked_at=None, revoked_reason=None)
        if access is not None:
            self._insert_family_token.rowcount_in(conn, jti=access[0], family_id=auth.family_id, expires_at=access[1])
        return self._insert_refresh(conn, auth, now, family_expires)[0] if refresh else None

    def _lock_live(self, conn: Connection, family_id: str, now: int) -> int | None:
        """Lock the family row if it is live (not revoked, not expired); its expiry, else None.
        The no-op UPDATE takes the row lock, so a concurrent revocation either waits for us (and
        then sees our token) or has already committed (and we see it)."""
        if not self._lock.rowcount_in(conn, family_id=family_id, now=now):
            return None
        row = self._family_expiry.first_in(conn, family_id=family_id)
        assert row is not None  # locked just now
        return int(row[0])

    def _insert_refresh(self, conn: Connection, auth: Authorization, now: int, family_expires: int,
                        ) -> tuple[str, int]:
        token, digest = _new_refresh_token()
        expires = min(now + self._settings.refresh_token_ttl, family_expires)
        self._insert_refresh_token.rowcount_in(
            conn, token_hash=digest, family_id=auth.family_id, client_id=auth.client_id,
            data=json.dumps(auth.to_json(), separators=(",", ":"), default=str), created_at=now, expires_at=expires,
            used_at=None, successor_hash=None)
        return token, expires

    # --- the refresh token grant ---------------------------------------------------------------

    def rotate(self, token: str, *, client_id: str, check: Callable[[Authorization], None] | None = None,
               access: Callable[[Authorization], tuple[str, int]] | None = None) -> RefreshRotation:
        """Exchange a refresh token for its successor (RFC 6749 §6); InvalidGrant if it is unknown,
        expired, revoked or another client's. A reuse outside the retry grace revokes the family.
        ``check`` sees the authorization before anything is written; what it raises spends nothing.
        ``access`` gives the (jti, exp) of the access token issued with the successor, recorded in
        the family in the same transaction (one commit per refresh, and no revocation can fall
        between the rotation and the record)."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or not token.isprintable():
            raise InvalidGrant("refresh token is invalid")
        digest = token_hash(token)
        now = clock.now()
        with audit.transaction(self._engine) as tx:
            conn = tx.conn
            found = self._refresh_row.first_in(conn, digest=digest)
            if found is None:
                raise InvalidGrant("refresh token is invalid")
            row: Any = _RefreshRow(*found)
            if row.client_id != client_id:
                raise InvalidGrant("refresh token was issued to another client")
            if row.expires_at <= now:
                raise InvalidGrant("refresh token has expired")
            auth = Authorization.from_json(json.loads(row.data))
            family = self._family_state.first_in(conn, family_id=row.family_id)
            if family is None or family[0] is not None or family[1] <= now:
                raise InvalidGrant("refresh token was revoked")  # nothing to write: it is dead already
            if check is not None and row.used_at is None:
                check(auth)
            if row.used_at is None:
                if self._use_refresh.rowcount_in(conn, digest=digest, now=now):
                    family_expires = self._lock_live(conn, row.family_id, now)
                    if family_expires is None:
                        raise InvalidGrant("refresh token was revoked")
                    successor, expires = self._insert_refresh(conn, auth, now, family_expires)
                    self._set_successor.rowcount_in(conn, digest=digest, successor=token_hash(successor))
                    self._record_access(conn, row.family_id, auth, access)
                    return RefreshRotation(auth, successor, expires)
                row = conn.execute(select(_refresh).where(_refresh.c.token_hash == digest)).one()  # lost a race
            retried = self._grace_retry(conn, row, auth, now, check)
            if retried is not None:
                self._record_access(conn, row.family_id, auth, access)
                tx.record(audit.Record("refresh_token.retried", client_id, client_id=client_id,
                                       data={"family_id": row.family_id, "sub": auth.subject.id}))
                return retried
            revoked = self._revoke(tx, [row.family_id], reason="refresh_token_reused", actor=client_id, now=now)
            tx.record(audit.Record("refresh_token.reused", client_id, client_id=client_id,
                                   data={"family_id": row.family_id, "sub": auth.subject.id,
                                         "revoked_access_tokens": revoked}))
        raise InvalidGrant("refresh token was already used; every token of its authorization is revoked")

    def _record_access(self, conn: Connection, family_id: str, auth: Authorization,
                       access: Callable[[Authorization], tuple[str, int]] | None) -> None:
        if access is not None:
            jti, expires_at = access(auth)
            self._insert_family_token.rowcount_in(conn, jti=jti, family_id=family_id, expires_at=expires_at)

    def _grace_retry(self, conn: Connection, row: Any, auth: Authorization, now: int,
                     check: Callable[[Authorization], None] | None) -> RefreshRotation | None:
        grace = self._settings.refresh_retry_grace
        if not grace or not row.successor_hash or row.used_at is None or now - row.used_at > grace:
            return None
        if check is not None:
            check(auth)  # a retry must be a valid request too; refused, it spends nothing
        family_expires = self._lock_live(conn, row.family_id, now)
        if family_expires is None:
            return None
        # The successor the client never received: invalidated, so that it is a reuse if it ever comes.
        dropped = conn.execute(update(_refresh).where(
            _refresh.c.token_hash == row.successor_hash, _refresh.c.used_at.is_(None),
        ).values(used_at=now, successor_hash=SUPERSEDED)).rowcount
        if not dropped:
            return None  # the successor was used: the retry is a replay
        once = conn.execute(update(_refresh).where(
            _refresh.c.token_hash == row.token_hash, _refresh.c.successor_hash == row.successor_hash,
        ).values(successor_hash=SUPERSEDED)).rowcount
        if not once:
            return None
        successor, expires = self._insert_refresh(conn, auth, now, family_expires)
        return RefreshRotation(auth, successor, expires, grace_retry=True)

    # --- revocation ----------------------------------------------------------------------------

    def _revoke(self, tx: audit.Transaction, family_ids: Iterable[str], *, reason: str, actor: str, now: int) -> int:
        """Revoke families in ``tx``: mark them, put their unexpired access tokens on the revocation
        list (one audit record each). Returns the number of access tokens revoked."""
        ids = list(dict.fromkeys(family_ids))
        if not ids:
            return 0
        conn = tx.conn
        conn.execute(update(_families).where(_families.c.family_id.in_(ids), _families.c.revoked_at.is_(None))
                     .values(revoked_at=now, revoked_reason=reason[:64]))
        owners = {r.family_id: r.client_id for r in conn.execute(
            select(_families.c.family_id, _families.c.client_id).where(_families.c.family_id.in_(ids)))}
        tokens = conn.execute(select(_family_tokens.c.jti, _family_tokens.c.family_id, _family_tokens.c.expires_at)
                              .where(_family_tokens.c.family_id.in_(ids), _family_tokens.c.expires_at > now)).all()
        jtis = [t.jti for t in tokens]
        already: set[str] = set()
        if jtis:
            already = {r.jti for r in conn.execute(select(_revoked.c.jti).where(_revoked.c.jti.in_(jtis)))}
        rows = [{"jti": t.jti, "client_id": owners.get(t.family_id, ""), "expires_at": t.expires_at, "revoked_at": now}
                for t in tokens if t.jti not in already]
        if rows:
            conn.execute(insert(_revoked), rows)
            tx.record(*(audit.Record("token.revoked", actor, client_id=r["client_id"] or None, jti=r["jti"],
                                     data={"exp": r["expires_at"], "reason": reason}) for r in rows))
        tx.record(*(audit.Record("token_family.revoked", actor, client_id=owners.get(f),
                                 data={"family_id": f, "reason": reason}) for f in ids))
        return len(rows)

    def revoke_family(self, family_id: str, *, reason: str, actor: str) -> int:
        """Revoke one family; the number of access tokens revoked."""
        with audit.transaction(self._engine) as tx:
            return self._revoke(tx, [family_id], reason=reason, actor=actor, now=clock.now())

    def revoke_for(self, subject: str, client_id: str | None = None, resource: str | None = None, *,
                   reason: str, actor: str) -> int:
        """Revoke every live family of ``subject`` (for one client and/or resource if given): their
        refresh tokens and unexpired access tokens, audited. Returns the number of families."""
        now = clock.now()
        query = select(_families.c.family_id).where(
            _families.c.subject == subject, _families.c.revoked_at.is_(None), _families.c.expires_at > now)
        if client_id is not None:
            query = query.where(_families.c.client_id == client_id)
        if resource is not None:
            query = query.where(_families.c.resource == resource)
        with audit.transaction(self._engine) as tx:
            ids = [r.family_id for r in tx.conn.execute(query)]
            self._revoke(tx, ids, reason=reason, actor=actor, now=now)
        return len(ids)

    def revoke_refresh_token(self, token: str, *, client_id: str) -> bool:
        """RFC 7009 revocation of a refresh token: its whole family. False if it is not one of this
        client's refresh tokens (the caller answers 200 either way, RFC 7009 §2.2)."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or not token.isprintable():
            return False
        with self._engine.connect() as conn:
            row = conn.execute(select(_refresh.c.family_id, _refresh.c.client_id)
                               .where(_refresh.c.token_hash == token_hash(token))).first()
        if row is None or row.client_id != client_id:
            return False
        self.revoke_family(row.family_id, reason="refresh_token_revoked", actor=client_id)
        return True

    def family_of(self, jti: str) -> dict[str, Any] | None:
        """The family an access token belongs to (for tests and ``idp grants``)."""
        with self._engine.connect() as conn:
            joined = _families.join(_family_tokens, _family_tokens.c.family_id == _families.c.family_id)
            row = conn.execute(select(_families).select_from(joined).where(_family_tokens.c.jti == jti)).first()
        return dict(row._mapping) if row else None

    def prune(self) -> int:
        """Forget expired refresh tokens, access-token records and families (an hour after expiry)."""
        cutoff = clock.now() - 3600
        with self._engine.begin() as conn:
            n = conn.execute(delete(_refresh).where(_refresh.c.expires_at < cutoff)).rowcount or 0
            n += conn.execute(delete(_family_tokens).where(_family_tokens.c.expires_at < cutoff)).rowcount or 0
            n += conn.execute(delete(_families).where(_families.c.expires_at < cutoff)).rowcount or 0
        return n
