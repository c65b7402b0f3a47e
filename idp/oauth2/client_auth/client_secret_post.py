"""``client_secret_post``: ``client_id`` and ``client_secret`` in the form body (RFC 6749 §2.3.1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from ..client import ClientRecord
from ..request import OAuthRequest
from .base import Credentials, verify_secret

if TYPE_CHECKING:
    from ..stores import Stores


class ClientSecretPost:
    name = "client_secret_post"
    credential: Literal["secret"] = "secret"
    signing_alg_values = ()
    challenge: Mapping[str, str] = {}

    def present(self, request: OAuthRequest) -> bool:
        return "client_secret" in request.form

    def credentials(self, request: OAuthRequest) -> Credentials:
        form = request.form
        return Credentials(form.get("client_id") or "", form.get("client_secret") or "")

    def verify(self, stores: Stores, credentials: Credentials) -> ClientRecord:
        return verify_secret(stores, credentials, self)
