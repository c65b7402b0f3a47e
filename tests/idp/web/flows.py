"""Driving the pages like a person with a browser would: follow the IdP's redirects, fill forms."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from idp_testing import AUDIENCE, ISSUER

from .conftest import PASSWORD, REDIRECT

SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}


def assert_security_headers(resp: Any) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers.get(name) == value, (name, resp.headers.get(name), resp.status_code)
    csp = resp.headers["content-security-policy"]
    for directive in ("default-src 'none'", "style-src 'self'", "img-src 'self'", "frame-ancestors 'none'",
                      "base-uri 'none'", "form-action 'self'"):
        assert directive in csp, (directive, csp)
    assert "script-src" not in csp and "unsafe-inline" not in csp


@dataclass
class Pkce:
    verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_params(client_id: str, scope: str, pkce: Pkce | None = None, **extra: str) -> dict[str, str]:
    pkce = pkce or Pkce()
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": scope,
              "state": "st-" + secrets.token_hex(4), "code_challenge": pkce.challenge,
              "code_challenge_method": "S256", "resource": AUDIENCE}
    params.update(extra)
    return params


def follow(browser: Any, resp: Any, *, limit: int = 6) -> Any:
    """Follow the IdP's own redirects (relative or to the issuer) until a page or a redirect elsewhere."""
    for _ in range(limit):
        if resp.status_code not in (302, 303):
            return resp
        location = resp.headers["location"]
        if location.startswith(ISSUER):
            location = location[len(ISSUER):]
        if not location.startswith("/"):
            return resp
        assert_security_headers(resp)
        resp = browser.get(location)
    raise AssertionError("too many redirects")


def authorize(browser: Any, client_id: str, scope: str, **extra: str) -> Any:
    return follow(browser, browser.get("/authorize?" + urlencode(authorize_params(client_id, scope, **extra))))


def hidden(page: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match, f"no {name} in page"
    return html.unescape(match.group(1))


def login(browser: Any, page: Any, username: str = "alice", password: str = PASSWORD, **headers: str) -> Any:
    assert page.status_code in (200, 400, 401), page.text
    assert 'action="/login/password"' in page.text, page.text
    form = {"interaction": hidden(page.text, "interaction"), "csrf": hidden(page.text, "csrf"),
            "username": username, "password": password}
    return browser.post("/login/password", data=form, headers=headers)


@dataclass
class Consent:
    interaction: str
    csrf: str
    offered: dict[str, bool]  # capability -> ticked by default
    page: str


def consent_form(page: Any) -> Consent:
    assert page.status_code == 200, page.text
    assert 'action="/consent"' in page.text, page.text[:2000]
    offered = {}
    for match in re.finditer(r'<input type="checkbox" name="grant" value="([^"]*)"[^>]*?(checked)?>', page.text,
                             flags=re.S):
        offered[html.unescape(match.group(1))] = match.group(2) is not None
    return Consent(hidden(page.text, "interaction"), hidden(page.text, "csrf"), offered, page.text)


def submit_consent(browser: Any, consent: Consent, grant: list[str] | None = None, action: str = "approve",
                   **overrides: Any) -> Any:
    grant = [c for c, ticked in consent.offered.items() if ticked] if grant is None else grant
    form: dict[str, Any] = {"interaction": consent.interaction, "csrf": consent.csrf, "action": action, "grant": grant}
    form.update(overrides)
    return browser.post("/consent", data={k: v for k, v in form.items() if v is not None})


def redirect_params(resp: Any) -> dict[str, str]:
    assert resp.status_code == 303, (resp.status_code, resp.text[:500])
    location = resp.headers["location"]
    assert location.startswith(REDIRECT + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def granted_scope(provider: Any, code: str) -> str:
    """The capabilities the code was issued for (what its tokens will hold)."""
    record = provider.authorization_codes.get(code)
    assert record is not None
    return str(record.authorization.scope)
