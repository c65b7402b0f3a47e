"""The authorization endpoint's pages end to end over the real app, on SQLite and PostgreSQL:
login, consent (remembered, step-up, destructive tools, partial approval, denial), prompt and
max_age, and the audit records of every consent event."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from idp_testing import AUDIENCE, ISSUER

from idp import audit
from idp.policy import Decision
from idp.provider import Provider
from sdk.capabilities import CapabilitySet

from .conftest import REDIRECT, make_interactive_client
from .flows import (
    assert_security_headers,
    authorize,
    authorize_params,
    consent_form,
    follow,
    granted_scope,
    login,
    redirect_params,
    submit_consent,
)


def scopes(scope: str) -> set[str]:
    return set(scope.split())


def granted(provider: Provider, redirect: dict[str, str]) -> set[str]:
    return set(granted_scope(provider, redirect["code"]).split())


def consent_events(provider: Provider) -> list[dict[str, Any]]:
    return [r for r in audit.tail(provider.engine, limit=200) if r["event"].startswith("consent.")]


def login_to_consent(browser: Any, client_id: str, scope: str, **extra: str) -> Any:
    page = authorize(browser, client_id, scope, **extra)
    assert_security_headers(page)
    return follow(browser, login(browser, page))


def test_login_consent_code_redirect(web_provider: Provider, browser: Any, client_id: str) -> None:
    params = authorize_params(client_id, "tools/call:git-status prompts/get:summarize openid")
    page = follow(browser, browser.get("/authorize?" + urlencode(params)))
    assert page.status_code == 200 and "<h1>Log in</h1>" in page.text
    assert_security_headers(page)
    # the login form may end in a redirect to the client: form-action allows its origin
    assert "form-action 'self' http://127.0.0.1:33418" in page.headers["content-security-policy"]
    consent_page = follow(browser, login(browser, page))
    consent = consent_form(consent_page)
    assert_security_headers(consent_page)
    assert consent.offered == {"tools/call:git-status": True, "prompts/get:summarize": True}
    assert "Git status" in consent.page and "Show the working tree status" in consent.page
    assert "Summarize a text" in consent.page and "Learn who you are" in consent.page
    assert 'id="unverified"' not in consent.page  # an operator-registered client
    resp = submit_consent(browser, consent)
    got = redirect_params(resp)
    assert got["state"] == params["state"] and got["iss"] == ISSUER and "code" in got
    assert granted(web_provider, got) == scopes("tools/call:git-status prompts/get:summarize")
    [event] = consent_events(web_provider)
    assert event["event"] == "consent.granted" and event["client_id"] == client_id
    data = event["data"]
    assert data["resource"] == AUDIENCE and data["granted"] == "tools/call:git-status prompts/get:summarize"
    assert data["refused"] == [] and data["subject"].startswith("usr_") and data["session"]
    assert data["session"] not in browser.cookies.get("cbst_session", "")  # a public id, not the cookie
    assert isinstance(event["ts"], int)


def test_remembered_consent_skips_the_page(web_provider: Provider, browser: Any, client_id: str) -> None:
    consent = consent_form(login_to_consent(browser, client_id, "tools/call:git-status"))
    redirect_params(submit_consent(browser, consent))
    # Same request again, same session: straight back to the client with a code, no page, no interaction row.
    with web_provider.engine.connect() as conn:
        before = conn.execute(sa.text("SELECT count(*) FROM interactions")).scalar_one()
    resp = browser.get("/authorize?" + urlencode(authorize_params(client_id, "tools/call:git-status")))
    got = redirect_params(resp)
    assert granted(web_provider, got) == scopes("tools/call:git-status")
    with web_provider.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM interactions")).scalar_one() == before
    # prompt=consent asks anyway
    page = authorize(browser, client_id, "tools/call:git-status", prompt="consent")
    assert 'action="/consent"' in page.text


def test_step_up_asks_only_for_the_new_capabilities(web_provider: Provider, browser: Any, client_id: str) -> None:
    first = login_to_consent(browser, client_id, "tools/call:git-status")
    redirect_params(submit_consent(browser, consent_form(first)))
    page = authorize(browser, client_id, "tools/call:git-status prompts/get:summarize")
    consent = consent_form(page)
    assert consent.offered == {"prompts/get:summarize": True}
    assert 'id="covered"' in page.text and "tools/call:git-status" in page.text
    got = redirect_params(submit_consent(browser, consent))
    assert granted(web_provider, got) == scopes("tools/call:git-status prompts/get:summarize")
    remembered = web_provider.consents.get(consent_events(web_provider)[0]["data"]["subject"], client_id, AUDIENCE)
    assert remembered == CapabilitySet.parse("tools/call:git-status prompts/get:summarize")  # the union


def test_pattern_expands_destructive_tools_unticked(web_provider: Provider, browser: Any, client_id: str) -> None:
    consent = consent_form(login_to_consent(browser, client_id, "tools/call:git-*"))
    # each matching tool, in the server's words; the destructive one unticked
    assert consent.offered == {"tools/call:git-status": True, "tools/call:git-log": True, "tools/call:git-push": False}
    assert "destructive" in consent.page and "Update remote refs" in consent.page
    got = redirect_params(submit_consent(browser, consent))  # as ticked by default
    assert granted(web_provider, got) == scopes("tools/call:git-status tools/call:git-log")
    [event] = consent_events(web_provider)
    assert event["data"]["refused"] == ["tools/call:git-push"]
    # the same request again asks only for git-push, still unticked
    again = consent_form(authorize(browser, client_id, "tools/call:git-*"))
    assert again.offered == {"tools/call:git-push": False}


def test_remembered_pattern_does_not_cover_a_destructive_tool(web_provider: Provider, browser: Any,
                                                              client_id: str) -> None:
    page = login_to_consent(browser, client_id, "tools/call:git-status")
    subject = web_provider.web_sessions.get(browser.cookies["cbst_session"]).subject
    with audit.transaction(web_provider.engine) as tx:  # as if approved earlier (e.g. before the catalogue said)
        web_provider.consents.remember(tx, subject, client_id, AUDIENCE, CapabilitySet.parse("tools/call:*"))
    redirect_params(submit_consent(browser, consent_form(page)))
    # a remembered tools/call:* covers read-only tools silently ...
    got = redirect_params(browser.get("/authorize?" + urlencode(authorize_params(client_id, "tools/call:search"))))
    assert granted(web_provider, got) == scopes("tools/call:search")
    # ... but never a destructive one: deploy (no annotations) and git-push are asked for, unticked
    consent = consent_form(authorize(browser, client_id, "tools/call:deploy tools/call:git-push tools/call:git-log"))
    assert consent.offered == {"tools/call:deploy": False, "tools/call:git-push": False}
    # an explicit approval of exactly deploy is remembered and then covers it
    got = redirect_params(submit_consent(browser, consent, grant=["tools/call:deploy"]))
    assert granted(web_provider, got) == scopes("tools/call:deploy tools/call:git-log")
    got = redirect_params(browser.get("/authorize?" + urlencode(authorize_params(client_id, "tools/call:deploy"))))
    assert granted(web_provider, got) == scopes("tools/call:deploy")
    # an unlisted tool counts as destructive too
    consent = consent_form(authorize(browser, client_id, "tools/call:unknown-tool"))
    assert consent.offered == {"tools/call:unknown-tool": False} and "not listed by the server" in consent.page


def test_partial_approval_grants_only_what_is_ticked(web_provider: Provider, browser: Any, client_id: str) -> None:
    consent = consent_form(login_to_consent(
        browser, client_id, "tools/call:git-status tools/call:git-log resources/read:file:///docs/**"))
    assert set(consent.offered) == {"tools/call:git-status", "tools/call:git-log", "resources/read:file:///docs/**"}
    assert "Read me" in consent.page  # the resource pattern lists what it matches
    got = redirect_params(submit_consent(browser, consent, grant=["tools/call:git-log"]))
    assert granted(web_provider, got) == scopes("tools/call:git-log")
    data = consent_events(web_provider)[0]["data"]
    assert data["granted"] == "tools/call:git-log"
    assert data["refused"] == ["tools/call:git-status", "resources/read:file:///docs/**"]


def test_deny_is_access_denied_with_iss_and_state(web_provider: Provider, browser: Any, client_id: str) -> None:
    page = login_to_consent(browser, client_id, "tools/call:git-status", state="my-state")
    resp = submit_consent(browser, consent_form(page), action="deny")
    got = redirect_params(resp)
    assert got == {"error": "access_denied", "error_description": got["error_description"], "state": "my-state",
                   "iss": ISSUER}
    [event] = consent_events(web_provider)
    assert event["event"] == "consent.denied" and event["data"]["refused"] == ["tools/call:git-status"]
    assert event["data"]["granted"] == "" and event["data"]["session"]
    # the interaction is answered: a second answer is refused
    again = submit_consent(browser, consent_form(page))
    assert again.status_code == 400 and "no longer valid" in again.text


def test_approving_nothing_is_a_denial(web_provider: Provider, browser: Any, client_id: str) -> None:
    page = login_to_consent(browser, client_id, "tools/call:git-status")
    resp = submit_consent(browser, consent_form(page), grant=[])
    assert redirect_params(resp)["error"] == "access_denied"


def test_smuggled_capability_is_refused(web_provider: Provider, browser: Any, client_id: str) -> None:
    consent = consent_form(login_to_consent(browser, client_id, "tools/call:git-status"))
    for smuggled in (["tools/call:deploy"], ["tools/call:*"], ["tools/call:git-status", "logging/setLevel"]):
        resp = submit_consent(browser, consent, grant=smuggled)
        assert resp.status_code == 400 and "did not offer" in resp.text
        assert_security_headers(resp)
    assert consent_events(web_provider) == []
    redirect_params(submit_consent(browser, consent))  # the genuine answer still works


def test_policy_denials_are_shown_not_grantable(web_provider: Provider, browser: Any, client_id: str) -> None:
    class NoDeploy:
        def decide(self, subject: Any, client: Any, resource: str, requested: CapabilitySet) -> Decision:
            denied = tuple(c for c in requested if str(c) == "tools/call:deploy")
            return Decision(CapabilitySet(c for c in requested if c not in denied), denied)

    web_provider.policy = NoDeploy()  # type: ignore[assignment]
    page = login_to_consent(browser, client_id, "tools/call:deploy tools/call:git-status")
    consent = consent_form(page)
    assert consent.offered == {"tools/call:git-status": True}
    assert 'id="denied"' in page.text and "tools/call:deploy" in page.text
    got = redirect_params(submit_consent(browser, consent, grant=["tools/call:git-status"]))
    assert granted(web_provider, got) == scopes("tools/call:git-status")
    assert consent_events(web_provider)[0]["data"]["denied_by_policy"] == ["tools/call:deploy"]
    # everything denied: access_denied without a page
    resp = browser.get("/authorize?" + urlencode(authorize_params(client_id, "tools/call:deploy")))
    assert follow(browser, resp).headers["location"].startswith(REDIRECT + "?error=access_denied")


def test_unverified_client_is_labelled_with_its_redirect_host(web_provider: Provider, browser: Any) -> None:
    cid = make_interactive_client(web_provider, "dyn", registered_by="dcr", client_name="Totally Official App")
    page = login_to_consent(browser, cid, "tools/call:git-status")
    assert 'id="unverified"' in page.text and "Unverified application" in page.text
    assert '<strong id="redirect-host">127.0.0.1:33418</strong>' in page.text
    assert "Totally Official App" in page.text


def test_prompt_none_and_login_and_max_age(web_provider: Provider, browser: Any, client_id: str) -> None:
    resp = browser.get("/authorize?" + urlencode(authorize_params(client_id, "tools/call:git-status", prompt="none",
                                                                  state="s1")))
    got = redirect_params(resp)
    assert got["error"] == "login_required" and got["state"] == "s1" and got["iss"] == ISSUER
    first = login_to_consent(browser, client_id, "tools/call:git-status")
    redirect_params(submit_consent(browser, consent_form(first)))
    # logged in and consented: prompt=none gets a code
    got = redirect_params(browser.get("/authorize?" + urlencode(
        authorize_params(client_id, "tools/call:git-status", prompt="none"))))
    assert "code" in got
    # consent needed with prompt=none: consent_required
    got = redirect_params(browser.get("/authorize?" + urlencode(
        authorize_params(client_id, "tools/call:git-log", prompt="none"))))
    assert got["error"] == "consent_required"
    # prompt=login and max_age=0 ask for the password again, then go on (no loop)
    for extra in ({"prompt": "login"}, {"max_age": "0"}):
        page = authorize(browser, client_id, "tools/call:git-status", **extra)
        assert "<h1>Log in</h1>" in page.text
        assert "code" in redirect_params(follow(browser, login(browser, page)))


def test_post_authorize_continues_on_a_get(web_provider: Provider, browser: Any, client_id: str) -> None:
    resp = browser.post("/authorize", data=authorize_params(client_id, "tools/call:git-status"))
    assert resp.status_code == 303 and resp.headers["location"].startswith("/interaction/")
    page = follow(browser, resp)
    assert "<h1>Log in</h1>" in page.text


def test_interaction_is_bound_to_its_browser(web_provider: Provider, browser: Any, other_browser: Any,
                                             client_id: str) -> None:
    resp = browser.get("/authorize?" + urlencode(authorize_params(client_id, "tools/call:git-status")))
    location = resp.headers["location"]
    page = follow(browser, resp)
    stolen = other_browser.get(location)
    assert stolen.status_code == 403 and "another browser" in stolen.text
    assert_security_headers(stolen)
    # posting the victim's form values from another browser fails too (its CSRF key differs)
    other_browser.get("/logout")
    resp = login(other_browser, page)
    assert resp.status_code == 403


def test_chooser_lists_every_login_method(web_provider: Provider, browser: Any, client_id: str) -> None:
    from dataclasses import dataclass

    from idp.web import login_methods

    @dataclass(frozen=True)
    class Upstream:
        name: str = "corp"
        label: str = "Corp SSO"

        def start_url(self, interaction_id: str) -> str:
            return f"/login/upstream/corp?interaction={interaction_id}"

    def source(stores: Any) -> list[Any]:
        return [Upstream()]

    login_methods.register_source(source)
    try:
        page = authorize(browser, client_id, "tools/call:git-status")
        assert page.status_code == 200 and 'id="login-methods"' in page.text
        assert "Username and password" in page.text and "Corp SSO" in page.text
        assert "/login/upstream/corp?interaction=" in page.text
        assert_security_headers(page)
        password = browser.get(page.text.split('class="method" href="')[1].split('"')[0].replace("&amp;", "&"))
        assert 'id="other-methods"' in password.text
    finally:
        login_methods._sources.remove(source)


def test_consent_of_an_earlier_login_is_refused_after_a_new_login(web_provider: Provider, browser: Any,
                                                                  client_id: str) -> None:
    from .conftest import PASSWORD

    first = consent_form(login_to_consent(browser, client_id, "tools/call:git-status"))
    web_provider.users.add("carol", PASSWORD)
    page = authorize(browser, client_id, "tools/call:git-log", prompt="login")
    follow(browser, login(browser, page, username="carol"))
    # alice's pending consent cannot be answered by carol's session (nor replayed with alice's form)
    resp = submit_consent(browser, first)
    assert resp.status_code == 403
    assert consent_events(web_provider) == []
