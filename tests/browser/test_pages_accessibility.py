"""Accessibility of the IdP's pages (chooser, login, consent, step-up consent, error) in a real
browser: every control has an accessible name (Chromium's own accessibility tree), the whole page
can be used by keyboard with a visible focus ring, text meets the WCAG AA contrast ratio, and
axe-core (WCAG 2.x A/AA rules) finds nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from browser_support import (
    DESTRUCTIVE_TOOL,
    READONLY_TOOL,
    BrowserIdP,
    accessible_names,
    axe_violations,
    contrast,
    grant_boxes,
    login,
    low_contrast_text,
    tab_cycle,
    wait_callback,
)

pytestmark = pytest.mark.slow

READ, DELETE = f"tools/call:{READONLY_TOOL}", f"tools/call:{DESTRUCTIVE_TOOL}"


@pytest.fixture
def upstream(idp: BrowserIdP) -> Iterator[str]:
    """A configured upstream OpenID provider, so that the login starts at the chooser."""
    idp.provider.federation.add("corp", issuer="http://127.0.0.1:9", client_id="cbst", client_secret="unused-here",
                                label="Example Corp")
    try:
        yield "corp"
    finally:
        idp.provider.federation.remove("corp")


def _problems(page: Any, name: str, *, controls: bool = True) -> list[str]:
    """Everything on this page that fails the checks, as readable lines."""
    problems: list[str] = []
    found = accessible_names(page)
    assert bool(found) == controls, f"{name}: controls {found}"
    problems += [f"{name}: {c['role']} without an accessible name" for c in found if not c["name"]]
    problems += [f"{name}: low contrast {t['ratio']:.2f} < {t['needed']} for <{t['tag']} class={t['cls']!r}> "
                 f"{t['text']!r} ({t['color']})" for t in low_contrast_text(page)]
    rings = tab_cycle(page)
    focusable = page.locator("a[href], button, input:not([type=hidden]), select, textarea").count()
    if len(rings) != focusable:
        problems.append(f"{name}: Tab reached {len(rings)} of {focusable} controls")
    for r in rings:
        what = f"{name}: focused <{r['tag']} id={r['id']!r}> {r['value'] or r['text']!r}"
        if not r["focusVisible"]:
            problems.append(f"{what} does not match :focus-visible")
        if (r["outlineStyle"] == "none" or r["outlineWidth"] < 2) and r["boxShadow"] == "none":
            problems.append(f"{what} shows no focus ring ({r['outlineStyle']} {r['outlineWidth']}px)")
        elif r["ringContrast"] < 3:
            problems.append(f"{what}: focus ring contrast {r['ringContrast']:.2f} < 3 (WCAG 1.4.11)")
    problems += [f"{name}: axe {v['id']} ({v['impact']}): {v['help']} — {v['nodes'][:2]}" for v in axe_violations(page)]
    return problems


def _named_colours(page: Any, name: str, selectors: tuple[str, ...]) -> list[str]:
    """The colours people read most, by name (the whole-page scan covers them too, but a page
    whose text went missing would pass that scan): body text, headings, labels, both buttons,
    the destructive badge, the muted meta line."""
    out = []
    for selector in selectors:
        found = contrast(page.locator(selector).first)
        if found["ratio"] < 4.5:
            out.append(f"{name}: {selector} contrast {found['ratio']:.2f} < 4.5 ({found['color']})")
    return out


def test_every_page_is_accessible(page: Any, idp: BrowserIdP, upstream: str) -> None:
    problems: list[str] = []
    url, _ = idp.authorize_url(scope=f"{READ} {DELETE}")
    page.goto(url)
    page.locator("#login-methods").wait_for()
    problems += _problems(page, "chooser")

    page.get_by_role("link", name="username", exact=False).first.click()
    page.get_by_label("Username").wait_for()
    problems += _problems(page, "login")
    problems += _named_colours(page, "login", ("h1", "label[for=username]", "#login-submit", "header .brand"))

    login(page, idp.person())
    page.locator("#consent-form").wait_for()
    problems += _problems(page, "consent")
    problems += _named_colours(page, "consent", ("h1", "#approve", "#deny", ".badge.danger", ".meta",
                                                 "li.cap .title", "li.cap .about"))
    grant_boxes(page)[READ].uncheck()  # deny the read-only tool, allow nothing else: the step-up asks again
    grant_boxes(page)[DELETE].check()
    page.get_by_role("button", name="Allow selected").click()
    wait_callback(page, idp)
    idp.callback.clear()

    url, _ = idp.authorize_url(scope=f"{READ} {DELETE} tools/call:search")
    page.goto(url)
    page.locator("#consent-form").wait_for()
    problems += _problems(page, "step-up consent")

    bad, _ = idp.authorize_url(scope=READ, redirect_uri="https://attacker.example/cb")
    page.goto(bad)
    page.locator("#error-message").wait_for()
    problems += _problems(page, "error", controls=False)
    assert not problems, "\n".join(problems)
