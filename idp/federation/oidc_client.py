"""The IdP as a Relying Party of an upstream OpenID Provider, with Authlib's OpenID Connect client.

- Discovery (OpenID Connect Discovery 1.0 §4): the provider metadata at
  ``{issuer}/.well-known/openid-configuration``, refused unless its ``issuer`` is the configured
  one byte for byte (§4.3, against a provider impersonating another); cached for a TTL.
- Authorization code flow (OIDC Core 1.0 §3.1) with PKCE ``S256`` (RFC 7636), ``state`` and
  ``nonce``: :class:`authlib.integrations.httpx_client.AsyncOAuth2Client` builds the
  authorization URL and redeems the code.
- ID token validation (OIDC Core §3.1.3.7): the signature against the upstream JWKS (an
  unknown ``kid`` refetches the JWKS once: the provider may have rotated), only asymmetric
  algorithms it advertises (never ``none``, never a MAC keyed by the client secret), then
  :class:`authlib.oidc.core.CodeIDToken`: ``iss``, ``aud``, ``azp``, ``exp``, ``iat``, ``nonce``.
- Userinfo (OIDC Core §5.3): read when advertised, for the claims a provider leaves out of the
  ID token; its ``sub`` must be the ID token's (§5.3.2).

Every failure is an :class:`UpstreamLoginError` with a short reason code (for the audit log)
and a message a person can read; nothing here raises anything else.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import ClaimError, ExpiredTokenError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from .upstreams import Upstream

log = logging.getLogger("cbst.federation")

#: Largest discovery document / JWKS read (a real one is a few KiB).
MAX_DOCUMENT = 512 * 1024
#: Signature algorithms accepted for ID tokens: asymmetric only. HS* would be keyed by the client
#: secret (OIDC Core §10.1), which any process holding the upstream's configuration knows.
ASYMMETRIC_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
#: Least time between two forced JWKS refetches of one issuer (a stream of tokens with made-up
#: kids must not turn the IdP into a request amplifier against the upstream).
JWKS_REFETCH_INTERVAL = 10.0
#: Claims read from userinfo (many providers leave them out of the ID token).
USERINFO_CLAIMS = ("email", "email_verified", "name", "preferred_username", "groups")


class UpstreamLoginError(Exception):
    """A federated login cannot go on. ``reason`` is for the audit log; ``str()`` for the person."""

    def __init__(self, reason: str, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    id_token_algs: tuple[str, ...]
    token_auth_method: str  # client_secret_basic, client_secret_post or none
    iss_parameter_supported: bool  # RFC 9207 §3


@dataclass(frozen=True)
class Authentication:
    """What the upstream said about the person, after every check."""

    issuer: str
    subject: str
    claims: dict[str, Any]  # ID token claims, completed by userinfo


def _endpoint(doc: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.startswith(("https://", "http://")) or len(value) > 2048:
        raise UpstreamLoginError("bad_discovery", f"the provider's discovery document has no valid {key}", status=502)
    return value


def parse_metadata(issuer: str, doc: Any, *, has_secret: bool) -> ProviderMetadata:
    if not isinstance(doc, dict):
        raise UpstreamLoginError("bad_discovery", "the provider's discovery document is not a JSON object", status=502)
    if doc.get("issuer") != issuer:
        raise UpstreamLoginError(
            "issuer_mismatch",
            f"the discovery document of {issuer} names another issuer ({str(doc.get('issuer'))[:200]!r})", status=502)
    response_types = doc.get("response_types_supported")
    if isinstance(response_types, list) and "code" not in response_types:
        raise UpstreamLoginError("bad_discovery", "the provider does not support the authorization code flow",
                                 status=502)
    methods = doc.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        raise UpstreamLoginError("bad_discovery", "the provider does not support PKCE with S256", status=502)
    advertised = doc.get("id_token_signing_alg_values_supported")
    algs = tuple(a for a in (advertised if isinstance(advertised, list) else ["RS256"]) if a in ASYMMETRIC_ALGS)
    if not algs:
        raise UpstreamLoginError("bad_discovery", "the provider signs ID tokens with no asymmetric algorithm",
                                 status=502)
    auth_methods = doc.get("token_endpoint_auth_methods_supported")
    auth_methods = auth_methods if isinstance(auth_methods, list) else ["client_secret_basic"]
    if not has_secret:
        auth_method = "none"
    elif "client_secret_basic" in auth_methods or "client_secret_post" not in auth_methods:
        auth_method = "client_secret_basic"
    else:
        auth_method = "client_secret_post"
    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=str(_endpoint(doc, "authorization_endpoint")),
        token_endpoint=str(_endpoint(doc, "token_endpoint")),
        jwks_uri=str(_endpoint(doc, "jwks_uri")),
        userinfo_endpoint=_endpoint(doc, "userinfo_endpoint", required=False),
        id_token_algs=algs,
        token_auth_method=auth_method,
        iss_parameter_supported=doc.get("authorization_response_iss_parameter_supported") is True,
    )


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


class OIDCClient:
    """Per-process client of every upstream: caches discovery documents (TTL) and JWKS."""

    def __init__(self, *, timeout: float, discovery_ttl: int, clock_skew: int = 60) -> None:
        self.timeout = timeout
        self.discovery_ttl = discovery_ttl
        self.clock_skew = clock_skew
        self._discovery: dict[str, tuple[float, Any]] = {}  # issuer -> (fetched at, document)
        self._jwks: dict[str, tuple[str, KeySet]] = {}  # issuer -> (jwks_uri, keys)
        self._jwks_refetched: dict[str, float] = {}

    def _http(self, **kwargs: Any) -> AsyncOAuth2Client:
        # Redirects are not followed: every URL here comes from the operator or the discovery document.
        return AsyncOAuth2Client(timeout=self.timeout, follow_redirects=False, **kwargs)

    async def _get_json(self, url: str, what: str) -> Any:
        try:
            async with self._http() as http, http.stream("GET", url, withhold_token=True,
                                                        headers={"Accept": "application/json"}) as resp:
                if resp.status_code != 200:
                    raise UpstreamLoginError("upstream_unavailable", f"the provider's {what} answered "
                                             f"HTTP {resp.status_code}", status=502)
                body = b""
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT:
                        raise UpstreamLoginError("upstream_unavailable", f"the provider's {what} is too large",
                                                 status=502)
        except UpstreamLoginError:
            raise
        except Exception as exc:  # timeouts, refused connections, TLS failures
            raise UpstreamLoginError("upstream_unavailable",
                                     f"the provider's {what} cannot be reached ({type(exc).__name__})",
                                     status=504 if "Timeout" in type(exc).__name__ else 502) from None
        try:
            return json.loads(body)
        except ValueError:
            raise UpstreamLoginError("upstream_unavailable", f"the provider's {what} is not JSON", status=502) from None

    async def metadata(self, upstream: Upstream, *, fresh: bool = False) -> ProviderMetadata:
        """The upstream's checked provider metadata (cached for ``discovery_ttl`` seconds)."""
        cached = self._discovery.get(upstream.issuer)
        if cached is None or fresh or time.monotonic() - cached[0] >= self.discovery_ttl:
            doc = await self._get_json(discovery_url(upstream.issuer), "discovery document")
            parse_metadata(upstream.issuer, doc, has_secret=upstream.has_secret)  # never cache a bad one
            cached = (time.monotonic(), doc)
            self._discovery[upstream.issuer] = cached
        return parse_metadata(upstream.issuer, cached[1], has_secret=upstream.has_secret)

    async def _keys(self, meta: ProviderMetadata, *, force: bool = False) -> KeySet:
        held = self._jwks.get(meta.issuer)
        if held is not None and held[0] == meta.jwks_uri and not force:
            return held[1]
        doc = await self._get_json(meta.jwks_uri, "JWKS")
        try:
            keys = KeySet.import_key_set(doc)
        except (JoseError, ValueError, TypeError, KeyError):
            raise UpstreamLoginError("upstream_unavailable", "the provider's JWKS cannot be read", status=502) from None
        self._jwks[meta.issuer] = (meta.jwks_uri, keys)
        return keys

    def authorization_url(self, upstream: Upstream, meta: ProviderMetadata, *, redirect_uri: str, state: str,
                          nonce: str, code_verifier: str) -> str:
        client = AsyncOAuth2Client(client_id=upstream.client_id, scope=" ".join(upstream.scopes),
                                   redirect_uri=redirect_uri, code_challenge_method="S256")
        url, _ = client.create_authorization_url(meta.authorization_endpoint, state=state,
                                                 code_verifier=code_verifier, nonce=nonce)
        return str(url)

    async def authenticate(self, upstream: Upstream, client_secret: str | None, *, redirect_uri: str, code: str,
                           code_verifier: str, nonce: str) -> Authentication:
        """Redeem the code, validate the ID token, read userinfo: who the person is at the upstream."""
        meta = await self.metadata(upstream)
        async with self._http(client_id=upstream.client_id, client_secret=client_secret,
                              token_endpoint_auth_method=meta.token_auth_method, redirect_uri=redirect_uri,
                              code_challenge_method="S256") as client:
            try:
                token = await client.fetch_token(meta.token_endpoint, grant_type="authorization_code", code=code,
                                                 code_verifier=code_verifier)
            except Exception as exc:  # authlib's OAuthError for an error answer; timeouts; garbage
                name = type(exc).__name__
                detail = getattr(exc, "error", None) or name
                log.info("upstream token request failed", extra={"fields": {"upstream": upstream.name,
                                                                            "error": str(detail)[:200]}})
                raise UpstreamLoginError(
                    "token_request_failed", f"the provider refused to complete the login ({str(detail)[:100]})",
                    status=504 if "Timeout" in name else 502) from None
            id_token = token.get("id_token") if isinstance(token, dict) else None
            if not isinstance(id_token, str):
                raise UpstreamLoginError("invalid_id_token", "the provider's answer holds no ID token", status=502)
            claims = await self.validate_id_token(upstream, meta, id_token, nonce=nonce,
                                                  access_token=token.get("access_token"))
            subject = claims["sub"]
            if meta.userinfo_endpoint and isinstance(token.get("access_token"), str):
                info = await self._userinfo(client, meta.userinfo_endpoint)
                if info.get("sub") != subject:  # OIDC Core §5.3.2: a substituted userinfo answer
                    raise UpstreamLoginError("userinfo_mismatch", "the provider's userinfo is for another person",
                                             status=502)
                # Userinfo completes the profile claims; the ID token's own (iss, sub, aud...) stand.
                claims.update({k: v for k, v in info.items() if k in USERINFO_CLAIMS})
        return Authentication(issuer=upstream.issuer, subject=subject, claims=claims)

    async def _userinfo(self, client: AsyncOAuth2Client, url: str) -> dict[str, Any]:
        try:
            resp = await client.get(url, headers={"Accept": "application/json"})
            if resp.status_code != 200:
                raise ValueError(f"HTTP {resp.status_code}")
            if len(resp.content) > MAX_DOCUMENT:
                raise ValueError("too large")
            info = resp.json()
            if not isinstance(info, dict):
                raise ValueError("not an object")
            return info
        except Exception as exc:  # a signed (JWT) userinfo answer is not asked for, so not JSON is an error
            raise UpstreamLoginError("upstream_unavailable", f"the provider's userinfo cannot be read "
                                     f"({type(exc).__name__})", status=502) from None

    async def validate_id_token(self, upstream: Upstream, meta: ProviderMetadata, id_token: str, *, nonce: str,
                                access_token: Any = None) -> dict[str, Any]:
        """OIDC Core §3.1.3.7, with joserfc (signature) and Authlib's :class:`CodeIDToken` (claims)."""
        keys = await self._keys(meta)
        try:
            try:
                decoded = jwt.decode(id_token, keys, algorithms=list(meta.id_token_algs))
            except InvalidKeyIdError:
                last = self._jwks_refetched.get(meta.issuer, float("-inf"))
                if time.monotonic() - last < JWKS_REFETCH_INTERVAL:
                    raise
                self._jwks_refetched[meta.issuer] = time.monotonic()
                keys = await self._keys(meta, force=True)  # the provider may have rotated its keys
                decoded = jwt.decode(id_token, keys, algorithms=list(meta.id_token_algs))
        except UpstreamLoginError:
            raise
        except (JoseError, ValueError, TypeError) as exc:
            raise UpstreamLoginError("invalid_id_token",
                                     f"the provider's ID token signature is not valid ({type(exc).__name__})") from None
        params: dict[str, Any] = {"nonce": nonce, "client_id": upstream.client_id}
        if isinstance(access_token, str):
            params["access_token"] = access_token  # checks at_hash when present
        options = {"iss": {"essential": True, "value": upstream.issuer},
                   "aud": {"essential": True, "value": upstream.client_id},
                   "sub": {"essential": True}}
        claims = CodeIDToken(decoded.claims, decoded.header, options, params)
        try:
            claims.validate(now=int(time.time()), leeway=self.clock_skew)
        except ExpiredTokenError:
            raise UpstreamLoginError("invalid_id_token", "the provider's ID token has expired") from None
        except ClaimError as exc:
            claim = getattr(exc, "claim", None) or str(exc)
            raise UpstreamLoginError("invalid_id_token", f"the provider's ID token has an invalid claim: "
                                     f"{str(claim)[:40]}") from None
        except (JoseError, ValueError, TypeError) as exc:
            raise UpstreamLoginError("invalid_id_token", f"the provider's ID token is not valid "
                                     f"({type(exc).__name__})") from None
        iat = claims.get("iat")
        if not isinstance(iat, (int, float)) or iat > time.time() + self.clock_skew:
            raise UpstreamLoginError("invalid_id_token", "the provider's ID token was issued in the future")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 255:  # OIDC Core §2: at most 255 ASCII characters
            raise UpstreamLoginError("invalid_id_token", "the provider's ID token has no valid subject")
        return dict(claims)
