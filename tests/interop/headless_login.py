"""A person at a browser, headless: follows the IdP's pages from an authorization URL to the
client's redirect URI, logging in with a local account and answering the consent form.

Used for every official client (as their redirect handler's "browser") and for the conformance
suite's authorization step. It reads the pages as a browser would — the HTML forms as served
(hidden CSRF and interaction fields included, checkboxes with their default state) — and submits
them; it knows nothing of the IdP's internals. One :class:`Person` keeps its cookies across
authorizations, so a second authorization finds the IdP session (no second login), as in a real
browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

MAX_STEPS = 20  # pages and redirects per authorization: a loop fails instead of hanging


@dataclass
class Form:
    action: str
    method: str
    id: str | None
    fields: list[tuple[str, str]] = field(default_factory=list)  # hidden/text inputs, in order
    checkboxes: list[tuple[str, str, bool]] = field(default_factory=list)  # (name, value, checked)
    buttons: list[tuple[str, str]] = field(default_factory=list)  # submit buttons (name, value)
    has_password: bool = False


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._form: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = Form(a.get("action", ""), a.get("method", "get").lower(), a.get("id"))
            self.forms.append(self._form)
            return
        form = self._form
        if form is None:
            return
        if tag == "input":
            kind = a.get("type", "text").lower()
            if kind == "checkbox":
                form.checkboxes.append((a.get("name", ""), a.get("value", "on"), "checked" in a))
            elif kind == "password":
                form.has_password = True
                form.fields.append((a.get("name", ""), ""))
            elif kind == "submit":
                form.buttons.append((a.get("name", ""), a.get("value", "")))
            elif a.get("name"):
                form.fields.append((a["name"], a.get("value", "")))
        elif tag == "button" and a.get("type", "submit").lower() == "submit":
            form.buttons.append((a.get("name", ""), a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None


def parse_forms(html: str) -> list[Form]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


@dataclass
class Consent:
    """One consent page as the person saw it."""

    offered: list[str]  # capabilities with a checkbox (the new ones)
    ticked: list[str]  # ticked by default
    granted: list[str]  # what the person submitted
    html: str


class AuthorizationFailed(AssertionError):
    pass


@dataclass
class Person:
    """``person(authorization_url) -> callback URL``. ``grant`` decides what to tick on a consent
    page: None keeps the defaults, "all" ticks everything, a set ticks exactly those."""

    username: str
    password: str
    grant: Any = "all"
    deny: bool = False
    timeout: float = 15.0
    logins: int = 0
    consents: list[Consent] = field(default_factory=list)
    pages: list[str] = field(default_factory=list)  # URLs visited, for failure messages
    callbacks: list[str] = field(default_factory=list)  # where each authorization sent the browser back

    def __post_init__(self) -> None:
        self.http = httpx.Client(timeout=self.timeout, follow_redirects=False)

    def __call__(self, url: str) -> str:
        return self.authorize(url)

    def authorize(self, url: str) -> str:
        idp = urlsplit(url)
        response = self.http.get(url)
        for _ in range(MAX_STEPS):
            self.pages.append(str(response.request.url))
            if response.is_redirect:
                location = urljoin(str(response.request.url), response.headers["location"])
                target = urlsplit(location)
                if (target.scheme, target.netloc) != (idp.scheme, idp.netloc):
                    self.callbacks.append(location)
                    return location  # back to the client: the browser would now load its redirect URI
                response = self.http.get(location)
                continue
            if response.status_code != 200:
                raise AuthorizationFailed(f"HTTP {response.status_code} at {response.request.url}: "
                                          f"{response.text[:2000]}")
            response = self._answer(response)
        raise AuthorizationFailed(f"no redirect to the client after {MAX_STEPS} steps: {self.pages}")

    def _answer(self, page: httpx.Response) -> httpx.Response:
        html = page.text
        forms = parse_forms(html)
        login = next((f for f in forms if f.has_password), None)
        if login is not None:
            self.logins += 1
            data = [(k, self.username if k == "username" else self.password if k == "password" else v)
                    for k, v in login.fields]
            return self._submit(page, login, data)
        consent = next((f for f in forms if f.id == "consent-form" or any(n == "grant" for n, _, _ in f.checkboxes)),
                       None)
        if consent is None:
            raise AuthorizationFailed(f"a page with neither a login nor a consent form at {page.request.url}:\n"
                                      f"{html[:3000]}")
        offered = [v for n, v, _ in consent.checkboxes if n == "grant"]
        ticked = [v for n, v, checked in consent.checkboxes if n == "grant" and checked]
        if self.grant is None:
            granted = ticked
        elif self.grant == "all":
            granted = offered
        else:
            granted = [v for v in offered if v in self.grant]
        self.consents.append(Consent(offered, ticked, granted, html))
        action = "deny" if self.deny else "approve"
        data = list(consent.fields) + [("grant", v) for v in granted]
        button = next(((n, v) for n, v in consent.buttons if v == action), None)
        if button is None:
            raise AuthorizationFailed(f"no {action!r} button on the consent page: {consent.buttons}")
        data.append(button)
        return self._submit(page, consent, data)

    def _submit(self, page: httpx.Response, form: Form, data: list[tuple[str, str]]) -> httpx.Response:
        target = urljoin(str(page.request.url), form.action or str(page.request.url))
        if form.method == "post":
            body = httpx.QueryParams(data)
            return self.http.post(target, content=str(body).encode(),
                                  headers={"content-type": "application/x-www-form-urlencoded",
                                           "origin": f"{urlsplit(target).scheme}://{urlsplit(target).netloc}"})
        return self.http.get(target, params=data)

    def close(self) -> None:
        self.http.close()
