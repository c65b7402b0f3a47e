"""``none``: a public client (RFC 6749 §2.1, RFC 7591 §2) names itself with ``client_id`` in the
form and proves nothing (RFC 6749 §3.2.1); PKCE and the single-use code protect its grants.

It identifies only clients registered with ``none``: a confidential client (secret or key)
that sends just its client_id is refused, like any other method it did not register
(:func:`~.base.usable`). Public clients get no client credentials grant (it checks so too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from ..client import ClientRecord
from ..errors import InvalidClient
from ..request import OAuthRequest
from .base import FAILED, Credentials, usable

if TYPE_CHECKING:
    from ..stores import Stores

_OTHER_PROOFS = ("client_secret", "client_assertion", "client_assertion_type")


class NoClientAuthentication:
    name = "none"
    credential: Literal["none"] = "none"
    signing_alg_values = ()
    challenge: Mapping[str, str] = {}

    def present(self, request: OAuthRequest) -> bool:
        form = request.form
        return ("client_id" in form and request.authorization is None
                and not any(p in form for p in _OTHER_PROOFS))

    def credentials(self, request: OAuthRequest) -> Credentials:
        return Credentials(request.form.get("client_id") or "", "")

    def verify(self, stores: Stores, credentials: Credentials) -> ClientRecord:
        client = stores.clients.get(credentials.client_id)
        if client is None:
            raise InvalidClient(FAILED)
        return usable(client, self)
