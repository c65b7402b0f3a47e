"""Rendering the IdP's pages (Jinja2, autoescaped) with strict security headers on every one.

No page loads anything from elsewhere and none runs a script: the CSP allows only the IdP's own
stylesheet and images, forms that post to the IdP — plus, where a form's answer is a redirect
to the client (login, consent), that redirect's origin, since browsers apply ``form-action`` to
the redirects after a submission — and no framing (``frame-ancestors 'none'`` and
``X-Frame-Options: DENY`` against clickjacking the consent button).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

if TYPE_CHECKING:
    from ..provider import Provider

__all__ = ["STATIC_DIR", "render", "security_headers", "source_of", "stores_of"]

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"
_env = Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=select_autoescape(default=True),
                   trim_blocks=True, lstrip_blocks=True)
_SOURCE = re.compile(r"(?:[a-z][a-z0-9+.-]*:)|(?:https?://[A-Za-z0-9.\-\[\]:]+)")


def source_of(url: str) -> str | None:
    """The CSP source expression of a redirect URI (its origin; ``scheme:`` for private-use
    schemes), or None if it cannot be written safely in a header."""
    try:
        parts = urlsplit(url)
        if parts.scheme in ("http", "https"):
            source = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        else:
            source = f"{parts.scheme}:"
    except ValueError:
        return None
    return source if _SOURCE.fullmatch(source) and source not in ("javascript:", "data:", "blob:") else None


def security_headers(form_targets: Iterable[str] = ()) -> dict[str, str]:
    extra = [s for s in (source_of(u) for u in form_targets) if s]
    form_action = " ".join(["'self'", *dict.fromkeys(extra)])
    return {
        "Content-Security-Policy": (f"default-src 'none'; style-src 'self'; img-src 'self'; form-action {form_action}; "
                                    "frame-ancestors 'none'; base-uri 'none'"),
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


def render(request: Request, template: str, *, status: int = 200, form_targets: Iterable[str] = (),
           **ctx: Any) -> HTMLResponse:
    html = _env.get_template(template).render(request=request, **ctx)
    return HTMLResponse(html, status, headers=security_headers(form_targets))


def redirect(url: str, *, form_targets: Iterable[str] = ()) -> Response:
    """303 See Other (the browser follows it with GET, also after a POST), with the page headers."""
    headers = security_headers(form_targets)
    headers["Location"] = url
    return Response(status_code=303, headers=headers)


def stores_of(request: Request) -> Provider:
    """The provider of the app serving this request (set by ``idp.app.create_app``)."""
    getter = request.app.state.provider_getter
    return getter()  # type: ignore[no-any-return]
