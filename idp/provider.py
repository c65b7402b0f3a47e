"""The provider: the storage objects and settings every endpoint and CLI command works with.

It is what the protocol handlers get (:class:`idp.oauth2.stores.Stores`): SQL-backed stores
behind the narrow interfaces ``idp.oauth2`` depends on.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from . import audit, db
from .assertion_jtis import AssertionReplayCache
from .authorization_codes import AuthorizationCodes
from .clients import ClientRegistry
from .config import Settings
from .keystore import Keystore
from .oauth2.client import ClientRecord
from .oauth2.client_auth import AuthContext
from .oauth2.throttle import AuthThrottle
from .policy import Policy
from .resources import ResourceRegistry
from .revocations import RevocationList
from .signing_keys import KeyRing
from .token_families import TokenFamilies

if TYPE_CHECKING:
    from .consent import ConsentGrants
    from .users import Users
    from .web.interactions import Interactions
    from .web.session import WebSessions


@dataclass(frozen=True, slots=True)
class GroupCommittedLog:
    """The audit log as ``idp.oauth2`` sees it (:class:`~idp.oauth2.stores.AuditLog`): records go
    through the provider's group committer, created on first use."""

    provider: Provider

    def record(self, event: str, actor: str, *, client_id: str | None = None, jti: str | None = None,
               data: dict[str, Any] | None = None, ts: int | None = None) -> Awaitable[None]:
        rec = audit.Record(event, actor, client_id=client_id, jti=jti, data=data, ts=ts)
        return self.provider.committer.record(rec)


@dataclass(frozen=True, slots=True)
class RegisteredClients:
    """Resolves only registered clients (Client ID Metadata Documents plug in here)."""

    clients: ClientRegistry

    async def resolve(self, client_id: str) -> ClientRecord | None:
        return self.clients.get(client_id)


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
    auth_throttle: AuthThrottle
    resources: ResourceRegistry
    policy: Policy
    client_resolver: RegisteredClients
    token_families: TokenFamilies
    authorization_codes: AuthorizationCodes
    _committer: audit.GroupCommitter | None = field(default=None, repr=False)
    _last_forced_key_refresh: float = field(default=float("-inf"), repr=False)

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True, initial_key: bool = True) -> Provider:
        # First: a broken policy folder refuses to start (PolicyError, one message naming file:line).
        policy = Policy(settings.policy_dir, reload_interval=settings.policy_reload)
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
        clients = ClientRegistry(engine)
        families = TokenFamilies(engine, settings)
        resources = ResourceRegistry(engine)
        policy.resources = resources  # the catalogue tells policies which tools are destructive
        return cls(
            settings=settings,
            engine=engine,
            keystore=keystore,
            clients=clients,
            keys=keys,
            revocations=RevocationList(engine),
            assertion_jtis=AssertionReplayCache(engine),
            auth_context=AuthContext(
                issuer=issuer,
                audiences=frozenset({issuer, issuer + "/token", issuer + "/introspect", issuer + "/revoke"}),
                clock_skew=settings.clock_skew,
            ),
            auth_throttle=AuthThrottle(
                per_client=settings.auth_fail_client,
                per_address=settings.auth_fail_address,
                window=settings.auth_fail_window,
                audit_limit=settings.auth_fail_audits,
            ),
            resources=resources,
            policy=policy,
            client_resolver=RegisteredClients(clients),
            token_families=families,
            authorization_codes=AuthorizationCodes(engine, settings, families),
        )

    # --- web pages (idp/web): people, their sessions, consent; built on first use ---
    @cached_property
    def users(self) -> Users:
        from .users import Users

        return Users(self.engine)

    @cached_property
    def consents(self) -> ConsentGrants:
        from .consent import ConsentGrants

        return ConsentGrants(self.engine)

    @cached_property
    def web_sessions(self) -> WebSessions:
        from .web.session import WebSessions

        return WebSessions(self.engine, self.settings)

    @cached_property
    def interactions(self) -> Interactions:
        from .web.interactions import Interactions

        return Interactions(self.engine, self.settings)

    @cached_property
    def login_throttle(self) -> AuthThrottle:
        """Failed local-account logins, per account (the ``client_id`` key) and per address."""
        s = self.settings
        return AuthThrottle(per_client=s.login_fail_account, per_address=s.login_fail_address,
                            window=s.login_fail_window, audit_limit=s.auth_fail_audits)

    @property
    def committer(self) -> audit.GroupCommitter:
        if self._committer is None:
            self._committer = audit.GroupCommitter(self.engine)
        return self._committer

    @property
    def audit_log(self) -> GroupCommittedLog:
        return GroupCommittedLog(self)

    def refresh_keys_for_unknown_kid(self) -> bool:
        """A kid we do not know may be a key another process just created: re-read, at most once a second."""
        if time.monotonic() - self._last_forced_key_refresh < 1.0:
            return False
        self._last_forced_key_refresh = time.monotonic()
        self.keys.refresh(force=True)
        return True

    def maintain(self) -> list[str]:
        """Periodic housekeeping, safe to run in every process at once."""
        events: list[str] = list(self.keys.maintain())  # (KeyRing.list shadows list in its annotations)
        pruned = audit.prune(self.engine, self.settings.audit_retention_days)
        if pruned:
            events.append(f"pruned {pruned} audit records")
        self.revocations.prune()
        self.assertion_jtis.prune()
        self.web_sessions.prune()
        self.interactions.prune()
        self.authorization_codes.prune()
        self.token_families.prune()
        if self.settings.catalogue_max_age:
            from .catalogue import refresh_stale  # imports the MCP client only when used

            events.extend(refresh_stale(self, self.settings.catalogue_max_age))
        return events

    def close(self) -> None:
        self.engine.dispose()
