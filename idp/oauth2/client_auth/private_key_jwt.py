"""``private_key_jwt``: a JWT assertion signed with the client's key (RFC 7523 §2.2 and §3,
OpenID Connect Core §9), verified with joserfc against the JWKS registered for the client;
each assertion ``jti`` is accepted once (by any process: the replay cache is shared storage).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, cast

from sdk.jws import JWSError, b64url_decode

from ... import clock
from ..client import ClientRecord
from ..errors import InvalidClient
from ..request import OAuthRequest
from .base import FAILED, Credentials, usable

if TYPE_CHECKING:
    from ..stores import Stores

JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = ("ES256", "ES384", "ES512", "Ed25519", "EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
# RFC 9864 deprecates the polymorphic "EdDSA" name in favour of "Ed25519", which we accept too; many
# clients still send "EdDSA", and joserfc would warn on every such assertion it verifies.
warnings.filterwarnings("ignore", message="EdDSA is deprecated via RFC 9864")
MAX_ASSERTION_LIFETIME = 3600
MAX_ASSERTION_BYTES = 8192


class PrivateKeyJwt:
    name = "private_key_jwt"
    credential: Literal["jwks"] = "jwks"
    signing_alg_values = ASSERTION_ALGS
    challenge: Mapping[str, str] = {}

    def present(self, request: OAuthRequest) -> bool:
        return "client_assertion" in request.form or "client_assertion_type" in request.form

    def credentials(self, request: OAuthRequest) -> Credentials:
        form = request.form
        if form.get("client_assertion_type") != JWT_BEARER_ASSERTION:
            raise InvalidClient(f"client_assertion_type must be {JWT_BEARER_ASSERTION}")
        assertion = form.get("client_assertion") or ""
        if len(assertion) > MAX_ASSERTION_BYTES or assertion.count(".") != 2:
            raise InvalidClient("malformed client assertion")
        # Read iss before verifying, only to find the client whose keys verify it.
        try:
            unverified = json.loads(b64url_decode(assertion.split(".")[1]))
            issuer = unverified["iss"] if isinstance(unverified, dict) else None
        except (JWSError, ValueError, KeyError, UnicodeDecodeError, RecursionError):  # deep nesting: RecursionError
            raise InvalidClient("malformed client assertion") from None
        if not isinstance(issuer, str) or form.get("client_id") not in (None, issuer):
            raise InvalidClient("client assertion iss must be the client_id")
        return Credentials(issuer, assertion)

    def verify(self, stores: Stores, credentials: Credentials) -> ClientRecord:
        from joserfc import jwt
        from joserfc.errors import JoseError
        from joserfc.jwk import KeySet, KeySetSerialization

        client = stores.clients.get(credentials.client_id)
        if client is None or client.jwks is None:
            raise InvalidClient(FAILED)
        try:
            keys = KeySet.import_key_set(cast(KeySetSerialization, client.jwks))
            token = jwt.decode(credentials.proof, keys, algorithms=list(ASSERTION_ALGS))
        except (JoseError, ValueError, TypeError, KeyError):
            raise InvalidClient("client assertion signature is invalid") from None
        claims = token.claims
        ctx = stores.auth_context
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
        usable(client, self)  # before the jti is spent: a disabled client's assertion writes nothing
        if not stores.assertion_jtis.claim(client.client_id, jti, exp):
            raise InvalidClient("client assertion was already used (jti replay)")
        return client
