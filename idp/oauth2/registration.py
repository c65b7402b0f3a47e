"""Dynamic client registration (RFC 7591) and its management protocol (RFC 7592).

``POST /register`` takes client metadata (JSON) and answers ``201`` with the client's
``client_id``, its secret if it asked for a secret method, ``client_id_issued_at``, a
``registration_access_token`` and the ``registration_client_uri`` where that token reads
(``GET``), replaces (``PUT``) or deletes (``DELETE``) the registration.

The operator's ``registration_policy`` decides who may register: ``open`` (anyone, bounded
below), ``initial-access-token`` (RFC 7591 §3: a bearer token from ``idp registration tokens
create``), or ``off`` (no endpoint; the metadata does not name one). Bounds, so that a flood
cannot lock out real clients: a per-address token bucket (429 with ``Retry-After``), a cap on
unused dynamic clients that evicts the oldest unused ones (see :mod:`idp.dynamic_clients`),
the request body limit, and a budget of audit records per window.

This module is the protocol; storage is behind :class:`Registrar`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from . import client_metadata
from .client import ClientRecord
from .client_metadata import ClientMetadata, InvalidClientMetadata
from .errors import NO_STORE, OAuthError, OAuthResponse
from .throttle import _Buckets

OPEN = "open"
INITIAL_ACCESS_TOKEN = "initial-access-token"
OFF = "off"
POLICIES = (OPEN, INITIAL_ACCESS_TOKEN, OFF)


class InvalidToken(OAuthError):
    """RFC 6750 §3.1, as RFC 7592 §2 and RFC 7591 §3 use it for a bad bearer token."""

    error = "invalid_token"
    status = 401

    def __init__(self, description: str) -> None:
        super().__init__(description, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class RegistrationOff(OAuthError):
    error = "not_found"
    status = 404


class TooManyRegistrations(OAuthError):
    error = "temporarily_unavailable"  # as idp.oauth2.throttle: "try again later", with Retry-After
    status = 429


@dataclass(frozen=True)
class Registration:
    client: ClientRecord
    secret: str | None
    registration_token: str


class Registrar(Protocol):
    def register(self, meta: ClientMetadata, *, actor: str, initial_access_token: str | None,
                 token_required: bool, audited: bool) -> Registration: ...

    def authorized(self, client_id: str, registration_token: str | None) -> ClientRecord: ...

    def update(self, client_id: str, registration_token: str | None, meta: ClientMetadata, *,
               actor: str) -> tuple[ClientRecord, str | None]: ...

    def delete(self, client_id: str, registration_token: str | None, *, actor: str) -> None: ...


@dataclass(frozen=True, slots=True)
class RegistrationRequest:
    method: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    remote_addr: str | None

    def bearer(self) -> str | None:
        scheme, _, token = (self.headers.get("authorization") or "").partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None


class RegistrationThrottle:
    """Registration attempts per remote address (token buckets, as :mod:`idp.oauth2.throttle`),
    and the audit budget: at most ``audit_limit`` registration records per window; past it, only
    registrations that change something else (an eviction, an initial token used) are recorded."""

    def __init__(self, *, per_address: int, window: int, audit_limit: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._addresses = _Buckets(per_address, window) if per_address else None
        self._audit = _Buckets(audit_limit, window) if audit_limit else None
        self._lock = threading.Lock()
        self.clock = clock

    def attempt(self, address: str | None) -> None:
        """Count one attempt; :class:`TooManyRegistrations` if the address has none left."""
        if self._addresses is None:
            return
        key = address or "unknown"
        with self._lock:
            now = self.clock()
            wait = self._addresses.retry_after(key, now)
            if not wait:
                self._addresses.take(key, now)
        if wait:
            raise TooManyRegistrations("too many registrations from this address; retry later",
                                       headers={"Retry-After": str(wait)})

    def audit(self) -> bool:
        if self._audit is None:
            return False
        with self._lock:
            now = self.clock()
            if self._audit.retry_after("audit", now):
                return False
            self._audit.take("audit", now)
            return True


def _json_body(request: RegistrationRequest) -> Any:
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media != "application/json":
        raise InvalidClientMetadata("the registration request must be application/json (RFC 7591 section 3.1)")
    try:
        return json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidClientMetadata("the registration request is not valid JSON") from None


def _response(status: int, client: ClientRecord, *, issuer: str, secret: str | None = None,
              registration_token: str | None = None) -> OAuthResponse:
    body: dict[str, Any] = {"client_id": client.client_id, **(client.metadata or {}),
                            "client_id_issued_at": client.created_at,
                            "registration_client_uri": f"{issuer}/register/{client.client_id}"}
    if secret is not None:
        body["client_secret"] = secret
    if client.secret_hash is not None or secret is not None:
        body["client_secret_expires_at"] = 0  # RFC 7591 §3.2.1: REQUIRED with a secret; 0 = never
    if registration_token is not None:
        body["registration_access_token"] = registration_token
    return OAuthResponse(status, body, dict(NO_STORE))


def register(registrar: Registrar, request: RegistrationRequest, *, policy: str, issuer: str,
             throttle: RegistrationThrottle) -> OAuthResponse:
    """RFC 7591 §3.1: ``POST /register``."""
    if policy == OFF:
        raise RegistrationOff("dynamic client registration is off")
    throttle.attempt(request.remote_addr)
    token = request.bearer()
    if policy == INITIAL_ACCESS_TOKEN and token is None:
        raise InvalidToken("an initial access token is required to register (RFC 7591 section 3)")
    meta = client_metadata.validate(_json_body(request))
    reg = registrar.register(meta, actor=f"registration:{request.remote_addr or 'unknown'}",
                             initial_access_token=token, token_required=policy == INITIAL_ACCESS_TOKEN,
                             audited=throttle.audit())
    return _response(201, reg.client, issuer=issuer, secret=reg.secret, registration_token=reg.registration_token)


def manage(registrar: Registrar, request: RegistrationRequest, client_id: str, *, policy: str, issuer: str,
           throttle: RegistrationThrottle) -> OAuthResponse:
    """RFC 7592 §2: read, update or delete a registration with its registration access token."""
    if policy == OFF:
        raise RegistrationOff("dynamic client registration is off")
    token = request.bearer()
    actor = f"registration:{request.remote_addr or 'unknown'}"
    try:
        if request.method == "GET":
            return _response(200, registrar.authorized(client_id, token), issuer=issuer)
        if request.method == "DELETE":
            registrar.delete(client_id, token, actor=actor)
            return OAuthResponse(204, {}, dict(NO_STORE))
        registrar.authorized(client_id, token)  # a wrong token learns nothing about the body's faults
    except InvalidToken:
        throttle.attempt(request.remote_addr)  # guessing tokens costs the address its budget
        raise
    doc = _json_body(request)
    if not isinstance(doc, dict):
        raise InvalidClientMetadata("client metadata must be a JSON object")
    # RFC 7592 §2.2: the body holds client_id (unchangeable) and, if any, the current secret.
    if doc.get("client_id") != client_id:
        raise InvalidClientMetadata("the request's client_id must be the client's own (it cannot change)")
    for server_only in ("registration_access_token", "registration_client_uri", "client_secret_expires_at",
                        "client_id_issued_at"):
        doc.pop(server_only, None)  # RFC 7592 §2.2: MUST NOT be included; tolerated, ignored
    presented = doc.pop("client_secret", None)
    current = registrar.authorized(client_id, token)
    if presented is not None and not (isinstance(presented, str) and current.check_secret(presented)):
        raise InvalidClientMetadata("client_secret cannot be chosen by the client; send the current one or none")
    client, secret = registrar.update(client_id, token, client_metadata.validate(doc), actor=actor)
    return _response(200, client, issuer=issuer, secret=secret)
