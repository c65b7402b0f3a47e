"""Signing-key lifecycle: create, pre-publish, activate, supersede, retire (RFC 7517 JWKS).

A key's life, all derived from three stored times (``created_at``, ``activate_at``,
``retired_at``) so every IdP process sharing the database agrees without coordination:

    created ── published in the JWKS ── activate_at ── signs ── superseded by a newer active key
        ── stays in the JWKS until every token it signed has expired ── retired (leaves the JWKS,
        private key destroyed)

A rotation creates a key whose ``activate_at`` lies ``prepublication`` seconds ahead (default
twice the JWKS ``max-age``), so any cache that honours the JWKS cache headers has fetched the
new key before the first token signed with it exists. A superseded key is retired
automatically at ``superseded_at + access_token_ttl + clock_skew + key_refresh_interval``.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from sdk.jws import PrivateKey, PublicKey

from . import audit, clock
from .config import Settings
from .errors import IdPError
from .keystore import Keystore
from .models import IdpState, SigningKey

log = logging.getLogger("cbst.keys")
_keys = SigningKey.__table__  # type: ignore[attr-defined]
_state = IdpState.__table__  # type: ignore[attr-defined]
_DESTROYED = json.dumps({"v": 1, "destroyed": True})


class KeyError_(IdPError, RuntimeError):
    """A key operation that cannot be done (unknown kid, retiring the only signer...)."""


@dataclass(frozen=True)
class KeyInfo:
    kid: str
    alg: str
    public_jwk: dict[str, Any]
    created_at: int
    activate_at: int
    retired_at: int | None

    def state(self, now: int, signer_kid: str | None) -> str:
        if self.retired_at is not None:
            return "retired"
        if self.kid == signer_kid:
            return "active"
        return "pending" if self.activate_at > now else "superseded"


class KeyRing:
    """The keys of this IdP as seen by one process, refreshed from the database periodically."""

    def __init__(self, engine: Engine, keystore: Keystore, settings: Settings) -> None:
        self._engine = engine
        self._keystore = keystore
        self._settings = settings
        self._lock = threading.Lock()
        self._infos: list[KeyInfo] = []  # non-retired keys, oldest activation first
        self._private: dict[str, PrivateKey] = {}
        self._public: dict[str, PublicKey] = {}
        self._loaded_at = float("-inf")
        self._jwks_cache: tuple[bytes, str] | None = None

    # --- reading ------------------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> None:
        """Re-read the keys when the refresh interval has passed (or now, with ``force``).

        While another thread is reading, a caller that already holds keys goes on with them
        instead of queueing behind it: with a hung database only that one thread hangs. A forced
        read waits for the other one at most ``database_timeout`` (then raises TimeoutError).
        """
        if not force and time.monotonic() - self._loaded_at < self._settings.key_refresh_interval:
            return
        waits = force or not self._infos
        lock = self._lock
        got = lock.acquire(timeout=self._settings.database_timeout) if waits else lock.acquire(blocking=False)
        if not got:
            if waits:
                raise TimeoutError("another thread reading the key set does not finish")
            return
        try:
            if not force and time.monotonic() - self._loaded_at < self._settings.key_refresh_interval:
                return
            with self._engine.connect() as conn:
                rows = conn.execute(
                    select(_keys).where(_keys.c.retired_at.is_(None)).order_by(_keys.c.activate_at, _keys.c.created_at)
                ).all()
            infos: list[KeyInfo] = []
            private: dict[str, PrivateKey] = {}
            for row in rows:
                infos.append(KeyInfo(row.kid, row.alg, json.loads(row.public_jwk), row.created_at, row.activate_at,
                                     None))
                key = self._private.get(row.kid)
                if key is None:  # decrypt each key once per process
                    key = PrivateKey.from_pkcs8(self._keystore.open_envelope(row.private_key, kid=row.kid), row.alg)
                private[row.kid] = key
            self._infos, self._private = infos, private
            self._public = {k: v.public for k, v in private.items()}
            self._jwks_cache = None
            self._loaded_at = time.monotonic()
        finally:
            self._lock.release()

    def signer(self, now: int | None = None) -> PrivateKey:
        self.refresh()
        info = self._signer_info(self._infos, clock.now() if now is None else now)
        if info is None:
            raise KeyError_("no active signing key (run `idp keys rotate --now`)")
        return self._private[info.kid]

    @staticmethod
    def _signer_info(infos: list[KeyInfo], now: int) -> KeyInfo | None:
        active = [i for i in infos if i.activate_at <= now and i.retired_at is None]
        return active[-1] if active else None

    def verification_keys(self) -> dict[str, PublicKey]:
        """Keys a token of ours may be signed with (all non-retired keys)."""
        self.refresh()
        return self._public

    def jwks(self) -> tuple[bytes, str]:
        """The JWKS document (bytes) and its ETag, read from the database on every call.

        Every process must publish a key as soon as any process signs with it: after
        ``idp keys rotate --now`` the processes start signing with the new key up to
        ``key_refresh_interval`` apart, and a verifier that meets the new kid refetches the JWKS
        from whichever process its request reaches. The key is in the database before anyone
        signs with it, so a fresh read always has it. (JWKS requests are rare: verifiers cache it.)
        """
        self.refresh(force=True)
        return self.held_jwks() or (b'{"keys":[]}', '"empty"')

    def held_jwks(self) -> tuple[bytes, str] | None:
        """The JWKS of the keys this process already holds, without touching the database (for
        when it is unavailable); None before the first successful read."""
        if not self._infos:
            return None
        if self._jwks_cache is None:
            body = json.dumps({"keys": [i.public_jwk for i in self._infos]}, separators=(",", ":")).encode()
            self._jwks_cache = (body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
        return self._jwks_cache

    def list(self) -> list[KeyInfo]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(_keys).order_by(_keys.c.activate_at, _keys.c.created_at)).all()
        return [KeyInfo(r.kid, r.alg, json.loads(r.public_jwk), r.created_at, r.activate_at, r.retired_at)
                for r in rows]

    def retire_due(self, info: KeyInfo, infos: builtins.list[KeyInfo], now: int) -> int | None:
        """When a superseded key leaves the JWKS; None while it signs or is pending."""
        later = [i for i in infos if i.activate_at > info.activate_at and i.activate_at <= now and i.retired_at is None]
        if not later or info.activate_at > now:
            return None
        superseded_at = min(i.activate_at for i in later)
        s = self._settings
        return superseded_at + s.access_token_ttl + s.clock_skew + s.key_refresh_interval

    # --- changing -----------------------------------------------------------------------------

    def create(self, *, now: int, activate_at: int, actor: str, reason: str,
               tx: audit.Transaction | None = None) -> KeyInfo:
        # Only a keystore that opens the existing keys may seal a new one: a process with the wrong
        # KEK/passphrase would otherwise add a key no correctly configured process can decrypt.
        self.refresh(force=True)
        key = PrivateKey.generate(self._settings.signing_alg)
        public_jwk = key.public.to_jwk()
        row = {
            "kid": key.kid,
            "alg": key.alg,
            "public_jwk": json.dumps(public_jwk, separators=(",", ":")),
            "private_key": self._keystore.seal(key.to_pkcs8(), kid=key.kid),
            "created_at": now,
            "activate_at": activate_at,
            "retired_at": None,
        }
        rec = audit.Record("key.created", actor,
                           data={"kid": key.kid, "alg": key.alg, "activate_at": activate_at, "reason": reason})
        if tx is None:
            with audit.transaction(self._engine) as own:
                own.conn.execute(insert(_keys), [row])
                own.record(rec)
        else:
            tx.conn.execute(insert(_keys), [row])
            tx.record(rec)
        self._loaded_at = float("-inf")
        return KeyInfo(key.kid, key.alg, public_jwk, now, activate_at, None)

    def ensure_initial_key(self) -> KeyInfo | None:
        """On first start there is no key: create one that signs at once (no cache can hold a JWKS yet)."""
        now = clock.now()
        try:
            with audit.transaction(self._engine) as tx:
                existing = tx.conn.execute(select(_keys.c.kid).where(_keys.c.retired_at.is_(None)).limit(1)).first()
                if existing is not None:
                    return None
                # Several processes may start together: the one whose claim row commits creates the key.
                tx.conn.execute(insert(_state), [{"name": "initial-key", "value": str(now)}])
                return self.create(now=now, activate_at=now, actor="system", reason="initial", tx=tx)
        except (IntegrityError, OperationalError):
            # Another process won the race (PostgreSQL: the claim row; SQLite: the write lock).
            with self._engine.connect() as conn:
                if conn.execute(select(_keys.c.kid).where(_keys.c.retired_at.is_(None)).limit(1)).first() is None:
                    raise
            return None

    def rotate(self, *, actor: str, immediate: bool = False) -> KeyInfo:
        now = clock.now()
        activate_at = now if immediate else now + self._settings.prepublication
        reason = "rotate --now" if immediate else "rotate"
        return self.create(now=now, activate_at=activate_at, actor=actor, reason=reason)

    def retire(self, kid: str, *, actor: str, reason: str = "manual") -> KeyInfo:
        now = clock.now()
        infos = [i for i in self.list() if i.retired_at is None]
        target = next((i for i in self.list() if i.kid == kid), None)
        if target is None:
            raise KeyError_(f"no key with kid {kid!r}")
        if target.retired_at is not None:
            raise KeyError_(f"key {kid} is already retired")
        signer = self._signer_info(infos, now)
        if signer is not None and signer.kid == kid:
            raise KeyError_(
                f"key {kid} is the current signing key; rotate first (`idp keys rotate --now`), then retire it"
            )
        with audit.transaction(self._engine) as tx:
            changed = tx.conn.execute(
                update(_keys).where(_keys.c.kid == kid, _keys.c.retired_at.is_(None))
                .values(retired_at=now, private_key=_DESTROYED)
            ).rowcount
            if changed:
                tx.record(audit.Record("key.retired", actor, data={"kid": kid, "reason": reason}))
        self._loaded_at = float("-inf")
        return KeyInfo(target.kid, target.alg, target.public_jwk, target.created_at, target.activate_at, now)

    def maintain(self) -> builtins.list[str]:
        """Retire keys whose tokens have all expired; start a scheduled rotation when one is due.

        Safe to run in every process at once: retirement is an idempotent conditional update and a
        scheduled rotation is claimed by inserting one ``idp_state`` row per superseded key.
        """
        now = clock.now()
        events: list[str] = []
        every = self.list()
        infos = [i for i in every if i.retired_at is None]
        for info in infos:
            due = self.retire_due(info, infos, now)
            if due is not None and now >= due:
                try:
                    self.retire(info.kid, actor="system", reason="all tokens expired")
                    events.append(f"retired {info.kid}")
                except KeyError_:
                    pass
        interval = self._settings.key_rotation_interval
        signer = self._signer_info(infos, now)
        pending = [i for i in infos if i.activate_at > now]
        if interval and signer is not None and not pending and now - signer.activate_at >= interval:
            try:
                with audit.transaction(self._engine) as tx:
                    # One claim row per superseded key and key count: of several processes, one
                    # rotates; a retired pending key changes nothing but the count, so the schedule
                    # resumes instead of colliding with its old claim forever.
                    claim = f"rotation:{signer.kid}:{len(every)}"
                    tx.conn.execute(insert(_state), [{"name": claim, "value": str(now)}])
                    info = self.create(
                        now=now, activate_at=now + self._settings.prepublication, actor="scheduler",
                        reason="scheduled", tx=tx,
                    )
                    events.append(f"rotated {info.kid}")
            except IntegrityError:
                pass
        if events:
            self.refresh(force=True)
        return events
