"""Replay cache of ``private_key_jwt`` client assertions (RFC 7523 §3, item 7), in the database so
that every IdP process sees each ``jti`` (the :class:`~idp.oauth2.stores.AssertionJtiStore`)."""

from __future__ import annotations

import hashlib

from sqlalchemy import Engine, delete, insert
from sqlalchemy.exc import IntegrityError

from . import clock
from .models import AssertionJti

_jtis = AssertionJti.__table__  # type: ignore[attr-defined]


class AssertionReplayCache:
    """``jti`` values of accepted client assertions, shared by all processes through the database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def claim(self, client_id: str, jti: str, expires_at: int) -> bool:
        # surrogatepass: a jti may hold a lone surrogate
        key = hashlib.sha256(f"{client_id}\0{jti}".encode("utf-8", "surrogatepass")).hexdigest()
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(_jtis), [{"key": key, "expires_at": expires_at}])
        except IntegrityError:
            return False
        return True

    def prune(self) -> int:
        with self._engine.begin() as conn:
            return conn.execute(delete(_jtis).where(_jtis.c.expires_at < clock.now() - 600)).rowcount or 0
