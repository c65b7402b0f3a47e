"""What the code and refresh-token stores hand the grants: the authorization a code or a refresh
token carries (RFC 6749 §4.1.2 "bound to the client identifier and redirection URI"; §6)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import OAuthError
from .subject import Subject


class InvalidGrant(OAuthError):
    """RFC 6749 §5.2 ``invalid_grant``: the code or refresh token is invalid, expired, revoked,
    used, or bound to another client, redirect URI or resource."""

    error = "invalid_grant"


@dataclass(frozen=True)
class Authorization:
    """What the person granted, as bound into a code and carried along its refresh tokens."""

    client_id: str
    subject: Subject
    resource: str
    scope: str  # capabilities granted
    other_scopes: tuple[str, ...]  # OpenID Connect scopes (openid, profile, email, offline_access)
    auth_time: int
    session_id: str | None
    family_id: str

    def to_json(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "subject": self.subject.id, "subject_kind": self.subject.kind,
                "claims": dict(self.subject.claims), "resource": self.resource, "scope": self.scope,
                "other_scopes": list(self.other_scopes), "auth_time": self.auth_time, "session_id": self.session_id,
                "family_id": self.family_id}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Authorization:
        return cls(client_id=data["client_id"],
                   subject=Subject(data["subject"], data.get("subject_kind", "user"), dict(data.get("claims") or {})),
                   resource=data["resource"], scope=data["scope"], other_scopes=tuple(data.get("other_scopes", ())),
                   auth_time=data["auth_time"], session_id=data.get("session_id"), family_id=data["family_id"])


@dataclass(frozen=True)
class CodeRecord:
    """An authorization code (RFC 6749 §4.1.2), as stored (the code itself is only a hash)."""

    code_hash: str
    authorization: Authorization
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    expires_at: int
    used_at: int | None


@dataclass(frozen=True)
class RefreshRotation:
    """A refresh token just exchanged (RFC 6749 §6): what it carried and its rotated successor."""

    authorization: Authorization
    refresh_token: str | None  # the successor (None: the family ends with this exchange)
    refresh_expires_at: int | None
    grace_retry: bool = False  # a retry within the grace window (docs/authorization.md)
    extra: dict[str, Any] = field(default_factory=dict)
