"""The pages' defences, seen from a real browser: CSP with nothing loaded from elsewhere, no
framing, CSRF refused from another site, session cookies the page's scripts cannot read, a fresh
session id after login, and no redirect to a redirect URI the client did not register."""

from __future__ import annotations

import contextlib
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from browser_support import (
    DESTRUCTIVE_TOOL,
    READONLY_TOOL,
    BrowserIdP,
    OtherSite,
    Watch,
    grant_boxes,
    login,
    wait_callback,
)

pytestmark = pytest.mark.slow

READ, DELETE = f"tools/call:{READONLY_TOOL}", f"tools/call:{DESTRUCTIVE_TOOL}"


def _documents(page: Any) -> list[Any]:
    """Record every document response the page gets (to check its headers)."""
    seen: list[Any] = []
    page.on("response", lambda r: seen.append(r) if r.request.resource_type == "document" else None)
    return seen


def _cookie(context: Any, idp: BrowserIdP) -> dict[str, Any] | None:
    host = urlsplit(idp.url).hostname
    found = [c for c in context.cookies(idp.url) if c["domain"].lstrip(".") == host and "session" in c["name"]]
    assert len(found) <= 1, found
    return found[0] if found else None


def _at_consent(page: Any, idp: BrowserIdP, scope: str = f"{READ} {DELETE}") -> str:
    """Log a new person in and stop at the consent page; the interaction id its form carries."""
    url, _ = idp.authorize_url(scope=scope)
    page.goto(url)
    login(page, idp.person())
    page.locator("#consent-form").wait_for()
    value = page.locator("#consent-form input[name=interaction]").get_attribute("value")
    assert value
    return value


def test_every_page_under_csp_with_nothing_from_elsewhere(page: Any, idp: BrowserIdP, watch: Watch) -> None:
    docs = _documents(page)
    url, _ = idp.authorize_url(scope=f"{READ} {DELETE}")
    page.goto(url)
    page.get_by_label("Username").wait_for()
    violations = page.evaluate("window.__cspViolations")
    login(page, idp.person())
    page.locator("#consent-form").wait_for()
    violations += page.evaluate("window.__cspViolations")
    page.get_by_role("button", name="Allow selected").click()
    wait_callback(page, idp)
    page.wait_for_url(idp.callback.redirect_uri + "?*")  # form-action let the 303 to the client through
    bad, _ = idp.authorize_url(scope=READ, redirect_uri="https://attacker.example/cb")
    page.goto(bad)
    page.locator("#error-message").wait_for()
    violations += page.evaluate("window.__cspViolations")

    assert not violations, violations
    assert not watch.csp_messages(), watch.csp_messages()
    assert not watch.page_errors, watch.page_errors
    # Everything the pages loaded came from the IdP; the one other request is the client's redirect.
    foreign = watch.foreign(idp.url)
    assert len(foreign) == 1 and foreign[0].startswith(f"GET {idp.callback.redirect_uri}?"), foreign
    kinds = {kind for _, u, kind in watch.requests if u.startswith(idp.url)}
    assert kinds <= {"document", "stylesheet"}, kinds  # no scripts, fonts, images from anywhere
    idp_docs = [r for r in docs if r.url.startswith(idp.url) and r.status in (200, 400)]
    assert len(idp_docs) >= 3
    for r in idp_docs:
        headers = r.all_headers()
        csp = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, (r.url, csp)
        assert headers["x-frame-options"].upper() == "DENY"
        assert "no-store" in headers["cache-control"]


