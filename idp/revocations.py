"""Revoked access tokens, by ``jti`` (RFC 7009), kept until the token would have expired anyway."""

from __future__ import annotations

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from . import audit, clock
from .models import RevokedToken

_revoked = RevokedToken.__table__  # type: ignore[attr-defined]


class RevocationList:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def revoke(self, jti: str, *, client_id: str, expires_at: int, actor: str) -> bool:
        """Record a revocation; False if it was already revoked (idempotent, one audit record)."""
        try:
            with audit.transaction(self._engine) as tx:
                row = {"jti": jti, "client_id": client_id, "expires_at": expires_at, "revoked_at": clock.now()}
                tx.conn.execute(insert(_revoked), [row])
                tx.record(audit.Record("token.revoked", actor, client_id=client_id, jti=jti, data={"exp": expires_at}))
        except IntegrityError:
            return False
        return True

    def is_revoked(self, jti: str) -> bool:
        with self._engine.connect() as conn:
            return conn.execute(select(_revoked.c.jti).where(_revoked.c.jti == jti)).first() is not None

    def active(self, now: int | None = None) -> list[dict[str, int | str]]:
        """Revocations of tokens that have not expired yet: what a resource server must refuse."""
        now = clock.now() if now is None else now
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(_revoked.c.jti, _revoked.c.expires_at)
                .where(_revoked.c.expires_at >= now)
                .order_by(_revoked.c.expires_at)
            ).all()
        return [{"jti": r.jti, "exp": r.expires_at} for r in rows]

    def prune(self) -> int:
        """Forget revocations of tokens that have expired (they are refused for expiry anyway)."""
        cutoff = clock.now() - 3600
        with self._engine.begin() as conn:
            return conn.execute(delete(_revoked).where(_revoked.c.expires_at < cutoff)).rowcount or 0
