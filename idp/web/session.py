"""Browser sessions at the IdP's pages (``web_sessions``), and :func:`complete_login`.

The cookie holds a 256-bit random id; the database holds only its SHA-256, so a copy of the
table logs nobody in. Audit records and the ID token name a session by ``sid``, a separate
random public id, never by the cookie. A browser first gets a *pre-session* (no subject; it
carries the CSRF key of the login forms, ``interaction_ttl`` long); logging in always creates a
new session with a new id and deletes the old one (session fixation, OWASP ASVS V3.2.1).

Cookie: ``HttpOnly``, ``SameSite=Lax`` (sent on the top-level navigation an MCP client starts
from elsewhere, not on cross-site POSTs), ``Path=/``, and ``Secure`` with the ``__Host-`` name
prefix unless the issuer is plain http on a loopback address (the quick start). A session ends
``session_idle_ttl`` seconds after its last use and ``session_absolute_ttl`` after login.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, delete, insert, select, update
from starlette.requests import Request
from starlette.responses import Response

from sdk.net import is_loopback

from .. import audit, blocking, clock
from ..config import Settings
from ..models import WebSession as WebSessionRow
from ..oauth2.subject import Subject

if TYPE_CHECKING:
    from ..provider import Provider

__all__ = ["WebSession", "WebSessions", "complete_login", "cookie_name", "current_session"]

_table = WebSessionRow.__table__  # type: ignore[attr-defined]
_COOKIE_VALUE = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32)
#: Extend a session's idle expiry at most this often (a write per page view is not needed).
_TOUCH_EVERY = 60


@dataclass(frozen=True)
class WebSession:
    id_hash: str
    sid: str  # public id (audit, ID token ``sid``)
    csrf_key: str
    subject: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)
    method: str | None = None  # login method name ("password", an upstream's name)
    auth_time: int | None = None
    created_at: int = 0
    expires_at: int = 0
    absolute_expires_at: int = 0

    @property
    def logged_in(self) -> bool:
        return self.subject is not None

    def as_subject(self) -> Subject:
        assert self.subject is not None
        return Subject(self.subject, claims=self.claims)


def hash_id(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def secure_cookies(settings: Settings) -> bool:
    parts = urlsplit(settings.issuer)
    return not (parts.scheme == "http" and is_loopback(parts.hostname or ""))


def cookie_name(settings: Settings) -> str:
    # __Host-: the browser accepts it only with Secure, Path=/ and no Domain (RFC 6265bis §4.1.3.2).
    return "__Host-cbst_session" if secure_cookies(settings) else "cbst_session"


class WebSessions:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings

    def create(self, *, subject: Subject | None = None, method: str | None = None,
               replaces: str | None = None) -> tuple[str, WebSession]:
        """A new session (a pre-session without ``subject``); returns the cookie value and it.
        ``replaces`` (a cookie value) is deleted in the same transaction."""
        s, now = self._settings, clock.now()
        value = secrets.token_urlsafe(32)
        if subject is None:
            expires = absolute = now + s.interaction_ttl
        else:
            absolute = now + s.session_absolute_ttl
            expires = min(now + s.session_idle_ttl, absolute)
        session = WebSession(id_hash=hash_id(value), sid=secrets.token_urlsafe(16), csrf_key=secrets.token_urlsafe(32),
                             subject=subject.id if subject else None, claims=dict(subject.claims) if subject else {},
                             method=method, auth_time=now if subject else None, created_at=now, expires_at=expires,
                             absolute_expires_at=absolute)
        data = {"sid": session.sid, "csrf": session.csrf_key, "claims": session.claims, "method": method,
                "absolute_expires_at": absolute}
        with self._engine.begin() as conn:
            if replaces is not None:
                conn.execute(delete(_table).where(_table.c.id_hash == hash_id(replaces)))
            conn.execute(insert(_table), [{"id_hash": session.id_hash, "subject": session.subject,
                                           "data": json.dumps(data, separators=(",", ":"), default=str),
                                           "auth_time": session.auth_time, "created_at": now, "expires_at": expires}])
        return value, session

    def get(self, value: str | None) -> WebSession | None:
        """The live session a cookie value names (its idle expiry extended), or None."""
        if not isinstance(value, str) or not _COOKIE_VALUE.fullmatch(value):
            return None
        now, id_hash = clock.now(), hash_id(value)
        with self._engine.connect() as conn:
            row = conn.execute(select(_table).where(_table.c.id_hash == id_hash, _table.c.expires_at > now)).first()
        if row is None:
            return None
        data = json.loads(row.data or "{}")
        absolute = int(data.get("absolute_expires_at") or row.expires_at)
        expires = row.expires_at
        if row.subject is not None and expires - now < self._settings.session_idle_ttl - _TOUCH_EVERY:
            expires = min(now + self._settings.session_idle_ttl, absolute)
            with self._engine.begin() as conn:
                conn.execute(update(_table).where(_table.c.id_hash == id_hash).values(expires_at=expires))
        return WebSession(id_hash=id_hash, sid=data.get("sid", ""), csrf_key=data.get("csrf", ""),
                          subject=row.subject, claims=data.get("claims") or {}, method=data.get("method"),
                          auth_time=row.auth_time, created_at=row.created_at, expires_at=expires,
                          absolute_expires_at=absolute)

    def delete(self, value: str | None) -> bool:
        if not isinstance(value, str) or not _COOKIE_VALUE.fullmatch(value):
            return False
        with self._engine.begin() as conn:
            return bool(conn.execute(delete(_table).where(_table.c.id_hash == hash_id(value))).rowcount)

    def delete_for_subject(self, subject: str) -> int:
        """End every session of a person (their account was removed)."""
        with self._engine.begin() as conn:
            return conn.execute(delete(_table).where(_table.c.subject == subject)).rowcount or 0

    def prune(self) -> int:
        with self._engine.begin() as conn:
            return conn.execute(delete(_table).where(_table.c.expires_at <= clock.now())).rowcount or 0


def cookie_value(request: Request, settings: Settings) -> str | None:
    return request.cookies.get(cookie_name(settings))


def current_session(request: Request, stores: Provider) -> WebSession | None:
    """The browser's live session (or pre-session), or None. Synchronous: call it off the loop."""
    return stores.web_sessions.get(cookie_value(request, stores.settings))


