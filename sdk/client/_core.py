"""Sans-IO core of the client side: discovery, client authentication, token cache, step-up.

Nothing here performs I/O. The flows are generators that *yield* the HTTP requests they need
(:class:`HttpRequest`) and are *sent* the responses (:class:`HttpResponse`); the thin adapters
in :mod:`sdk.client.httpx_auth` and :mod:`sdk.client.httpx2_auth` translate those to and from
``httpx`` / ``httpx2`` objects, once for synchronous and once for asynchronous clients.

Specifications:

- RFC 8414 §3 — authorization server metadata: the token endpoint is read from
  ``{issuer-origin}/.well-known/oauth-authorization-server{issuer-path}`` and the document's
  ``issuer`` must equal the configured issuer exactly (§3.3).
- RFC 6749 §4.4 — client credentials grant; §2.3.1 client_secret_basic/post (the Basic
  credentials are form-urlencoded first); §5.1/§5.2 token and error responses.
- RFC 7523 §2.2, §3 — ``private_key_jwt`` client assertions (``iss`` = ``sub`` = client_id,
  ``aud`` = the issuer identifier as draft-ietf-oauth-rfc7523bis recommends, single-use ``jti``,
  short ``exp``), typed ``JWT``.
- RFC 8707 — the ``resource`` parameter names the one MCP server the token is for.
- RFC 6750 §3 — ``WWW-Authenticate: Bearer`` challenges; a 403 ``insufficient_scope`` names the
  scope the request needs, and the MCP authorization spec asks the client to request the union
  of what it holds and what is challenged (step-up).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from ..errors import CBSTError
from ..jws import PrivateKey

log = logging.getLogger("sdk.client")

JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")
#: Lifetime of a client assertion, seconds. The IdP accepts each ``jti`` once, so short is fine.
ASSERTION_LIFETIME = 60
#: How many recently used tokens are remembered as having worked.
_PROVEN_KEPT = 16
#: How many step-up scopes the IdP refused are remembered (and not asked for again).
_REFUSED_KEPT = 256
#: Largest token/metadata response read, bytes.
MAX_RESPONSE_BYTES = 64 * 1024


# --- errors ------------------------------------------------------------------------------------


class TokenError(CBSTError):
    """The client could not obtain an access token. ``error`` is the OAuth error code if any."""

    def __init__(self, message: str, *, error: str | None = None, description: str | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.description = description
        self.status = status


class InvalidClientError(TokenError):
    """The IdP refused the client's credentials (``invalid_client``): wrong id, secret or key,
    a disabled client, or an authentication method the client is not registered for."""


class InvalidScopeError(TokenError):
    """The IdP refused the requested scope: it exceeds the client's registered capabilities."""


class InvalidTargetError(TokenError):
    """The IdP refused the ``resource``: it is not a registered audience of this client."""


class DiscoveryError(TokenError):
    """The issuer's RFC 8414 metadata could not be fetched or is not acceptable."""


_ERRORS: dict[str, type[TokenError]] = {
    "invalid_client": InvalidClientError,
    "unauthorized_client": InvalidClientError,
    "invalid_scope": InvalidScopeError,
    "invalid_target": InvalidTargetError,
}


# --- neutral HTTP messages ---------------------------------------------------------------------


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes = b""
    #: Seconds for each of connect/read/write/pool: requests an auth flow makes do not get the
    #: HTTP client's default timeouts (those are set when the client builds a request).
    timeout: float = 30.0


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # keys lower-cased
    body: bytes


@dataclass(frozen=True)
class AccessToken:
    """A cached access token. ``expires_at`` is on the core's (monotonic) clock."""

    value: str
    scope: str | None
    expires_at: float
    obtained_at: float
    resource: str | None

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset((self.scope or "").split())


# --- helpers -----------------------------------------------------------------------------------


def normalize_scope(scope: str | Iterable[str] | None) -> str | None:
    """A scope string from a string or an iterable of scope tokens; ``None`` stays ``None``
    (the IdP then grants the client's registered capabilities). Duplicates are dropped, order kept."""
    if scope is None:
        return None
    tokens = scope.split() if isinstance(scope, str) else [t for s in scope for t in str(s).split()]
    for t in tokens:
        if '"' in t or "\\" in t or any(ord(c) < 0x21 or ord(c) > 0x7E for c in t):
            raise ValueError(f"invalid scope token {t!r} (RFC 6749 §3.3: printable ASCII without \" and \\)")
    unique = list(dict.fromkeys(tokens))
    if not unique:
        raise ValueError("scope is empty; pass None to ask for every registered capability")
    return " ".join(unique)


def scope_union(held: str | None, challenged: str) -> str:
    """Union of two scope strings, the held tokens first, each token once."""
    return " ".join(dict.fromkeys([*(held or "").split(), *challenged.split()]))


