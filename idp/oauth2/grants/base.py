"""The protocol every grant implements (RFC 6749 §4, §5.1)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..client import ClientRecord
from ..request import OAuthRequest

if TYPE_CHECKING:
    from ..stores import Stores


@dataclass(slots=True)
class Issuance:
    """What a grant that issues more than an access token returns: the access token's claims and
    ``complete``, which the token endpoint calls with the signed access token. ``complete`` records
    the token where it belongs (its token family) and returns the fields to add to the token
    response (``refresh_token``, ``id_token``, ``scope``); it may raise an OAuthError."""

    claims: dict[str, Any]
    complete: Callable[[str], dict[str, Any]]
    audit: dict[str, Any] = field(default_factory=dict)  # added to the token.issued audit record


class Grant(Protocol):
    """A grant may also have ``writes: bool``: whether :meth:`issue` writes to the database
    (codes, refresh tokens). Unless it says False, the token endpoint never runs it on the event
    loop (client credentials, which only reads, does)."""

    @property
    def grant_type(self) -> str:
        """The ``grant_type`` value (``grant_types_supported`` in the metadata)."""

    @property
    def parameters(self) -> Mapping[str, bool]:
        """The form parameters the grant reads, each with whether it is required (checked before
        client authentication; anything else in the form is ignored, RFC 6749 §3.2)."""

    def issue(self, stores: Stores, client: ClientRecord, request: OAuthRequest) -> dict[str, Any] | Issuance:
        """The claims of the access token to issue to the authenticated ``client`` (RFC 9068), or
        an :class:`Issuance`, or an :class:`~idp.oauth2.errors.OAuthError`. The token endpoint
        signs and audits them."""
