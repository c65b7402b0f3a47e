"""Local accounts: people who log in at the IdP itself with a username and password.

For small deployments and the quick start (larger ones federate to an upstream OpenID Connect
provider). Passwords are hashed with argon2id (RFC 9106) by ``argon2-cffi``'s
:class:`~argon2.PasswordHasher`, with its defaults (the RFC's low-memory profile); a hash made
with older parameters is upgraded at the next successful login.

A user's subject (the token's ``sub``) is a stable random id, never the username: renaming or
removing and re-adding a name must not hand someone else's grants and tokens to a new person.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from . import audit, clock
from .errors import IdPError
from .models import User

__all__ = ["MAX_PASSWORD", "MIN_PASSWORD", "UserError", "UserRecord", "Users"]

_users = User.__table__  # type: ignore[attr-defined]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,190}")
MIN_PASSWORD = 8
#: Hashing cost does not depend on the length, but nothing needs more and a bound keeps bodies small.
MAX_PASSWORD = 1024
MAX_GROUPS = 64
SUBJECT_PREFIX = "usr_"


class UserError(IdPError, ValueError):
    """A user that cannot be added or changed; the message says why."""


@dataclass(frozen=True)
class UserRecord:
    subject: str
    username: str
    claims: dict[str, Any] = field(default_factory=dict)  # email, groups
    enabled: bool = True
    created_at: int = 0
    updated_at: int = 0

    @property
    def subject_claims(self) -> dict[str, Any]:
        """What policy and the ID token may read about this person."""
        return {"username": self.username, "preferred_username": self.username, "login": "local", **self.claims}

    def public_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "username": self.username, "email": self.claims.get("email"),
                "groups": list(self.claims.get("groups", [])), "enabled": self.enabled,
                "created_at": self.created_at, "updated_at": self.updated_at}


def validate_username(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UserError("a username is 1-64 letters, digits, '.', '_', '@', '+' or '-', starting alphanumeric")
    return name


def validate_password(password: object) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise UserError(f"a password is {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    if "\x00" in password or not all(c.isprintable() or c == " " for c in password):
        raise UserError("a password must not contain control characters")
    return password


def _claims(email: str | None, groups: Sequence[str]) -> dict[str, Any]:
    claims: dict[str, Any] = {}
    if email is not None:
        if not _EMAIL.fullmatch(email):
            raise UserError(f"{email!r} is not an email address")
        claims["email"] = email
    bad = [g for g in groups if not _GROUP.fullmatch(g)]
    if bad:
        raise UserError(f"group {bad[0]!r}: 1-64 letters, digits, '.', '_', ':', '/' or '-'")
    if len(groups) > MAX_GROUPS:
        raise UserError(f"at most {MAX_GROUPS} groups")
    claims["groups"] = list(dict.fromkeys(groups))
    return claims


class Users:
    """The ``users`` table behind a narrow interface (SQLite and PostgreSQL alike)."""

    def __init__(self, engine: Engine, hasher: PasswordHasher | None = None) -> None:
        self._engine = engine
        self._hasher = hasher or PasswordHasher()
        # Verified against when the username is unknown, so that a miss costs what a hit costs.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    @staticmethod
    def _record(row: Any) -> UserRecord:
        return UserRecord(subject=row.subject, username=row.username, claims=json.loads(row.claims or "{}"),
                          enabled=bool(row.enabled), created_at=row.created_at, updated_at=row.updated_at)

    def add(self, username: str, password: str, *, email: str | None = None, groups: Sequence[str] = (),
            actor: str = "cli") -> UserRecord:
        validate_username(username)
        validate_password(password)
        claims = _claims(email, groups)
        now = clock.now()
        row = {"subject": SUBJECT_PREFIX + secrets.token_hex(16), "username": username,
               "password_hash": self._hasher.hash(password), "claims": json.dumps(claims, separators=(",", ":")),
               "enabled": True, "created_at": now, "updated_at": now}
        try:
            with audit.transaction(self._engine) as tx:
                tx.conn.execute(insert(_users), [row])
                tx.record(audit.Record("user.added", actor, data={"subject": row["subject"], "username": username,
                                                                   **claims}))
        except IntegrityError:
            raise UserError(f"user {username!r} already exists") from None
        return self._record(type("Row", (), row))

    def find(self, ref: str) -> UserRecord | None:
        """By username or subject."""
        if not isinstance(ref, str) or not ref or len(ref) > 128 or not ref.isprintable():
            return None
        with self._engine.connect() as conn:
            row = conn.execute(select(_users).where(or_(_users.c.username == ref, _users.c.subject == ref))).first()
        return self._record(row) if row else None

    def get_subject(self, subject: str) -> UserRecord | None:
        if not isinstance(subject, str) or not subject.startswith(SUBJECT_PREFIX) or len(subject) > 128:
            return None
        with self._engine.connect() as conn:
            row = conn.execute(select(_users).where(_users.c.subject == subject)).first()
        return self._record(row) if row else None

    def list(self) -> list[UserRecord]:
        with self._engine.connect() as conn:
            return [self._record(r) for r in conn.execute(select(_users).order_by(_users.c.username))]

    def exist(self) -> bool:
        with self._engine.connect() as conn:
            return conn.execute(select(_users.c.subject).limit(1)).first() is not None

    def remove(self, ref: str, *, actor: str = "cli") -> UserRecord:
        found = self.find(ref)
        if found is None:
            raise UserError(f"no user {ref!r}")
        with audit.transaction(self._engine) as tx:
            tx.conn.execute(delete(_users).where(_users.c.subject == found.subject))
            tx.record(audit.Record("user.removed", actor, data={"subject": found.subject,
                                                                 "username": found.username}))
        return found

    def set_password(self, ref: str, password: str, *, actor: str = "cli") -> UserRecord:
        validate_password(password)
        found = self.find(ref)
        if found is None:
            raise UserError(f"no user {ref!r}")
        hashed = self._hasher.hash(password)
        with audit.transaction(self._engine) as tx:
            tx.conn.execute(update(_users).where(_users.c.subject == found.subject).values(
                password_hash=hashed, updated_at=clock.now()))
            tx.record(audit.Record("user.password_changed", actor, data={"subject": found.subject,
                                                                          "username": found.username}))
        return found

    def authenticate(self, username: str, password: str) -> UserRecord | None:
        """The enabled user with this username and password, or None. A hash is verified in every
        case (the dummy one for unknown or malformed names), so timing tells little about which."""
        row = None
        if isinstance(username, str) and _NAME.fullmatch(username):
            with self._engine.connect() as conn:
                row = conn.execute(select(_users).where(_users.c.username == username)).first()
        ok = self._verify(row.password_hash if row is not None else self._dummy_hash,
                          password if isinstance(password, str) and len(password) <= MAX_PASSWORD else "")
        if row is None or not ok or not row.enabled:
            return None
        if self._hasher.check_needs_rehash(row.password_hash):
            with self._engine.begin() as conn:  # same password, current parameters: no audit event
                conn.execute(update(_users).where(_users.c.subject == row.subject).values(
                    password_hash=self._hasher.hash(password)))
        return self._record(row)

    def _verify(self, hashed: str, password: str) -> bool:
        try:
            return self._hasher.verify(hashed, password.encode("utf-8", "surrogatepass"))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