def test_pages_refuse_to_be_framed(context: Any, page: Any, idp: BrowserIdP, other_site: OtherSite,
                                   watch: Watch) -> None:
    """The consent page (and the login page) in an iframe of another origin — clickjacking the
    Allow button — does not render. From another site (localhost) and from the same site
    (127.0.0.1, another port: the SameSite=Lax cookie goes along into the frame, so only
    frame-ancestors / X-Frame-Options stand in the way)."""
    interaction = _at_consent(page, idp)
    login_url, _ = idp.authorize_url(scope=READ)
    attacker = context.new_page()
    for origin in (other_site.origin, f"http://127.0.0.1:{other_site.port}"):
        for name, target in (("consent", f"{idp.url}/interaction/{interaction}"), ("login", login_url)):
            framing = other_site.frame(f"/frame-{name}", target).replace(other_site.origin, origin)
            before = len(watch.csp_messages())
            attacker.goto(framing)
            frames = [f for f in attacker.frames if f != attacker.main_frame]
            assert len(frames) == 1
            deadline = 50
            while len(watch.csp_messages()) == before and deadline:  # the refusal is reported
                attacker.wait_for_timeout(100)
                deadline -= 1
            body = ""
            with contextlib.suppress(Exception):  # a blocked frame may have no document to read
                body = frames[0].locator("body").inner_text(timeout=1000)
            assert "Allow selected" not in body and "Username" not in body, (origin, name, body)
            assert frames[0].locator("#consent-form, #login-form").count() == 0, (origin, name)
            refusal = watch.csp_messages()[before:]
            assert any("frame-ancestors" in m or "X-Frame-Options" in m for m in refusal), (origin, name, watch.console)
    # The person's own consent page still works afterwards.
    page.get_by_role("button", name="Allow selected").click()
    wait_callback(page, idp)


def test_cross_site_consent_post_is_refused(context: Any, page: Any, idp: BrowserIdP, other_site: OtherSite) -> None:
    """Another site makes the logged-in person's browser approve the destructive tool for them:
    from another site (no cookie goes along) and from the same site (the cookie does)."""
    interaction = _at_consent(page, idp)
    victim = context.new_page()
    for origin in (other_site.origin, f"http://127.0.0.1:{other_site.port}"):
        attack = other_site.auto_post("/csrf-consent", f"{idp.url}/consent", {
            "interaction": interaction, "action": "approve", "grant": DELETE, "csrf": "A" * 43,
        }).replace(other_site.origin, origin)
        with victim.expect_response(lambda r: r.url == f"{idp.url}/consent") as answer:
            victim.goto(attack)
        assert answer.value.status == 403, (origin, answer.value.status)
        victim.locator("#error-message").wait_for()
        assert not idp.callback.hits  # no code went to the client
    # The real consent is still pending and works: the forged posts changed nothing.
    page.goto(f"{idp.url}/interaction/{interaction}")
    boxes = grant_boxes(page)
    assert not boxes[DELETE].is_checked()
    page.get_by_role("button", name="Allow selected").click()
    got = wait_callback(page, idp)
    assert "code" in got


def test_consent_with_a_forged_token_from_the_page_itself_is_refused(page: Any, idp: BrowserIdP,
                                                                    watch: Watch) -> None:
    """Same origin (so the Origin check passes), but the CSRF token is not the one this session
    got. And first, as if a script had been injected: the form re-pointed at another site is
    stopped by the page's CSP (``form-action``) before anything is sent."""
    interaction = _at_consent(page, idp)
    page.locator("#consent-form").evaluate("f => f.action = 'http://localhost:1/steal'")
    page.get_by_role("button", name="Allow selected").click(no_wait_after=True)  # no navigation follows
    for _ in range(50):
        if any("form-action" in m for m in watch.csp_messages()):
            break
        page.wait_for_timeout(100)
    assert page.url.startswith(idp.url), page.url
    assert not [r for r in watch.requests if "/steal" in r[1]], watch.requests
    assert any("form-action" in m for m in watch.csp_messages()), watch.console
    page.goto(f"{idp.url}/interaction/{interaction}")  # the consent page again, as served
    page.locator("#consent-form input[name=csrf]").evaluate("el => el.value = 'B'.repeat(43)")
    with page.expect_response(lambda r: r.url.endswith("/consent")) as answer:
        page.get_by_role("button", name="Allow selected").click()
    assert answer.value.status == 403
    assert "CSRF" in page.locator("#error-message").inner_text()
    assert not idp.callback.hits


