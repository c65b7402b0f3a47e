"""Session pinning: each ``Mcp-Session-Id`` belongs to the client that opened it.

MCP transport spec, Streamable HTTP → Session Management: the server assigns the session id in
its answer to ``initialize``; later requests carry it; a server MUST answer 404 to a session
id it does not know, and a client receiving that MUST start a new session. The middleware pins
each id it *sees created* to the token's ``(client_id, subject)`` and refuses every other id
(404): an id it never saw created — made up, leaked, or from before a restart — is never
adopted by whoever presents it first, it only costs its owner a new ``initialize``.

Bounds: at most ``max_per_client`` sessions per owner (its own oldest is forgotten first), and
at most ``max_sessions`` in all — when full, the owner holding the most sessions loses its
oldest, so one client opening sessions in a loop can only ever evict its own.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["Owner", "SessionPins"]

#: Who a session belongs to: the token's ``(client_id, subject)``.
Owner = tuple[str, str]


class SessionPins:
    """In-memory pins, per process (a restart forgets them: sessions are then refused, 404)."""

    __slots__ = ("_by_owner", "_owner", "max_per_client", "max_sessions")

    def __init__(self, *, max_sessions: int, max_per_client: int) -> None:
        if max_sessions < 1 or max_per_client < 1:
            raise ValueError("session limits must be positive")
        self.max_sessions = max_sessions
        self.max_per_client = max_per_client
        self._owner: dict[str, Owner] = {}
        self._by_owner: dict[Owner, OrderedDict[str, None]] = {}  # oldest (least recently used) first

    def __len__(self) -> int:
        return len(self._owner)

    def pin(self, sid: str, owner: Owner) -> None:
        """Record that ``owner`` opened ``sid``. An id already pinned keeps its first owner."""
        if sid in self._owner:
            return
        mine = self._by_owner.get(owner)
        if mine is None:
            mine = self._by_owner[owner] = OrderedDict()
        while len(mine) >= self.max_per_client:
            self._forget_oldest(owner, mine)
        while len(self._owner) >= self.max_sessions:
            largest = max(self._by_owner, key=lambda o: len(self._by_owner[o]))  # rare: table full
            self._forget_oldest(largest, self._by_owner[largest])
        mine = self._by_owner.setdefault(owner, mine)
        mine[sid] = None
        self._owner[sid] = owner

    def owner(self, sid: str) -> Owner | None:
        """Who opened ``sid`` (and mark it recently used), or None if it was never seen created."""
        owner = self._owner.get(sid)
        if owner is not None:
            self._by_owner[owner].move_to_end(sid)
        return owner

    def forget(self, sid: str) -> None:
        """The session ended (DELETE, or the app no longer knows it)."""
        owner = self._owner.pop(sid, None)
        if owner is not None:
            mine = self._by_owner[owner]
            mine.pop(sid, None)
            if not mine:
                del self._by_owner[owner]

    def _forget_oldest(self, owner: Owner, mine: OrderedDict[str, None]) -> None:
        sid, _ = mine.popitem(last=False)
        del self._owner[sid]
        if not mine:
            del self._by_owner[owner]
