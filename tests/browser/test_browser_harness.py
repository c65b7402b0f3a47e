"""The browser tests' own detectors can fail: each is shown a page that breaks the rule it checks.

(A contrast or CSP check that never reports anything would pass every page.)
"""

from __future__ import annotations

from typing import Any

import pytest
from browser_support import OtherSite, accessible_names, axe_violations, contrast, watch_context

pytestmark = pytest.mark.slow


@pytest.fixture
def bare_page(browser: Any) -> Any:
    ctx = browser.new_context()
    ctx.set_default_timeout(10_000)
    try:
        yield ctx
    finally:
        ctx.close()


def test_contrast_check_tells_aa_from_not(bare_page: Any, other_site: OtherSite) -> None:
    url = other_site.put("/contrast", """<!doctype html><body style="background: #fff">
      <p id="grey" style="color: #777">grey on white: 4.48</p>
      <p id="dark" style="color: #595959">darker grey: 7.0</p>
      <div style="background: oklch(0.2 0 0)"><p id="oklch" style="color: rgb(255 255 255 / 0.5)">half white</p></div>
      </body>""")
    page = bare_page.new_page()
    page.goto(url)
    assert contrast(page.locator("#grey"))["ratio"] == pytest.approx(4.48, abs=0.01)
    assert contrast(page.locator("#dark"))["ratio"] == pytest.approx(7.0, abs=0.01)
    half = contrast(page.locator("#oklch"))
    assert 3 < half["ratio"] < 8, half  # composited over the dark oklch background, not over white


def test_csp_violations_and_foreign_requests_are_seen(bare_page: Any, other_site: OtherSite) -> None:
    watch = watch_context(bare_page)
    url = other_site.put("/csp", '<!doctype html><script>document.title = "ran"</script>'
                                 '<img src="https://cdn.example.invalid/x.png">',
                         {"Content-Security-Policy": "default-src 'self'"})
    page = bare_page.new_page()
    page.goto(url)
    page.wait_for_timeout(200)
    assert page.title() != "ran"  # the inline script was blocked...
    assert watch.csp_messages(), watch.console  # ...and the console said so
    assert page.evaluate("window.__cspViolations.length") >= 1
    page.goto(other_site.put("/open", '<!doctype html><img src="https://cdn.example.invalid/x.png">'))
    page.wait_for_timeout(200)
    assert "GET https://cdn.example.invalid/x.png" in watch.foreign(other_site.origin)  # logged (and aborted)


def test_unlabelled_inputs_have_no_accessible_name(bare_page: Any, other_site: OtherSite) -> None:
    url = other_site.put("/labels", '<!doctype html><label for="a">Name</label><input id="a">'
                                    '<input id="b" placeholder="">')
    page = bare_page.new_page()
    page.goto(url)
    names = [n for n in accessible_names(page) if n["role"] == "textbox"]
    assert [n["name"] for n in names] == ["Name", ""]


def test_axe_finds_violations(bare_page: Any, other_site: OtherSite) -> None:
    url = other_site.put("/axe", '<!doctype html><html lang="en"><title>t</title><main><input id="b">'
                                 '<p style="color: #aaa; background: #fff">faint</p></main></html>',
                         {"Content-Security-Policy": "script-src 'none'"})  # axe still runs
    page = bare_page.new_page()
    page.goto(url)
    found = {v["id"] for v in axe_violations(page)}
    assert {"label", "color-contrast"} <= found, found
