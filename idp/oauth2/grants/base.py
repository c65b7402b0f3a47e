"""The protocol every grant implements (RFC 6749 §4, §5.1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..client import ClientRecord
from ..request import OAuthRequest

if TYPE_CHECKING:
    from ..stores import Stores


class Grant(Protocol):
    @property
    def grant_type(self) -> str:
        """The ``grant_type`` value (``grant_types_supported`` in the metadata)."""

    @property
    def parameters(self) -> Mapping[str, bool]:
        """The form parameters the grant reads, each with whether it is required (checked before
        client authentication; anything else in the form is ignored, RFC 6749 §3.2)."""

    def issue(self, stores: Stores, client: ClientRecord, request: OAuthRequest) -> dict[str, Any]:
        """The claims of the access token to issue to the authenticated ``client`` (RFC 9068), or
        an :class:`~idp.oauth2.errors.OAuthError`. The token endpoint signs and audits them."""
