"""Client authentication at the token, introspection and revocation endpoints.

Methods live behind one small protocol (:class:`~.base.ClientAuthMethod`), one module each, and
are registered here; the metadata document lists exactly the registered ones. A client uses
exactly one method per request (RFC 6749 §2.3) and only the one it registered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..client import ClientRecord
from ..errors import InvalidClient, InvalidRequest
from ..request import OAuthRequest
from .base import BASIC_CHALLENGE, AuthContext, ClientAuthMethod, Credentials
from .client_secret_basic import ClientSecretBasic
from .client_secret_post import ClientSecretPost
from .private_key_jwt import PrivateKeyJwt

if TYPE_CHECKING:
    from ..stores import Stores

__all__ = ["METHODS", "AuthContext", "ClientAuthMethod", "Credentials", "authenticate", "register", "signing_alg_values",
           "unregister"]

#: Registered methods by name, in the order the metadata lists them.
METHODS: dict[str, ClientAuthMethod] = {}


def register(method: ClientAuthMethod) -> None:
    METHODS[method.name] = method


def unregister(name: str) -> None:
    METHODS.pop(name, None)


register(ClientSecretBasic())
register(ClientSecretPost())
register(PrivateKeyJwt())


def signing_alg_values() -> list[str]:
    """Every JWS algorithm some registered method verifies (for the metadata document)."""
    return list(dict.fromkeys(alg for m in METHODS.values() for alg in m.signing_alg_values))


def select_method(request: OAuthRequest) -> ClientAuthMethod:
    used = [m for m in METHODS.values() if m.present(request)]
    if len(used) != 1:
        if used:
            raise InvalidRequest("use exactly one client authentication method")
        raise InvalidClient("client authentication required", headers=dict(BASIC_CHALLENGE))
    return used[0]


def authenticate(stores: Stores, request: OAuthRequest) -> ClientRecord:
    """The authenticated, enabled client, or ``InvalidClient``/``InvalidRequest``."""
    method = select_method(request)
    return method.verify(stores, method.credentials(request))
