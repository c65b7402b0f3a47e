"""CSRF protection of the pages' forms: a token bound to the browser's (pre-)session, and the
request's origin.

Every form carries ``csrf`` = HMAC-SHA256(session's CSRF key, purpose and interaction id): a
page of another site cannot read it, and it is worthless in another browser, for another form or
another interaction (OWASP synchronizer-token pattern). Every POST is also refused when the
browser says it comes from elsewhere: ``Origin`` other than the issuer's, or ``Sec-Fetch-Site``
other than ``same-origin``. Our pages send ``Referrer-Policy: no-referrer``, under which
browsers send ``Origin: null`` even for same-origin form posts (Fetch §3.1 "serializing a
request origin"), so ``null`` is accepted only together with ``Sec-Fetch-Site: same-origin``.
Clients that send neither header (headless drivers) still need the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlsplit

from starlette.requests import Request

from .session import WebSession

__all__ = ["check_origin", "token", "verify"]


def token(session: WebSession, purpose: str, interaction_id: str = "") -> str:
    mac = hmac.new(session.csrf_key.encode(), f"{purpose}\x00{interaction_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def verify(session: WebSession | None, sent: str | None, purpose: str, interaction_id: str = "") -> bool:
    if session is None or not session.csrf_key or not isinstance(sent, str) or len(sent) != 43:
        return False
    return hmac.compare_digest(token(session, purpose, interaction_id).encode(), sent.encode("utf-8", "replace"))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_origin(request: Request, issuer: str) -> bool:
    """False if the browser tells us the POST comes from another origin."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return site == "same-origin"
    return origin.lower() == _origin(issuer)
