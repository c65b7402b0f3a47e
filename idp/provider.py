"""The provider: the storage objects and settings every endpoint and CLI command works with."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import Engine

from . import audit, db
from .clients import ClientRegistry
from .config import Settings
from .keystore import Keystore
from .oauth2.client_auth import AssertionReplayCache, AuthContext
from .revocations import RevocationList
from .signing_keys import KeyRing


@dataclass
class Provider:
    settings: Settings
    engine: Engine
    keystore: Keystore
    clients: ClientRegistry
    keys: KeyRing
    revocations: RevocationList
    assertion_jtis: AssertionReplayCache
    auth_context: AuthContext
    _committer: audit.GroupCommitter | None = field(default=None, repr=False)
    _last_forced_key_refresh: float = field(default=float("-inf"), repr=False)

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True, initial_key: bool = True) -> Provider:
        engine = db.create_db_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
        if migrate:
            db.upgrade(engine)
        keystore = Keystore.open(
            keys_dir=settings.keys_dir,
            kek=settings.keystore_kek.get_secret_value() if settings.keystore_kek else None,
            passphrase=settings.keystore_passphrase.get_secret_value() if settings.keystore_passphrase else None,
        )
        keys = KeyRing(engine, keystore, settings)
        if initial_key:
            keys.ensure_initial_key()
        issuer = settings.issuer
        return cls(
            settings=settings,
            engine=engine,
            keystore=keystore,
            clients=ClientRegistry(engine),
            keys=keys,
            revocations=RevocationList(engine),
            assertion_jtis=AssertionReplayCache(engine),
            auth_context=AuthContext(
                issuer=issuer,
                audiences=frozenset({issuer, issuer + "/token", issuer + "/introspect", issuer + "/revoke"}),
                clock_skew=settings.clock_skew,
            ),
        )

    @property
    def committer(self) -> audit.GroupCommitter:
        if self._committer is None:
            self._committer = audit.GroupCommitter(self.engine)
        return self._committer

    def refresh_keys_for_unknown_kid(self) -> bool:
        """A kid we do not know may be a key another process just created: re-read, at most once a second."""
        if time.monotonic() - self._last_forced_key_refresh < 1.0:
            return False
        self._last_forced_key_refresh = time.monotonic()
        self.keys.refresh(force=True)
        return True

    def maintain(self) -> list[str]:
        """Periodic housekeeping, safe to run in every process at once."""
        events = self.keys.maintain()
        pruned = audit.prune(self.engine, self.settings.audit_retention_days)
        if pruned:
            events.append(f"pruned {pruned} audit records")
        self.revocations.prune()
        self.assertion_jtis.prune()
        return events

    def close(self) -> None:
        self.engine.dispose()
