"""Client authentication at the token, introspection and revocation endpoints.

Methods live behind one small protocol (:class:`~.base.ClientAuthMethod`), one module each, and
are registered here; the metadata document lists exactly the registered ones. A client uses
exactly one method per request (RFC 6749 §2.3) and only the one it registered.

Failed authentications are throttled per client and per address (:mod:`..throttle`) and
audited (``client.auth_failed``): the throttle is consulted before the proof is checked, and
the endpoints wrapped with :func:`failures_audited` write the record before they answer.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from ..client import ClientRecord
from ..errors import InvalidClient, InvalidRequest
from ..request import OAuthRequest
from .base import BASIC_CHALLENGE, AuthContext, ClientAuthMethod, Credentials, UnusableClient
from .client_secret_basic import ClientSecretBasic
from .client_secret_post import ClientSecretPost
from .none import NoClientAuthentication
from .private_key_jwt import PrivateKeyJwt

if TYPE_CHECKING:
    from ..stores import Stores

__all__ = ["METHODS", "AuthContext", "ClientAuthMethod", "Credentials", "FailedAuthentication", "authenticate",
           "failures_audited", "register", "signing_alg_values", "unregister"]

log = logging.getLogger("cbst.idp")
R = TypeVar("R")

#: Registered methods by name, in the order the metadata lists them.
METHODS: dict[str, ClientAuthMethod] = {}


def register(method: ClientAuthMethod) -> None:
    METHODS[method.name] = method


def unregister(name: str) -> None:
    METHODS.pop(name, None)


register(ClientSecretBasic())
register(ClientSecretPost())
register(PrivateKeyJwt())
register(NoClientAuthentication())


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


class FailedAuthentication(InvalidClient):
    """A refused authentication and, unless the audit budget is spent, its audit record."""

    def __init__(self, cause: InvalidClient, audit: dict[str, Any] | None) -> None:
        super().__init__(cause.description, status=cause.status, headers=cause.headers)
        self.audit = audit


def authenticate(stores: Stores, request: OAuthRequest) -> ClientRecord:
    """The authenticated, enabled client; or ``InvalidClient``/``InvalidRequest``, or
    ``TooManyFailures`` (429) for a client or address past its failure limit."""
    method = select_method(request)
    throttle = stores.auth_throttle
    throttle.check(address=request.remote_addr)
    client_id: str | None = None
    try:
        credentials = method.credentials(request)
        client_id = credentials.client_id
        throttle.check(client_id=client_id)
        return method.verify(stores, credentials)
    except UnusableClient:
        raise
    except InvalidClient as exc:
        raise _failure(stores, request, method, client_id, exc) from None


def _failure(stores: Stores, request: OAuthRequest, method: ClientAuthMethod, client_id: str | None,
             exc: InvalidClient) -> FailedAuthentication:
    throttled, suppressed = stores.auth_throttle.failed(client_id=client_id, address=request.remote_addr)
    if suppressed is None:
        return FailedAuthentication(exc, None)
    data: dict[str, Any] = {"method": method.name, "endpoint": request.path, "reason": exc.description}
    # The client_id column names registered clients only; a made-up id goes into the data.
    known = client_id if client_id and stores.clients.get(client_id) is not None else None
    if client_id is not None and known is None:
        data["claimed_client_id"] = client_id[:128]
    if throttled:
        data["throttled"] = True
    if suppressed:
        data["suppressed"] = suppressed  # failures since the last record, not recorded (audit budget)
    return FailedAuthentication(exc, {"event": "client.auth_failed", "actor": request.remote_addr or "unknown",
                                      "client_id": known, "data": data})


def failures_audited(
    handler: Callable[[Stores, OAuthRequest], R],
) -> Callable[[Stores, OAuthRequest], R | Coroutine[Any, Any, NoReturn]]:
    """Wrap an endpoint so that a failed authentication's audit record is written (group
    commit, on the event loop) before the refusal is answered."""

    @functools.wraps(handler)
    def endpoint(stores: Stores, request: OAuthRequest) -> R | Coroutine[Any, Any, NoReturn]:
        try:
            return handler(stores, request)
        except FailedAuthentication as exc:
            if exc.audit is None:
                raise
            return _audit_then_raise(stores, exc, exc.audit)

    return endpoint


async def _audit_then_raise(stores: Stores, exc: FailedAuthentication, record: dict[str, Any]) -> NoReturn:
    try:
        await stores.audit_log.record(record["event"], record["actor"], client_id=record["client_id"],
                                      data=record["data"])
    except Exception:  # the refusal stands even when the audit log cannot be written
        log.exception("cannot write the audit record of a failed client authentication")
    raise exc