def test_login_csrf_with_the_attackers_own_token_is_refused(context: Any, idp: BrowserIdP,
                                                            other_site: OtherSite) -> None:
    """Login CSRF: the attacker starts a request in its own browser (getting a real CSRF token for
    its own pre-session), then makes the victim's browser post the attacker's credentials with it,
    to log the victim in as the attacker."""
    import httpx

    attacker_name = idp.person()
    url, _ = idp.authorize_url(scope=READ)
    with httpx.Client(follow_redirects=True, timeout=10) as own:
        form_page = own.get(url).text
    interaction = re.search(r'name="interaction" value="([^"]+)"', form_page)
    token = re.search(r'name="csrf" value="([^"]+)"', form_page)
    assert interaction and token
    attack = other_site.auto_post("/csrf-login", f"{idp.url}/login/password", {
        "interaction": interaction.group(1), "csrf": token.group(1), "username": attacker_name,
        "password": "correct horse battery staple"})
    victim = context.new_page()
    with victim.expect_response(lambda r: r.url == f"{idp.url}/login/password") as answer:
        victim.goto(attack)
    assert answer.value.status == 403
    assert _cookie(context, idp) is None or victim.locator("#error-message").count() == 1
    # The victim's browser holds no logged-in session: a new request asks it to log in.
    url, _ = idp.authorize_url(scope=READ)
    victim.goto(url)
    victim.get_by_label("Password").wait_for()


def test_session_cookie_httponly_samesite_and_renewed_at_login(context: Any, page: Any, idp: BrowserIdP) -> None:
    """The session cookie as the browser holds it, and session fixation: an attacker plants a
    pre-session cookie of its own in the victim's browser; the victim logs in; the logged-in
    session has a fresh id and the planted cookie logs nobody in."""
    import httpx

    url, _ = idp.authorize_url(scope=READ)
    with httpx.Client(follow_redirects=True, timeout=10) as own:
        own.get(url)
        planted = [(c.name, c.value) for c in own.cookies.jar if "session" in c.name]
    assert len(planted) == 1, planted
    name, value = planted[0]
    context.add_cookies([{"name": name, "value": value, "url": idp.url, "httpOnly": True, "sameSite": "Lax"}])

    url, _ = idp.authorize_url(scope=READ)
    page.goto(url)
    page.get_by_label("Username").wait_for()
    before = _cookie(context, idp)
    assert before is not None, context.cookies()
    login(page, idp.person())
    page.locator("#consent-form").wait_for()
    after = _cookie(context, idp)
    assert after is not None
    assert after["value"] not in (before["value"], value), "a fresh session id after login (no session fixation)"
    for cookie in (before, after):
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] in ("Lax", "Strict")
        assert cookie["path"] == "/"
        assert cookie["secure"] is False  # only because this IdP is on loopback http; off loopback it is on
    assert name not in page.evaluate("document.cookie")  # the page's scripts cannot read it
    with httpx.Client(timeout=10, cookies={name: value}) as own:  # the planted cookie logs nobody in
        again, _ = idp.authorize_url(scope=READ)
        r = own.get(again, follow_redirects=True)
    assert "Password" in r.text and "consent-form" not in r.text


@pytest.mark.parametrize("redirect_uri", [
    "https://attacker.example/cb",                 # another host
    "http://127.0.0.1:1/elsewhere",                 # loopback, but another path
    "http://127.0.0.1:1/callback/../evil",          # dot segments
    "http://attacker.example/callback",             # the right path on another host
])
def test_unregistered_redirect_uri_shows_an_error_and_never_redirects(page: Any, idp: BrowserIdP, watch: Watch,
                                                                      redirect_uri: str) -> None:
    url, _ = idp.authorize_url(scope=READ, redirect_uri=redirect_uri)
    with page.expect_response(lambda r: r.url.startswith(f"{idp.url}/authorize")) as answer:
        page.goto(url)
    assert answer.value.status == 400
    message = page.locator("#error-message")
    message.wait_for()
    assert message.inner_text().strip()
    page.wait_for_timeout(300)
    assert page.url.startswith(idp.url + "/authorize")  # stayed at the IdP
    assert watch.foreign(idp.url) == [], watch.foreign(idp.url)
    assert not idp.callback.hits


def test_unknown_client_shows_an_error_and_never_redirects(page: Any, idp: BrowserIdP, watch: Watch) -> None:
    url, _ = idp.authorize_url(scope=READ, client_id="no-such-client")
    with page.expect_response(lambda r: r.url.startswith(f"{idp.url}/authorize")) as answer:
        page.goto(url)
    assert answer.value.status == 400
    page.locator("#error-message").wait_for()
    assert watch.foreign(idp.url) == [] and not idp.callback.hits
