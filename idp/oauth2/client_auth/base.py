"""The protocol every client-authentication method implements, and what the methods share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from ..client import ClientRecord, hash_secret
from ..errors import InvalidClient
from ..request import OAuthRequest

if TYPE_CHECKING:
    from ..stores import Stores

FAILED = "client authentication failed"
BASIC_CHALLENGE: Mapping[str, str] = {"WWW-Authenticate": 'Basic realm="cbst"'}
_DUMMY_HASH = hash_secret("not a real secret")


@dataclass(frozen=True)
class AuthContext:
    issuer: str
    audiences: frozenset[str]  # what a client assertion's ``aud`` may name
    clock_skew: int


@dataclass(slots=True)
class Credentials:
    """What a request claims, before it is verified: the client id and its proof (a secret, an assertion)."""

    client_id: str
    proof: str


class ClientAuthMethod(Protocol):
    @property
    def name(self) -> str:
        """The ``token_endpoint_auth_method`` value (RFC 7591 §2), as registered for a client."""

    @property
    def credential(self) -> Literal["secret", "jwks", "none"]:
        """What a client registers for this method: a generated secret, its public keys, or
        nothing (a public client)."""

    @property
    def signing_alg_values(self) -> tuple[str, ...]:
        """JWS algorithms this method verifies (``*_auth_signing_alg_values_supported``); () for none."""

    @property
    def challenge(self) -> Mapping[str, str]:
        """Response headers of a refusal (the Basic challenge, RFC 6749 §5.2)."""

    def present(self, request: OAuthRequest) -> bool:
        """Whether the request uses this method (so a request using two is refused)."""

    def credentials(self, request: OAuthRequest) -> Credentials:
        """Parse the credentials, without checking them; InvalidClient/InvalidRequest if malformed."""

    def verify(self, stores: Stores, credentials: Credentials) -> ClientRecord:
        """The authenticated, enabled client registered for this method, or InvalidClient."""


class UnusableClient(InvalidClient):
    """The proof checked out, but the client may not authenticate so: not a guess (not throttled)."""


def usable(client: ClientRecord, method: ClientAuthMethod) -> ClientRecord:
    """A client authenticates only with the method it registered (RFC 6749 §2.3), and only while
    enabled. Call it once the proof is verified."""
    if client.auth_method != method.name:
        raise UnusableClient(f"this client must authenticate with {client.auth_method}", headers=dict(method.challenge))
    if not client.enabled:
        raise UnusableClient("client is disabled", headers=dict(method.challenge))
    return client


def verify_secret(stores: Stores, credentials: Credentials, method: ClientAuthMethod) -> ClientRecord:
    """RFC 6749 §2.3.1: the client's secret, compared in constant time against its hash."""
    client = stores.clients.get(credentials.client_id)
    if client is None:
        hash_secret(credentials.proof) == _DUMMY_HASH  # same work as a real check: no timing oracle  # noqa: B015
        raise InvalidClient(FAILED, headers=dict(method.challenge))
    if not client.check_secret(credentials.proof):
        raise InvalidClient(FAILED, headers=dict(method.challenge))
    return usable(client, method)
