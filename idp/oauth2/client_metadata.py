"""Client metadata (RFC 7591 §2): validated once, for dynamic registration and for Client ID
Metadata Documents alike.

Only what this server uses or shows is kept; every kept value is checked for its type and form
(RFC 7591 §3.2.2: ``invalid_redirect_uri`` for a bad redirect URI, ``invalid_client_metadata``
for anything else). Unknown members are ignored (RFC 7591 §2: "the authorization server MUST
ignore any client metadata sent by the client that it does not understand").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .errors import OAuthError

#: Grants an interactive client may register for (client credentials stay with the operator:
#: a self-registered machine client would get tokens with no person in the loop).
INTERACTIVE_GRANTS = ("authorization_code", "refresh_token")
#: How a dynamic client may authenticate at the token endpoint: none (native and browser apps,
#: with PKCE), or a secret this server generates.
DYNAMIC_AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post")
APPLICATION_TYPES = ("native", "web")
MAX_REDIRECT_URIS = 16
MAX_URI = 512
MAX_TEXT = 200
MAX_CONTACTS = 8
MAX_SCOPE = 2048


class InvalidRedirectUri(OAuthError):
    """RFC 7591 §3.2.2."""

    error = "invalid_redirect_uri"


class InvalidClientMetadata(OAuthError):
    """RFC 7591 §3.2.2."""

    error = "invalid_client_metadata"


@dataclass(frozen=True)
class ClientMetadata:
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    response_types: tuple[str, ...]
    token_endpoint_auth_method: str
    application_type: str
    client_name: str | None = None
    # Optional members, as given (already checked): client_uri, logo_uri, tos_uri, policy_uri,
    # scope, contacts, software_id, software_version, jwks_uri, jwks.
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The metadata as registered (RFC 7591 §3.2.1 echoes it back)."""
        doc: dict[str, Any] = {
            "redirect_uris": list(self.redirect_uris),
            "grant_types": list(self.grant_types),
            "response_types": list(self.response_types),
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "application_type": self.application_type,
        }
        if self.client_name is not None:
            doc["client_name"] = self.client_name
        doc.update(self.extra)
        return doc