def metadata_url(issuer: str) -> str:
    """RFC 8414 §3.1: the well-known string goes between the host and the issuer's path."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, "/.well-known/oauth-authorization-server" + path, "", ""))


def parse_www_authenticate(values: Iterable[str]) -> list[tuple[str, dict[str, str]]]:
    """Parse ``WWW-Authenticate`` header values (RFC 9110 §11.6.1) into ``[(scheme, params)]``.

    Scheme names are lower-cased, parameter names too; quoted-string values are unescaped.
    Lenient on purpose: garbage yields fewer challenges, never an exception.
    """
    challenges: list[tuple[str, dict[str, str]]] = []
    for value in values:
        i, n = 0, len(value)
        current: dict[str, str] | None = None
        while i < n:
            while i < n and value[i] in " \t,":
                i += 1
            start = i
            while i < n and value[i] not in " \t,=\"":
                i += 1
            token = value[start:i]
            if not token:
                i += 1  # a stray '=' or '"': skip it
                continue
            j = i
            while j < n and value[j] in " \t":
                j += 1
            if j < n and value[j] == "=" and current is not None:
                # auth-param: name = token / quoted-string
                j += 1
                while j < n and value[j] in " \t":
                    j += 1
                if j < n and value[j] == '"':
                    j += 1
                    out = []
                    while j < n and value[j] != '"':
                        if value[j] == "\\" and j + 1 < n:
                            j += 1
                        out.append(value[j])
                        j += 1
                    current[token.lower()] = "".join(out)
                    i = j + 1
                else:
                    start = j
                    while j < n and value[j] not in " \t,":
                        j += 1
                    current[token.lower()] = value[start:j]
                    i = j
            else:
                current = {}
                challenges.append((token.lower(), current))
                i = j
    return challenges


def bearer_challenge(values: Iterable[str]) -> dict[str, str] | None:
    for scheme, params in parse_www_authenticate(values):
        if scheme == "bearer":
            return params
    return None


# --- the core ----------------------------------------------------------------------------------


Flow = Generator[HttpRequest, HttpResponse, AccessToken]


@dataclass(frozen=True)
class Send:
    """Step of :meth:`Core.request_flow`: send this request to the IdP, answer with its :class:`HttpResponse`."""

    request: HttpRequest


@dataclass(frozen=True)
class Authorize:
    """Step of :meth:`Core.request_flow`: send the caller's request with this token, answer with
    ``(status, [WWW-Authenticate values])`` of its response."""

    token: AccessToken


#: Steps of :meth:`Core.request_flow`: take / release the adapter's lock (answer ``None``).
LOCK = "lock"
UNLOCK = "unlock"
Step = Send | Authorize | str


@dataclass
class CoreConfig:
    issuer: str
    client_id: str
    auth_method: str
    client_secret: str | None = None
    private_key: PrivateKey | None = None
    scope: str | None = None
    resource: str | None = None
    token_endpoint: str | None = None
    refresh_margin: float = 30.0
    step_up: bool = True
    timeout: float = 30.0
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time


@dataclass
class Core:
    """Token state shared by every adapter made from one :class:`~sdk.client.ClientCredentials`.

    Callers serialise the flows that change it (the adapters hold a lock while running them).
    """

    config: CoreConfig
    token: AccessToken | None = None
    #: Scope asked for at the next token request: the configured one, grown by step-ups.
    scope: str | None = None
    token_endpoint: str | None = None
    #: Number of token requests sent (successful or not) — for tests and metrics.
    token_requests: int = 0
    #: Scopes the IdP refused on step-up (the most recent ones); not asked for again.
    refused_scopes: dict[str, None] = field(default_factory=dict)
    #: Tokens that some request has already been accepted with (hashes of the last few).
    _proven: dict[int, None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scope = self.config.scope
        self.token_endpoint = self.config.token_endpoint

    # -- queries ---------------------------------------------------------------------------------

    def is_fresh(self, token: AccessToken | None) -> bool:
        """True while ``token`` is usable: more than the refresh margin before its expiry.

        The margin is capped at half the token's lifetime, so a short-lived token is still
        reused for half its life rather than refetched on every request.
        """
        if token is None:
            return False
        lifetime = token.expires_at - token.obtained_at
        margin = min(self.config.refresh_margin, lifetime / 2)
        return self.config.clock() < token.expires_at - margin

    def mark_proven(self, token: AccessToken) -> None:
        self._proven[hash(token.value)] = None
        while len(self._proven) > _PROVEN_KEPT:
            del self._proven[next(iter(self._proven))]

    def is_proven(self, token: AccessToken) -> bool:
        return hash(token.value) in self._proven

    def step_up_scope(self, token: AccessToken, status: int, www_authenticate: Iterable[str]) -> str | None:
        """The scope to ask for after a 403 ``insufficient_scope``, or ``None`` if no step-up applies.

        None when step-up is off, the response is not such a challenge, the challenge names nothing
        the token lacks, or the IdP already refused that union.
        """
        if not self.config.step_up or status != 403:
            return None
        params = bearer_challenge(www_authenticate)
        if params is None or params.get("error") != "insufficient_scope":
            return None
        challenged = params.get("scope", "").split()
        if not challenged:
            return None
        held = token.scope if token.scope is not None else self.scope
        wanted = scope_union(held, " ".join(challenged))
        if set(wanted.split()) <= token.scopes or wanted in self.refused_scopes:
            return None
        return wanted

    @staticmethod
    def should_retry_unauthorized(status: int, www_authenticate: Iterable[str]) -> bool:
        """A 401 whose Bearer challenge says the token is invalid (or gives no error)."""
        if status != 401:
            return False
        params = bearer_challenge(www_authenticate)
        return params is not None and params.get("error", "invalid_token") == "invalid_token"

    # -- flows -----------------------------------------------------------------------------------

    def request_flow(self) -> Generator[Step, Any, None]:
        """Everything that happens around one request of the caller, as steps for an adapter.

        1. Under the lock: a fresh cached token, or discovery and a token request.
        2. The caller's request goes out with that token — without the lock, so a long-lived
           request (an MCP SSE stream) never holds up the others.
        3. On 403 ``insufficient_scope`` naming scope the token lacks: ask once for the union of
           the held and the challenged scope, and resend once. If the IdP refuses that union
           (``invalid_scope``) the request is resent once with the held token, so the caller gets
           the server's refusal rather than the IdP's; that union is not asked for again.
        4. On 401 ``invalid_token`` with a token some request was already accepted with (revoked,
           or rejected after a key rotation): fetch a new token once and resend once. A token that
           never worked is not replaced in a loop; its 401 goes back to the caller.

        Other token errors (:class:`TokenError` and subclasses) are raised to the caller.
        """
        token = yield from self._locked(self.ensure_token())
        status, challenge = yield Authorize(token)
        if status == 403:
            scope = self.step_up_scope(token, status, challenge)
            if scope is None:
                return
            try:
                token = yield from self._locked(self.ensure_token(scope=scope))
            except InvalidScopeError as exc:
                log.info("step-up to scope %r refused by the IdP: %s", scope, exc)
                # An HTTP client returns the response to the last request its auth flow sent —
                # here the IdP's 400. Resend once with the held token so the caller gets the
                # resource server's own answer (its 403). The refused union is not asked again.
            status, challenge = yield Authorize(token)
        elif status == 401 and self.is_proven(token) and self.should_retry_unauthorized(status, challenge):
            token = yield from self._locked(self.ensure_token(stale=token))
            status, challenge = yield Authorize(token)
        if status not in (401, 403):
            self.mark_proven(token)

    @staticmethod
    def _locked(flow: Flow) -> Generator[Step, Any, AccessToken]:
        # On an exception the adapter releases the lock (it tracks whether it holds it).
        yield LOCK
        try:
            req = next(flow)
            while True:
                req = flow.send((yield Send(req)))
        except StopIteration as stop:
            token: AccessToken = stop.value
        yield UNLOCK
        return token

    def ensure_token(self, *, scope: str | None = None, stale: AccessToken | None = None) -> Flow:
        """Return a fresh token, fetching one if needed.

        ``scope``: ask for this scope (a step-up) unless the cached token already covers it.
        ``stale``: the token a request was refused with; replace it unless another flow already did.
        """
        token = self.token
        if token is not None and stale is not None and token.value == stale.value:
            token = self.token = None
        if scope is not None and token is not None and not set(scope.split()) <= token.scopes:
            token = None
        if self.is_fresh(token):
            assert token is not None
            return token
        if self.token_endpoint is None:
            yield from self._discover()
        wanted = self.scope
        if scope is not None:
            # Keep what concurrent step-ups added meanwhile: never trade one capability for another.
            wanted = scope_union(self.scope, scope) if self.scope is not None else scope
        try:
            token = yield from self._request_token(wanted)
        except InvalidScopeError:
            if scope is not None:
                self.refused_scopes[scope] = None
                while len(self.refused_scopes) > _REFUSED_KEPT:
                    del self.refused_scopes[next(iter(self.refused_scopes))]
            raise
        if scope is not None:
            self.scope = wanted
        self.token = token
        return token

    def _discover(self) -> Generator[HttpRequest, HttpResponse, None]:
        issuer = self.config.issuer
        url = metadata_url(issuer)
        response = yield HttpRequest("GET", url, {"accept": "application/json"}, timeout=self.config.timeout)
        if response.status != 200:
            raise DiscoveryError(f"authorization server metadata at {url} answered HTTP {response.status}",
                                 status=response.status)
        try:
            doc = json.loads(response.body)
        except ValueError:
            raise DiscoveryError(f"authorization server metadata at {url} is not JSON") from None
        if not isinstance(doc, dict):
            raise DiscoveryError(f"authorization server metadata at {url} is not a JSON object")
        if doc.get("issuer") != issuer:
            raise DiscoveryError(
                f"authorization server metadata at {url} names issuer {doc.get('issuer')!r}, "
                f"expected exactly {issuer!r} (RFC 8414 §3.3)")
        endpoint = doc.get("token_endpoint")
        if not isinstance(endpoint, str) or urlsplit(endpoint).scheme not in ("http", "https"):
            raise DiscoveryError(f"authorization server metadata at {url} has no usable token_endpoint")
        methods = doc.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
        if isinstance(methods, list) and self.config.auth_method not in methods:
            raise DiscoveryError(
                f"the IdP does not support {self.config.auth_method} at its token endpoint "
                f"(it supports: {', '.join(map(str, methods))})")
        grants = doc.get("grant_types_supported")
        if isinstance(grants, list) and "client_credentials" not in grants:
            raise DiscoveryError("the IdP does not support the client_credentials grant")
        self.token_endpoint = endpoint

    def _request_token(self, scope: str | None) -> Generator[HttpRequest, HttpResponse, AccessToken]:
        cfg = self.config
        assert self.token_endpoint is not None
        form: list[tuple[str, str]] = [("grant_type", "client_credentials")]
        if scope is not None:
            form.append(("scope", scope))
        if cfg.resource is not None:
            form.append(("resource", cfg.resource))
        headers = {"content-type": "application/x-www-form-urlencoded", "accept": "application/json"}
        if cfg.auth_method == "client_secret_basic":
            assert cfg.client_secret is not None
            # RFC 6749 §2.3.1: form-urlencode id and secret before base64.
            pair = f"{quote(cfg.client_id, safe='')}:{quote(cfg.client_secret, safe='')}"
            headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        elif cfg.auth_method == "client_secret_post":
            assert cfg.client_secret is not None
            form += [("client_id", cfg.client_id), ("client_secret", cfg.client_secret)]
        else:
            form += [("client_id", cfg.client_id), ("client_assertion_type", JWT_BEARER_ASSERTION),
                     ("client_assertion", self.client_assertion())]
        started = cfg.clock()
        self.token_requests += 1
        response = yield HttpRequest("POST", self.token_endpoint, headers, urlencode(form).encode("ascii"),
                                     timeout=cfg.timeout)
        return self._parse_token_response(response, started, scope)

    def client_assertion(self) -> str:
        """A fresh RFC 7523 client assertion (new ``jti`` each time: the IdP accepts each once)."""
        cfg = self.config
        assert cfg.private_key is not None
        now = int(cfg.wall_clock())
        claims = {"iss": cfg.client_id, "sub": cfg.client_id, "aud": cfg.issuer, "iat": now,
                  "exp": now + ASSERTION_LIFETIME, "jti": secrets.token_urlsafe(24)}
        return cfg.private_key.sign(claims, typ="JWT")

    def _parse_token_response(self, response: HttpResponse, started: float, scope: str | None) -> AccessToken:
        endpoint = self.token_endpoint
        try:
            doc: Any = json.loads(response.body) if response.body else None
        except ValueError:
            doc = None
        if response.status != 200:
            if isinstance(doc, dict) and isinstance(doc.get("error"), str):
                error, description = doc["error"], str(doc.get("error_description") or "")
                cls = _ERRORS.get(error, TokenError)
                detail = f"{error}: {description}" if description else error
                raise cls(f"the IdP refused the token request for client {self.config.client_id!r}: {detail}",
                          error=error, description=description or None, status=response.status)
            raise TokenError(f"token request to {endpoint} answered HTTP {response.status}", status=response.status)
        if not isinstance(doc, dict):
            raise TokenError(f"token response from {endpoint} is not a JSON object", status=200)
        value, token_type, expires_in = doc.get("access_token"), doc.get("token_type"), doc.get("expires_in")
        if not isinstance(value, str) or not value:
            raise TokenError(f"token response from {endpoint} has no access_token", status=200)
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise TokenError(f"token response from {endpoint} has token_type {token_type!r}, expected Bearer",
                             status=200)
        if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or expires_in <= 0:
            # RFC 6749 §5.1 makes it RECOMMENDED; without it, assume a short life and refetch soon.
            expires_in = 60
        granted = doc.get("scope")
        granted = granted if isinstance(granted, str) else scope
        return AccessToken(value=value, scope=granted, expires_at=started + float(expires_in),
                           obtained_at=started, resource=self.config.resource)