def set_cookie(response: Response, settings: Settings, value: str, session: WebSession) -> None:
    response.set_cookie(cookie_name(settings), value, max_age=max(0, session.absolute_expires_at - clock.now()),
                        path="/", secure=secure_cookies(settings), httponly=True, samesite="lax")


def clear_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(cookie_name(settings), path="/", secure=secure_cookies(settings), httponly=True,
                           samesite="lax")


async def complete_login(request: Request, stores: Provider, interaction_id: str, subject: Subject, *,
                         method: str) -> Response:
    """A login method proved who the person is: start a fresh session for ``subject`` (a new id;
    the old session or pre-session is deleted), then continue the interaction (a 303 to
    ``/interaction/{id}``: consent, or the redirect with the code). Called by the password page
    and by federation's callback."""
    from . import flow
    from .pages import redirect

    settings = stores.settings

    def login() -> Response:
        interaction = stores.interactions.get(interaction_id)
        if interaction is None:
            return flow.expired_page(request, stores)
        old_value = cookie_value(request, settings)
        old = stores.web_sessions.get(old_value)
        bound = interaction.data.get("sid")
        if bound is not None and (old is None or old.sid != bound):
            return flow.wrong_browser_page(request, stores)
        value, session = stores.web_sessions.create(subject=subject, method=method, replaces=old_value)
        data = stores.interactions.update_data(interaction_id, sid=session.sid, login_sid=session.sid)
        with audit.transaction(stores.engine) as tx:
            tx.record(audit.Record("session.login", subject.id, data={
                "session": session.sid, "subject": subject.id, "method": method,
                "client": interaction.request.get("client_id")}))
        # Post/redirect/get: the next step (consent, or the redirect to the client) is a GET of the
        # interaction, so reloading a page never re-sends a password.
        response = flow.expired_page(request, stores) if data is None else redirect(f"/interaction/{interaction_id}")
        set_cookie(response, settings, value, session)
        return response

    result: Response = await blocking.call(settings.database_timeout, login)
    return result