def is_loopback_redirect(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme == "http" and (parts.hostname or "") in ("localhost", "127.0.0.1", "::1")


def check_redirect_uri(uri: Any) -> str:
    """A redirect URI a client may register (RFC 6749 §3.1.2, RFC 8252 §7, OAuth 2.1 §2.3.1):
    absolute, no fragment, no userinfo; ``https``, or ``http`` on a loopback host (RFC 8252 §7.3),
    or a private-use scheme in reverse-domain form (RFC 8252 §7.1, e.g. ``com.example.app:/cb``).

    (Local check until the authorization-code work ships ``idp.oauth2.redirect_uris``; both
    follow the same RFCs.)"""
    if not isinstance(uri, str) or not uri or len(uri) > MAX_URI or not uri.isascii() or not uri.isprintable() \
            or any(c.isspace() for c in uri):
        raise InvalidRedirectUri("redirect URIs must be ASCII strings of at most 512 characters without spaces")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise InvalidRedirectUri(f"malformed redirect URI {uri!r}") from None
    if parts.fragment or "#" in uri:
        raise InvalidRedirectUri("a redirect URI must not have a fragment (RFC 6749 section 3.1.2)")
    if "@" in parts.netloc:
        raise InvalidRedirectUri("a redirect URI must not carry user information")
    scheme = parts.scheme
    if scheme == "https":
        if not parts.hostname:
            raise InvalidRedirectUri(f"redirect URI {uri!r} has no host")
        return uri
    if scheme == "http":
        if not is_loopback_redirect(uri):
            raise InvalidRedirectUri("http redirect URIs are allowed only on loopback (127.0.0.1, [::1], localhost)")
        return uri
    if scheme in ("javascript", "data", "file", "vbscript", "blob", "about", "ws", "wss") or "." not in scheme:
        raise InvalidRedirectUri(
            f"redirect URI scheme {scheme or '(none)'!r} is not allowed: use https, loopback http, or a "
            "private-use scheme in reverse-domain form (RFC 8252 section 7.1)")
    if parts.netloc:  # RFC 8252 §7.1: com.example.app:/callback (one slash)
        raise InvalidRedirectUri("a private-use scheme redirect URI has no authority (com.example.app:/callback)")
    return uri


def _uri(doc: Mapping[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_URI or not value.isascii() or not value.isprintable():
        raise InvalidClientMetadata(f"{name} must be a URI of at most {MAX_URI} ASCII characters")
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.netloc or "@" in parts.netloc or parts.fragment:
        raise InvalidClientMetadata(f"{name} must be an https URL without user information or fragment")
    return value


def _text(doc: Mapping[str, Any], name: str, limit: int = MAX_TEXT) -> str | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit or not value.isprintable():
        raise InvalidClientMetadata(f"{name} must be a non-empty string of at most {limit} printable characters")
    return value


def _strings(doc: Mapping[str, Any], name: str, limit: int) -> list[str] | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(value) > limit:
        raise InvalidClientMetadata(f"{name} must be an array of at most {limit} strings")
    return list(dict.fromkeys(value))


def validate(doc: Any, *, auth_methods: tuple[str, ...] = DYNAMIC_AUTH_METHODS) -> ClientMetadata:
    """Validated client metadata, or :class:`InvalidRedirectUri` / :class:`InvalidClientMetadata`."""
    if not isinstance(doc, dict):
        raise InvalidClientMetadata("client metadata must be a JSON object")
    grants = _strings(doc, "grant_types", 4) or ["authorization_code"]  # RFC 7591 §2 default
    for grant in grants:
        if grant not in INTERACTIVE_GRANTS:
            raise InvalidClientMetadata(
                f"grant type {grant[:64]!r} cannot be registered here: only {', '.join(INTERACTIVE_GRANTS)}")
    if "authorization_code" not in grants:
        raise InvalidClientMetadata("grant_types must include authorization_code")
    responses = _strings(doc, "response_types", 2) or ["code"]
    if responses != ["code"]:
        raise InvalidClientMetadata("response_types must be [\"code\"] (RFC 7591 section 2.1)")
    raw_uris = doc.get("redirect_uris")
    if not isinstance(raw_uris, list) or not raw_uris:
        raise InvalidRedirectUri("redirect_uris must be a non-empty array (the authorization code grant needs one)")
    if len(raw_uris) > MAX_REDIRECT_URIS:
        raise InvalidRedirectUri(f"at most {MAX_REDIRECT_URIS} redirect URIs")
    uris = tuple(dict.fromkeys(check_redirect_uri(u) for u in raw_uris))
    method = doc.get("token_endpoint_auth_method", "none")
    # RFC 7591 §2 defaults to client_secret_basic; MCP clients that send nothing are public
    # native apps (the Python SDK's DCR request omits it), so absent means "none" here.
    if not isinstance(method, str) or method not in auth_methods:
        raise InvalidClientMetadata(f"token_endpoint_auth_method must be one of {', '.join(auth_methods)}")
    # Absent: "web" (OpenID Connect Registration §2) if every redirect URI is https, else "native".
    app_type = doc.get("application_type", "web" if all(u.startswith("https:") for u in uris) else "native")
    if app_type not in APPLICATION_TYPES:
        raise InvalidClientMetadata("application_type must be native or web")
    if app_type == "web" and any(not u.startswith("https:") for u in uris):
        # OpenID Connect Registration §2: web clients redirect to https only.
        raise InvalidRedirectUri("a web application's redirect URIs must use https")
    extra: dict[str, Any] = {}
    for name in ("client_uri", "logo_uri", "tos_uri", "policy_uri", "jwks_uri"):
        uri = _uri(doc, name)
        if uri is not None:
            extra[name] = uri
    for name in ("software_id", "software_version"):
        text = _text(doc, name)
        if text is not None:
            extra[name] = text
    scope = _text(doc, "scope", MAX_SCOPE)
    if scope is not None:
        extra["scope"] = " ".join(scope.split())
    contacts = _strings(doc, "contacts", MAX_CONTACTS)
    if contacts is not None:
        if any(len(c) > MAX_TEXT or not c.isprintable() for c in contacts):
            raise InvalidClientMetadata(f"contacts must be at most {MAX_TEXT} printable characters each")
        extra["contacts"] = contacts
    if "jwks" in doc:
        if not isinstance(doc["jwks"], dict):
            raise InvalidClientMetadata("jwks must be a JSON Web Key Set object")
        extra["jwks"] = doc["jwks"]
    if "jwks" in extra and "jwks_uri" in extra:
        raise InvalidClientMetadata("jwks and jwks_uri must not both be present (RFC 7591 section 2)")
    return ClientMetadata(redirect_uris=uris, grant_types=tuple(grants), response_types=tuple(responses),
                          token_endpoint_auth_method=method, application_type=app_type,
                          client_name=_text(doc, "client_name"), extra=extra)
