"""A started upstream login, kept in its interaction's ``data`` (table ``interactions``).

Under the key ``"federation"``: the upstream's name, a hash of the ``state`` sent to it, the
``nonce`` and the PKCE verifier, a hash of the browser binding cookie and when it started.
It is consumed by a compare-and-swap of the whole ``data`` column before the code is redeemed,
so of two callbacks carrying the same ``state`` (a replay, a double submit) only one goes on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select, update

from .. import clock
from ..models import Interaction

_table = Interaction.__table__  # type: ignore[attr-defined]
KEY = "federation"


@dataclass(frozen=True)
class InteractionRow:
    id: str
    raw: str  # the data column as read (compare-and-swap)
    data: dict[str, Any]
    expires_at: int

    @property
    def login(self) -> dict[str, Any] | None:
        found = self.data.get(KEY)
        return found if isinstance(found, dict) else None


class LoginStates:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def load(self, interaction_id: str) -> InteractionRow | None:
        """The interaction, or None when it does not exist or has expired."""
        if not isinstance(interaction_id, str) or not interaction_id or len(interaction_id) > 64 \
                or not interaction_id.isprintable():
            return None
        with self._engine.connect() as conn:
            row = conn.execute(select(_table.c.id, _table.c.data, _table.c.expires_at).where(
                _table.c.id == interaction_id)).first()
        if row is None or row.expires_at <= clock.now():
            return None
        try:
            data = json.loads(row.data or "{}")
        except ValueError:
            data = {}
        return InteractionRow(row.id, row.data, data if isinstance(data, dict) else {}, row.expires_at)

    def swap(self, row: InteractionRow, login: dict[str, Any] | None) -> bool:
        """Set (or, with None, remove) the started login, only if ``data`` is still as read."""
        data = {k: v for k, v in row.data.items() if k != KEY}
        if login is not None:
            data[KEY] = login
        with self._engine.begin() as conn:
            done = conn.execute(update(_table).where(_table.c.id == row.id, _table.c.data == row.raw).values(
                data=json.dumps(data, separators=(",", ":")))).rowcount
        return bool(done)
