"""Attacks on the pages, each refused: CSRF on login, consent and logout; cross-origin posts;
session fixation; framing (security headers on every page, errors included); password guessing
(per account and per address); hostile parameters (never a 500, never a redirect)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import pytest
from idp_testing import ISSUER

from idp import audit
from idp.config import Settings
from idp.provider import Provider

from .conftest import PASSWORD, REDIRECT
from .flows import (
    assert_security_headers,
    authorize,
    authorize_params,
    consent_form,
    follow,
    hidden,
    login,
    redirect_params,
    submit_consent,
)


def events(provider: Provider, prefix: str) -> list[dict[str, Any]]:
    return [r for r in audit.tail(provider.engine, limit=500) if r["event"].startswith(prefix)]


# --- CSRF ------------------------------------------------------------------------------------------------


def test_login_csrf_missing_wrong_or_foreign_is_403(web_provider: Provider, browser: Any, other_browser: Any,
                                                    client_id: str) -> None:
    page = authorize(browser, client_id, "tools/call:git-status")
    form = {"interaction": hidden(page.text, "interaction"), "username": "alice", "password": PASSWORD}
    foreign = authorize(other_browser, client_id, "tools/call:git-status")  # a valid token of another session
    for csrf in (None, "", "x" * 43, hidden(foreign.text, "csrf"), hidden(page.text, "csrf")[:-1] + "A"):
        data = {**form, **({"csrf": csrf} if csrf is not None else {})}
        resp = browser.post("/login/password", data=data)
        assert resp.status_code == 403, (csrf, resp.status_code)
        assert_security_headers(resp)
        assert "cbst_session" not in resp.headers.get("set-cookie", "")
    assert not events(web_provider, "session.login")
    assert login(browser, page).status_code == 303  # the genuine form still works


def test_consent_csrf_missing_or_wrong_is_403(web_provider: Provider, browser: Any, client_id: str) -> None:
    login_page = authorize(browser, client_id, "tools/call:git-status")
    page = follow(browser, login(browser, login_page))
    consent = consent_form(page)
    login_token = hidden(login_page.text, "csrf")  # a token of the pre-session, for another form
    for csrf in (None, "", "y" * 43, login_token):
        resp = submit_consent(browser, consent, csrf=csrf)
        assert resp.status_code == 403, csrf
        assert_security_headers(resp)
    assert not events(web_provider, "consent.")
    redirect_params(submit_consent(browser, consent))


def test_cross_origin_posts_are_refused(web_provider: Provider, browser: Any, client_id: str) -> None:
    page = authorize(browser, client_id, "tools/call:git-status")
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"}):
        resp = login(browser, page, **headers)
        assert resp.status_code == 403, headers
    # what a real browser sends for our own form under Referrer-Policy: no-referrer
    resp = login(browser, page, Origin="null", **{"Sec-Fetch-Site": "same-origin"})
    assert resp.status_code == 303
    consent = consent_form(follow(browser, resp))
    resp = browser.post("/consent", data={"interaction": consent.interaction, "csrf": consent.csrf, "action": "approve",
                                          "grant": list(consent.offered)}, headers={"Origin": "https://evil.example"})
    assert resp.status_code == 403
    resp = browser.post("/consent", data={"interaction": consent.interaction, "csrf": consent.csrf, "action": "approve",
                                          "grant": list(consent.offered)}, headers={"Origin": ISSUER})
    redirect_params(resp)


def test_logout_needs_its_csrf_token(web_provider: Provider, browser: Any, client_id: str) -> None:
    redirect_params(submit_consent(browser, consent_form(follow(browser, login(
        browser, authorize(browser, client_id, "tools/call:git-status"))))))
    cookie = browser.cookies["cbst_session"]
    assert browser.post("/logout", data={"csrf": "z" * 43}).status_code == 403
    assert web_provider.web_sessions.get(cookie) is not None
    page = browser.get("/logout")
    assert_security_headers(page)
    resp = browser.post("/logout", data={"csrf": hidden(page.text, "csrf")})
    assert resp.status_code == 200 and "Logged out" in resp.text
    assert web_provider.web_sessions.get(cookie) is None
    assert events(web_provider, "session.logout")


# --- session fixation, cookies ------------------------------------------------------------------------------


def test_login_issues_a_fresh_session_id(web_provider: Provider, browser: Any, client_id: str) -> None:
    page = authorize(browser, client_id, "tools/call:git-status")
    pre = browser.cookies["cbst_session"]
    pre_session = web_provider.web_sessions.get(pre)
    assert pre_session is not None and pre_session.subject is None
    resp = login(browser, page)
    post = browser.cookies["cbst_session"]
    assert post != pre
    assert web_provider.web_sessions.get(pre) is None  # the pre-login id is dead
    session = web_provider.web_sessions.get(post)
    assert session is not None and session.subject is not None and session.sid != pre_session.sid
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax") and "Path=/" in cookie
    assert "Secure" not in cookie  # the issuer is loopback http here
    # only hashes are stored
    import sqlalchemy as sa

    with web_provider.engine.connect() as conn:
        stored = [tuple(r) for r in conn.execute(sa.text("SELECT * FROM web_sessions"))]
    assert stored and post not in repr(stored) and pre not in repr(stored)
    # an attacker who planted the pre-login cookie gets nothing
    from starlette.testclient import TestClient

    with TestClient(browser.app, base_url=ISSUER, follow_redirects=False, cookies={"cbst_session": pre}) as attacker:
        page = authorize(attacker, client_id, "tools/call:git-status")
        assert "<h1>Log in</h1>" in page.text


def test_cookie_is_secure_and_host_prefixed_off_loopback(tmp_path: Any, web_settings: Settings) -> None:
    from starlette.testclient import TestClient

    from idp.app import create_app

    from .conftest import CATALOGUE, make_interactive_client

    settings = web_settings.model_copy(update={"issuer": "https://idp.example.test"})
    prov = Provider.open(settings)
    try:
        prov.resources.add("https://mcp.example.test/mcp", name="x")
        prov.resources.set_catalogue("https://mcp.example.test/mcp", CATALOGUE, actor="t")
        prov.users.add("bob", PASSWORD)
        cid = make_interactive_client(prov)
        with TestClient(create_app(provider=prov, maintenance=False), base_url="https://idp.example.test",
                        follow_redirects=False) as browser:
            resp = browser.get("/authorize?" + urlencode(authorize_params(cid, "tools/call:git-status")))
            resp = browser.get(resp.headers["location"])  # /interaction/{id} sets the pre-session cookie
            assert resp.status_code == 303
            cookie = resp.headers["set-cookie"]
            assert cookie.startswith("__Host-cbst_session=") and "Secure" in cookie and "HttpOnly" in cookie
            assert "Domain" not in cookie
    finally:
        prov.close()


def test_expired_session_asks_to_log_in_again(web_provider: Provider, browser: Any, client_id: str) -> None:
    import sqlalchemy as sa

    redirect_params(submit_consent(browser, consent_form(follow(browser, login(
        browser, authorize(browser, client_id, "tools/call:git-status"))))))
    with web_provider.engine.begin() as conn:
        conn.execute(sa.text("UPDATE web_sessions SET expires_at = 1"))
    page = authorize(browser, client_id, "tools/call:git-status")
    assert "<h1>Log in</h1>" in page.text


# --- headers on every page --------------------------------------------------------------------------------


def test_security_headers_on_every_page(web_provider: Provider, browser: Any, client_id: str) -> None:
    pages = [
        browser.get("/authorize"),  # no client: error page
        browser.get("/authorize?client_id=nobody&response_type=code"),
        browser.get("/authorize?" + urlencode({**authorize_params(client_id, "x"), "redirect_uri": "https://evil/"})),
        browser.get("/interaction/AAAAAAAAAAAAAAAAAAAAAA"),
        browser.get("/interaction/not-an-id"),
        browser.get("/login/password?interaction=x"),
        browser.get("/logout"),
        browser.post("/consent", data={"action": "approve"}),
        browser.post("/login/password", content=b"x", headers={"content-type": "text/plain"}),
    ]
    page = authorize(browser, client_id, "tools/call:git-status")
    pages.append(page)
    consent_page = follow(browser, login(browser, page))
    pages.append(consent_page)
    for resp in pages:
        assert resp.status_code < 500, resp.text
        assert resp.headers["content-type"].startswith("text/html"), resp.status_code
        assert_security_headers(resp)
        assert "<html lang=\"en\">" in resp.text and "<h1" in resp.text
        assert "<script" not in resp.text and "style=" not in resp.text and "http" not in resp.text.split(
            "<main", 1)[0].replace("http-equiv", "")
    css = browser.get("/static/cbst.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert css.headers["x-content-type-options"] == "nosniff"
    # consent page: its form's redirect goes to the client, which form-action must allow
    assert "form-action 'self' http://127.0.0.1:33418;" in consent_page.headers["content-security-policy"]


def test_error_pages_never_redirect(web_provider: Provider, browser: Any, client_id: str) -> None:
    cases = [
        {"client_id": "unknown", "redirect_uri": REDIRECT},
        {"client_id": client_id, "redirect_uri": "https://attacker.example/cb"},
        {"client_id": client_id, "redirect_uri": REDIRECT + "/../evil"},
        {"client_id": client_id},  # missing redirect_uri is fine with one registered URI, so add a bad one
    ]
    for extra in cases[:3]:
        resp = browser.get("/authorize?" + urlencode({**authorize_params(client_id, "tools/call:git-status"), **extra}))
        assert resp.status_code == 400, extra
        assert "location" not in resp.headers
        assert_security_headers(resp)


# --- password guessing ------------------------------------------------------------------------------------


def test_wrong_password_and_unknown_user_look_alike(web_provider: Provider, browser: Any, client_id: str) -> None:
    page = authorize(browser, client_id, "tools/call:git-status")
    wrong = login(browser, page, password="not the password")
    unknown = login(browser, page, username="mallory", password="whatever it is")
    for resp in (wrong, unknown):
        assert resp.status_code == 401 and "Wrong username or password." in resp.text
        assert_security_headers(resp)
    assert 'value="alice"' in wrong.text  # the username is kept for the next try
    assert login(browser, wrong).status_code == 303
    failed = events(web_provider, "login.failed")
    assert [e["data"]["username"] for e in failed] == ["alice", "mallory"]


def test_login_is_throttled_per_account(web_provider: Provider, browser: Any, other_browser: Any,
                                        client_id: str) -> None:
    page = authorize(browser, client_id, "tools/call:git-status")
    for _ in range(3):  # login_fail_account = 3
        assert login(browser, page, password="guess guess").status_code == 401
    resp = login(browser, page)  # even the right password is refused now
    assert resp.status_code == 429 and "Too many attempts" in resp.text and int(resp.headers["retry-after"]) > 0
    assert_security_headers(resp)
    throttled = events(web_provider, "login.throttled")
    assert throttled and throttled[-1]["data"]["username"] == "alice"
    # the account name is case-insensitive for the throttle
    assert login(browser, page, username="ALICE").status_code == 429
    # another account from the same address is not affected (yet)
    web_provider.users.add("carol", PASSWORD)
    assert login(browser, page, username="carol").status_code == 303


def test_login_is_throttled_per_address(web_provider: Provider, browser: Any, client_id: str) -> None:
    page = authorize(browser, client_id, "tools/call:git-status")
    for i in range(8):  # login_fail_address = 8, each guess at another name
        assert login(browser, page, username=f"user{i}", password="guess guess").status_code == 401
    resp = login(browser, page)
    assert resp.status_code == 429


# --- hostile input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", [
    "client_id=" + "a" * 9000,
    "client_id=a%00b&response_type=code",
    "client_id=a&client_id=b",
    "redirect_uri=a&redirect_uri=b",
    "client_id=%FF%FE",
    "%00=1",
    "&".join(f"p{i}=1" for i in range(100)),
    "client_id=" + quote("\ud800", safe="", errors="surrogatepass"),
])
def test_hostile_authorize_params_are_a_clean_400(web_provider: Provider, browser: Any, client_id: str,
                                                  query: str) -> None:
    resp = browser.get("/authorize?" + query)
    assert resp.status_code == 400, (query[:40], resp.status_code, resp.text[:300])
    assert "location" not in resp.headers and "Traceback" not in resp.text
    assert_security_headers(resp)


def test_hostile_forms_are_a_clean_400(web_provider: Provider, browser: Any, client_id: str) -> None:
    page = authorize(browser, client_id, "tools/call:git-status")
    interaction, csrf = hidden(page.text, "interaction"), hidden(page.text, "csrf")
    bodies = [
        b"interaction=" + interaction.encode() + b"&csrf=" + csrf.encode() + b"&username=a%00b&password=x",
        b"interaction=" + interaction.encode() + b"&interaction=" + interaction.encode(),
        b"username=" + b"a" * 20000,
        b"username=%FF",
    ]
    for body in bodies:
        resp = browser.post("/login/password", content=body,
                            headers={"content-type": "application/x-www-form-urlencoded"})
        assert resp.status_code == 400, (body[:40], resp.status_code)
        assert_security_headers(resp)
    resp = browser.post("/login/password", data={"interaction": interaction, "csrf": csrf, "username": "alice",
                                                 "password": "p" * 5000})
    assert resp.status_code == 401  # too long to be a password: a failed login, not a crash
    resp = browser.post("/authorize", content=b"a" * 20000,
                        headers={"content-type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 400
    resp = browser.post("/consent", data={"interaction": interaction, "csrf": csrf, "action": "explode"})
    assert resp.status_code == 400


def test_interaction_ids_are_random_and_single_use(web_provider: Provider, browser: Any, client_id: str) -> None:
    ids = set()
    for _ in range(3):
        resp = browser.get("/authorize?" + urlencode(authorize_params(client_id, "tools/call:git-status")))
        ids.add(resp.headers["location"].rsplit("/", 1)[1])
    assert len(ids) == 3 and all(len(i) == 22 for i in ids)  # 128 bits, base64url
