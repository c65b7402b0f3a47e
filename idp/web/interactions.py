"""Authorization requests waiting for the person (``interactions``): login, chooser, consent.

``/authorize`` validates the request and, when a person has to act, stores it here under a
128-bit random id that the pages carry (``/interaction/{id}``, hidden form fields). A row lives
``interaction_ttl`` seconds and is deleted when the request is answered, so an id works once.
``data`` is a JSON object for the steps in between: the browser it is bound to (``sid``), the
consent offered, and whatever a login method keeps (federation's ``state`` and ``nonce``).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from .. import clock
from ..config import Settings
from ..models import Interaction as InteractionRow

__all__ = ["Interaction", "Interactions"]

_table = InteractionRow.__table__  # type: ignore[attr-defined]
_ID = re.compile(r"[A-Za-z0-9_-]{22}")  # token_urlsafe(16)


@dataclass(frozen=True)
class Interaction:
    id: str
    request: dict[str, Any]  # AuthorizationRequest.to_json()
    data: dict[str, Any] = field(default_factory=dict)
    created_at: int = 0
    expires_at: int = 0


def valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


class Interactions:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._ttl = settings.interaction_ttl

    def create(self, request: dict[str, Any], data: dict[str, Any] | None = None) -> Interaction:
        now = clock.now()
        row = {"id": secrets.token_urlsafe(16), "request": json.dumps(request, separators=(",", ":")),
               "data": json.dumps(data or {}, separators=(",", ":")), "created_at": now,
               "expires_at": now + self._ttl}
        with self._engine.begin() as conn:
            conn.execute(insert(_table), [row])
        return Interaction(str(row["id"]), request, dict(data or {}), now, now + self._ttl)

    def get(self, interaction_id: str) -> Interaction | None:
        """The unexpired interaction, or None (also for anything that cannot be an id)."""
        if not valid_id(interaction_id):
            return None
        with self._engine.connect() as conn:
            row = conn.execute(select(_table).where(_table.c.id == interaction_id,
                                                    _table.c.expires_at > clock.now())).first()
        if row is None:
            return None
        return Interaction(row.id, json.loads(row.request), json.loads(row.data or "{}"), row.created_at,
                           row.expires_at)

    def update_data(self, interaction_id: str, **changes: Any) -> dict[str, Any] | None:
        """Merge ``changes`` into the interaction's data (None if it is gone); returns the new data."""
        with self._engine.begin() as conn:
            row = conn.execute(select(_table.c.data).where(_table.c.id == interaction_id,
                                                           _table.c.expires_at > clock.now()).with_for_update()).first()
            if row is None:
                return None
            data = {**json.loads(row.data or "{}"), **changes}
            conn.execute(update(_table).where(_table.c.id == interaction_id).values(
                data=json.dumps(data, separators=(",", ":"))))
        return data

    def finish(self, interaction_id: str) -> bool:
        """Delete it (answered); False if it was already gone — a second answer must not happen."""
        with self._engine.begin() as conn:
            return bool(conn.execute(delete(_table).where(_table.c.id == interaction_id)).rowcount)

    def prune(self) -> int:
        with self._engine.begin() as conn:
            return conn.execute(delete(_table).where(_table.c.expires_at <= clock.now())).rowcount or 0
