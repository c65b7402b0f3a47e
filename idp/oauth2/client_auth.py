"""Client authentication at the token, introspection and revocation endpoints.

- ``client_secret_basic`` / ``client_secret_post``: RFC 6749 §2.3.1 (the Basic credentials are
  form-urlencoded before base64, so they are url-decoded after).
- ``private_key_jwt``: RFC 7523 §2.2 and §3 (OpenID Connect Core §9), verified with joserfc
  against the JWKS registered for the client; each assertion ``jti`` is accepted once.

A client uses exactly one method per request (RFC 6749 §2.3) and only the one it registered.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import warnings
from dataclasses import dataclass
from urllib.parse import unquote_plus

from sqlalchemy import Engine, delete, insert
from sqlalchemy.exc import IntegrityError

from sdk.jws import JWSError, b64url_decode

from .. import clock
from ..clients import ClientRecord, ClientRegistry, hash_secret
from ..models import AssertionJti
from .errors import InvalidClient, InvalidRequest
from .forms import Form

JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = ["ES256", "ES384", "ES512", "Ed25519", "EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
# RFC 9864 deprecates the polymorphic "EdDSA" name in favour of "Ed25519", which we accept too; many
# clients still send "EdDSA", and joserfc would warn on every such assertion it verifies.
warnings.filterwarnings("ignore", message="EdDSA is deprecated via RFC 9864")
MAX_ASSERTION_LIFETIME = 3600
_jtis = AssertionJti.__table__  # type: ignore[attr-defined]
_FAILED = "client authentication failed"
_DUMMY_HASH = hash_secret("not a real secret")


@dataclass(frozen=True)
class AuthContext:
    issuer: str
    audiences: frozenset[str]  # what a client assertion's ``aud`` may name
    clock_skew: int


class AssertionReplayCache:
    """``jti`` values of accepted client assertions, shared by all processes through the database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def claim(self, client_id: str, jti: str, expires_at: int) -> bool:
        key = hashlib.sha256(f"{client_id}\0{jti}".encode("utf-8", "surrogatepass")).hexdigest()  # jti may hold a lone surrogate
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(_jtis), [{"key": key, "expires_at": expires_at}])
        except IntegrityError:
            return False
        return True

    def prune(self) -> int:
        with self._engine.begin() as conn:
            return conn.execute(delete(_jtis).where(_jtis.c.expires_at < clock.now() - 600)).rowcount or 0


def _basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("unsupported Authorization scheme; use Basic", headers={"WWW-Authenticate": 'Basic realm="cbst"'})
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidClient("malformed Basic credentials", headers={"WWW-Authenticate": 'Basic realm="cbst"'}) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClient("malformed Basic credentials", headers={"WWW-Authenticate": 'Basic realm="cbst"'})
    return unquote_plus(client_id), unquote_plus(secret)


def authenticate(form: Form, authorization: str | None, registry: ClientRegistry, replay: AssertionReplayCache,
                 ctx: AuthContext) -> ClientRecord:
    """Return the authenticated, enabled client, or raise ``InvalidClient``/``InvalidRequest``."""
    used = [m for m, present in (
        ("client_secret_basic", authorization is not None),
        ("client_secret_post", "client_secret" in form),
        ("private_key_jwt", "client_assertion" in form or "client_assertion_type" in form),
    ) if present]
    if len(used) > 1:
        raise InvalidRequest("use exactly one client authentication method")
    if not used:
        raise InvalidClient("client authentication required", headers={"WWW-Authenticate": 'Basic realm="cbst"'})
    method = used[0]
    challenge = {"WWW-Authenticate": 'Basic realm="cbst"'} if method == "client_secret_basic" else {}

    if method == "private_key_jwt":
        client = _authenticate_assertion(form, registry, replay, ctx)
    else:
        if method == "client_secret_basic":
            assert authorization is not None
            client_id, secret = _basic_credentials(authorization)
            if form.get("client_id") not in (None, client_id):
                raise InvalidRequest("client_id in the body differs from the Basic credentials")
        else:
            client_id, secret = form.get("client_id") or "", form.get("client_secret") or ""
        client = registry.get(client_id)
        if client is None:
            hash_secret(secret) == _DUMMY_HASH  # same work as a real check: no timing oracle  # noqa: B015
            raise InvalidClient(_FAILED, headers=challenge)
        if not client.check_secret(secret):
            raise InvalidClient(_FAILED, headers=challenge)
    if client.auth_method != method:
        raise InvalidClient(f"this client must authenticate with {client.auth_method}", headers=challenge)
    if not client.enabled:
        raise InvalidClient("client is disabled", headers=challenge)
    return client


def _authenticate_assertion(form: Form, registry: ClientRegistry, replay: AssertionReplayCache,
                            ctx: AuthContext) -> ClientRecord:
    from joserfc import jwt
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    if form.get("client_assertion_type") != JWT_BEARER_ASSERTION:
        raise InvalidClient(f"client_assertion_type must be {JWT_BEARER_ASSERTION}")
    assertion = form.get("client_assertion") or ""
    if len(assertion) > 8192 or assertion.count(".") != 2:
        raise InvalidClient("malformed client assertion")
    # Read iss before verifying, only to find the client whose keys verify it.
    try:
        unverified = json.loads(b64url_decode(assertion.split(".")[1]))
        issuer = unverified["iss"] if isinstance(unverified, dict) else None
    except (JWSError, ValueError, KeyError, UnicodeDecodeError, RecursionError):  # deep nesting: RecursionError
        raise InvalidClient("malformed client assertion") from None
    if not isinstance(issuer, str) or form.get("client_id") not in (None, issuer):
        raise InvalidClient("client assertion iss must be the client_id")
    client = registry.get(issuer)
    if client is None or client.jwks is None:
        raise InvalidClient(_FAILED)
    try:
        token = jwt.decode(assertion, KeySet.import_key_set(client.jwks), algorithms=ASSERTION_ALGS)
    except (JoseError, ValueError, TypeError, KeyError):
        raise InvalidClient("client assertion signature is invalid") from None
    claims = token.claims
    now = clock.now()
    if claims.get("sub") != client.client_id or claims.get("iss") != client.client_id:
        raise InvalidClient("client assertion iss and sub must both be the client_id")
    aud = claims.get("aud")
    auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(isinstance(a, str) and a in ctx.audiences for a in auds):
        raise InvalidClient(f"client assertion aud must name this authorization server ({ctx.issuer})")
    exp, nbf, jti = claims.get("exp"), claims.get("nbf"), claims.get("jti")
    if not isinstance(exp, int) or isinstance(exp, bool) or exp + ctx.clock_skew < now:
        raise InvalidClient("client assertion is expired or has no exp")
    if exp > now + MAX_ASSERTION_LIFETIME:
        raise InvalidClient(f"client assertion exp is more than {MAX_ASSERTION_LIFETIME} s ahead")
    if nbf is not None and (not isinstance(nbf, int) or nbf - ctx.clock_skew > now):
        raise InvalidClient("client assertion is not valid yet")
    if not isinstance(jti, str) or not jti or len(jti) > 256:
        raise InvalidClient("client assertion needs a jti")
    if not client.enabled:
        raise InvalidClient("client is disabled")
    if not replay.claim(client.client_id, jti, exp):
        raise InvalidClient("client assertion was already used (jti replay)")
    return client
