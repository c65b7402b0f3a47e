"""``client_secret_basic``: HTTP Basic credentials (RFC 6749 §2.3.1).

The client id and secret are form-urlencoded before base64, so they are url-decoded after.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote_plus

from ..client import ClientRecord
from ..errors import InvalidClient, InvalidRequest
from ..request import OAuthRequest
from .base import BASIC_CHALLENGE, Credentials, verify_secret

if TYPE_CHECKING:
    from ..stores import Stores


class ClientSecretBasic:
    name = "client_secret_basic"
    credential: Literal["secret"] = "secret"
    signing_alg_values = ()
    challenge = BASIC_CHALLENGE

    def present(self, request: OAuthRequest) -> bool:
        return "authorization" in request.headers

    def credentials(self, request: OAuthRequest) -> Credentials:
        scheme, _, value = request.headers["authorization"].partition(" ")
        if scheme.lower() != "basic":
            raise InvalidClient("unsupported Authorization scheme; use Basic", headers=dict(BASIC_CHALLENGE))
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise InvalidClient("malformed Basic credentials", headers=dict(BASIC_CHALLENGE)) from None
        client_id, sep, secret = decoded.partition(":")
        if not sep:
            raise InvalidClient("malformed Basic credentials", headers=dict(BASIC_CHALLENGE))
        client_id = unquote_plus(client_id)
        if request.form.get("client_id") not in (None, client_id):
            raise InvalidRequest("client_id in the body differs from the Basic credentials")
        return Credentials(client_id, unquote_plus(secret))

    def verify(self, stores: Stores, credentials: Credentials) -> ClientRecord:
        return verify_secret(stores, credentials, self)
