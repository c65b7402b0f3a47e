"""What the protocol code needs from storage: narrow interfaces, implemented over SQL in ``idp``.

``idp.oauth2`` depends only on these ``typing.Protocol`` classes (it never imports SQLAlchemy);
:class:`idp.provider.Provider` satisfies :class:`Stores` with the SQL-backed registries, one code
path for SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from sdk.capabilities import CapabilitySet
from sdk.jws import PrivateKey, PublicKey

from .client import ClientRecord
from .grant_records import Authorization, CodeRecord, RefreshRotation
from .resource import ResourceRecord
from .subject import Subject

if TYPE_CHECKING:
    from ..config import Settings
    from ..policy import Decision
    from .client_auth import AuthContext
    from .throttle import AuthThrottle


class ClientStore(Protocol):
    def get(self, client_id: str) -> ClientRecord | None:
        """The client, or None (also for ids that cannot name one: NUL, lone surrogates, too long)."""


class RevocationStore(Protocol):
    def is_revoked(self, jti: str) -> bool: ...

    def revoke(self, jti: str, *, client_id: str, expires_at: int, actor: str) -> bool:
        """Record a revocation (with its audit record); False if it was already revoked."""


class AssertionJtiStore(Protocol):
    def claim(self, client_id: str, jti: str, expires_at: int) -> bool:
        """True the first time a client's assertion ``jti`` is seen (by any process), else False."""


class AuditLog(Protocol):
    def record(self, event: str, actor: str, *, client_id: str | None = None, jti: str | None = None,
               data: dict[str, Any] | None = None, ts: int | None = None) -> Awaitable[None]:
        """Append an audit record; the awaitable completes once it is durable (group commit)."""


class KeyStore(Protocol):
    def signer(self, now: int | None = None) -> PrivateKey: ...

    def verification_keys(self) -> Mapping[str, PublicKey]: ...


class ClientResolver(Protocol):
    async def resolve(self, client_id: str) -> ClientRecord | None:
        """The client an authorization request names: a registered one, or (for an https URL) the
        client its Client ID Metadata Document describes, fetched and cached. None if neither."""


class PolicyDecider(Protocol):
    def decide(self, subject: Subject, client: ClientRecord, resource: str, requested: CapabilitySet) -> Decision:
        """Which of the requested capabilities the subject may be granted for this client and resource."""


class ResourceStore(Protocol):
    def get(self, uri: str) -> ResourceRecord | None:
        """The registered protected resource, or None (the IdP mints tokens only for these)."""


class AuthorizationCodeStore(Protocol):
    """Authorization codes (RFC 6749 §4.1.2): hashed, short-lived, single use."""

    def issue(self, *, client_id: str, redirect_uri: str, resource: str, scope: str, other_scopes: list[str],
              code_challenge: str, nonce: str | None, subject: Subject, auth_time: int, session_id: str) -> str: ...

    def get(self, code: str) -> CodeRecord | None: ...

    def consume(self, record: CodeRecord, *, access: tuple[str, int] | None = None,
                refresh: bool = False) -> tuple[bool, str | None]:
        """Atomically mark the code used and start its token family, with the access token (jti, exp)
        and, with ``refresh``, the first refresh token; (False, None) if it was already used."""

    def replayed(self, record: CodeRecord, *, actor: str) -> int:
        """Revoke every token issued from a code redeemed twice (audited)."""


class TokenFamilyStore(Protocol):
    """Tokens issued from one code: access tokens by jti, rotated refresh tokens (idp.token_families)."""

    def rotate(self, token: str, *, client_id: str, check: Callable[[Authorization], None] | None = None,
               access: Callable[[Authorization], tuple[str, int]] | None = None) -> RefreshRotation: ...

    def revoke_refresh_token(self, token: str, *, client_id: str) -> bool: ...

    def revoke_for(self, subject: str, client_id: str | None = None, resource: str | None = None, *,
                   reason: str, actor: str) -> int: ...


class Stores(Protocol):
    """Everything a handler is given: the storage behind these interfaces plus settings."""

    @property
    def settings(self) -> Settings: ...

    @property
    def clients(self) -> ClientStore: ...

    @property
    def revocations(self) -> RevocationStore: ...

    @property
    def assertion_jtis(self) -> AssertionJtiStore: ...

    @property
    def keys(self) -> KeyStore: ...

    @property
    def audit_log(self) -> AuditLog: ...

    @property
    def auth_context(self) -> AuthContext: ...

    @property
    def auth_throttle(self) -> AuthThrottle: ...

    @property
    def resources(self) -> ResourceStore: ...

    @property
    def client_resolver(self) -> ClientResolver: ...

    @property
    def policy(self) -> PolicyDecider: ...

    @property
    def authorization_codes(self) -> AuthorizationCodeStore: ...

    @property
    def token_families(self) -> TokenFamilyStore: ...

    def refresh_keys_for_unknown_kid(self) -> bool:
        """Re-read the key set once when a token names an unknown kid (rate-limited)."""
