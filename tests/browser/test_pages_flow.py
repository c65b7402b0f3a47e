"""A person at the IdP's pages in a real browser: log in by keyboard, consent to some of what the
client asks, and the client's loopback redirect URI receives the code (with ``state`` and the
RFC 9207 ``iss``) that the token endpoint turns into exactly the capabilities ticked."""

from __future__ import annotations

from typing import Any

import pytest
from browser_support import (
    DESTRUCTIVE_TOOL,
    PASSWORD,
    READONLY_TOOL,
    BrowserIdP,
    active,
    exchange,
    grant_boxes,
    login,
    tab_to,
    wait_callback,
)

pytestmark = pytest.mark.slow

READ, DELETE, SEARCH = f"tools/call:{READONLY_TOOL}", f"tools/call:{DESTRUCTIVE_TOOL}", "tools/call:search"


def test_keyboard_only_login_and_consent(page: Any, idp: BrowserIdP) -> None:
    url, secrets = idp.authorize_url(scope=f"{READ} {DELETE} {SEARCH}")
    page.goto(url)
    page.get_by_label("Username").wait_for()

    # Log in with the keyboard alone: Tab to the username, type, Tab, type, Enter.
    if active(page)["id"] != "username":  # autofocus may already have put it there
        tab_to(page, "el => el.id === 'username'")
    page.keyboard.type(idp.person())
    page.keyboard.press("Tab")
    assert active(page)["id"] == "password"
    page.keyboard.type(PASSWORD)
    with page.expect_navigation():
        page.keyboard.press("Enter")

    # Consent: read-only tools ticked, the destructive one shown but unticked.
    boxes = grant_boxes(page)
    assert set(boxes) == {READ, DELETE, SEARCH}
    assert boxes[READ].is_checked() and boxes[SEARCH].is_checked()
    assert not boxes[DELETE].is_checked()
    destructive_item = page.locator("li.cap").filter(has=page.locator(f'input[value="{DELETE}"]'))
    assert "destructive" in destructive_item.inner_text().lower()

    # Untick `search` with the keyboard (Tab to it, Space), then Tab to "Allow selected", Enter.
    tab_to(page, f"el => el.value === {SEARCH!r}")
    page.keyboard.press("Space")
    assert not boxes[SEARCH].is_checked()
    tab_to(page, "el => el.id === 'approve'")
    page.keyboard.press("Enter")

    got = wait_callback(page, idp)
    assert got["state"] == secrets["state"]
    assert got["iss"] == idp.url  # RFC 9207
    assert got.get("code") and "error" not in got
    page.wait_for_url(idp.callback.redirect_uri + "?*")  # the browser ended at the client

    tokens = exchange(idp, got["code"], secrets["verifier"])
    assert tokens["scope"].split() == [READ]  # what was ticked, nothing else


def test_step_up_asks_only_for_the_new_capability(page: Any, idp: BrowserIdP) -> None:
    url, _ = idp.authorize_url(scope=READ)
    page.goto(url)
    login(page, idp.person())
    assert set(grant_boxes(page)) == {READ}
    page.get_by_role("button", name="Allow selected").click()
    wait_callback(page, idp)
    idp.callback.clear()

    # Same person, same client: now it also wants the destructive tool.
    url, secrets = idp.authorize_url(scope=f"{READ} {DELETE}")
    page.goto(url)
    boxes = grant_boxes(page)
    assert set(boxes) == {DELETE}, "only the new capability is asked for"
    assert not boxes[DELETE].is_checked()
    assert READ in page.locator("#covered").inner_text()  # shown as already allowed
    boxes[DELETE].check()
    page.get_by_role("button", name="Allow selected").click()
    got = wait_callback(page, idp)
    assert got["state"] == secrets["state"]
    assert sorted(exchange(idp, got["code"], secrets["verifier"])["scope"].split()) == sorted([READ, DELETE])


def test_deny_returns_access_denied_to_the_client(page: Any, idp: BrowserIdP) -> None:
    url, secrets = idp.authorize_url(scope=f"{READ} {DELETE}")
    page.goto(url)
    login(page, idp.person())
    page.get_by_role("button", name="Deny").click()
    got = wait_callback(page, idp)
    assert got["error"] == "access_denied" and "code" not in got
    assert got["state"] == secrets["state"] and got["iss"] == idp.url
