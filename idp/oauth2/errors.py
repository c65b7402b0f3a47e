"""OAuth error responses (RFC 6749 §5.2, RFC 6750 §3, RFC 8707 §2, RFC 7009 §2.2.1)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import IdPError

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass
class OAuthResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()


class OAuthError(IdPError):
    """An error the endpoint answers with ``{"error": ..., "error_description": ...}``."""

    error = "invalid_request"
    status = 400

    def __init__(self, description: str, *, status: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.description = description
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def response(self) -> OAuthResponse:
        body = {"error": self.error, "error_description": error_description(self.description)}
        return OAuthResponse(self.status, body, {**NO_STORE, **self.headers})


_READABLE = str.maketrans({"\u00a7": "section ", '"': "'", "\\": "/"})


def error_description(text: str) -> str:
    """RFC 6749 §5.2: error_description holds only %x20-21 / %x23-5B / %x5D-7E. Descriptions may
    echo request input (a repeated parameter's name) or cite "RFC ... §n"; anything else becomes '?'."""
    return "".join(c if c in "\x20\x21" or "\x23" <= c <= "\x5b" or "\x5d" <= c <= "\x7e" else "?"
                   for c in text.translate(_READABLE))


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidClient(OAuthError):
    error = "invalid_client"
    status = 401


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class InvalidTarget(OAuthError):
    error = "invalid_target"


class ServerBusy(OAuthError):
    error = "temporarily_unavailable"
    status = 503
