"""The one request object the OAuth endpoints hand to their handlers.

Built once per request by the HTTP layer (``idp.app.OAuthEndpoints``) from the ASGI scope and
body; nothing below it reads the scope. A slots dataclass: building it is a handful of stores.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .forms import Form


@dataclass(slots=True)
class OAuthRequest:
    method: str
    url: str
    headers: Mapping[str, str]  # lower-case names; Authorization, Content-Type, DPoP appear once
    form: Form
    remote_addr: str | None = None  # the peer's address, for throttling
    client_cert: str | None = None  # PEM of the TLS client certificate (ASGI TLS extension), if any
    dpop: str | None = None  # the DPoP proof header (RFC 9449), if any

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")

    @property
    def path(self) -> str:
        start = self.url.find("/", self.url.find("//") + 2)
        return self.url[start:] if start >= 0 else "/"
