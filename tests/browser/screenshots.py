"""Regenerate the screenshots of the IdP's pages in docs/screenshots/ (used by docs/operations-interactive.md).

    make screenshots
    # or: PYTHONPATH=. .venv/bin/python tests/browser/screenshots.py [--out DIR]

A real IdP on a free loopback port with a local user, the example catalogue and a configured
upstream (so that the chooser appears), driven by the system Chromium. The test suite runs the
same steps into a temporary folder (tests/browser/test_screenshots.py); it never rewrites the
tracked files.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for entry in (HERE, HERE.parent, HERE.parent.parent):  # browser_support, idp_testing, idp
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from browser_support import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    DESTRUCTIVE_TOOL,
    READONLY_TOOL,
    USERNAME,
    BrowserIdP,
    grant_boxes,
    login,
    running_idp,
    screenshots_dir,
    wait_callback,
)

NAMES = ("chooser.png", "login.png", "consent.png", "consent-step-up.png", "error.png")
READ, DELETE, SEARCH = f"tools/call:{READONLY_TOOL}", f"tools/call:{DESTRUCTIVE_TOOL}", "tools/call:search"


def take(browser: Any, idp: BrowserIdP, out: Path, username: str | None = None) -> list[Path]:
    """The five pages, as a person meets them (``username``: one with nothing granted yet;
    default a new person); returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    idp.provider.federation.add("corp", issuer="http://127.0.0.1:9", client_id="cbst", client_secret="unused",
                                label="Example Corp")
    context = browser.new_context(viewport={"width": 760, "height": 400}, device_scale_factor=1, locale="en-US")
    context.set_default_timeout(15_000)
    written: list[Path] = []

    def shot(page: Any, name: str) -> None:
        page.mouse.move(0, 0)
        path = out / name
        page.screenshot(path=str(path), full_page=True, animations="disabled")
        written.append(path)

    try:
        page = context.new_page()
        url, _ = idp.authorize_url(scope=f"{READ} {SEARCH} {DELETE}")
        page.goto(url)
        page.locator("#login-methods").wait_for()
        shot(page, "chooser.png")

        username = username or idp.person()
        page.locator("#login-methods a").first.click()  # local accounts come first
        page.get_by_label("Username").wait_for()
        shot(page, "login.png")

        login(page, username)
        page.locator("#consent-form").wait_for()
        shot(page, "consent.png")
        grant_boxes(page)[SEARCH].uncheck()
        page.get_by_role("button", name="Allow selected").click()
        wait_callback(page, idp)
        idp.callback.clear()

        url, _ = idp.authorize_url(scope=f"{READ} {SEARCH} {DELETE} prompts/get:summarize")
        page.goto(url)
        page.locator("#consent-form").wait_for()
        shot(page, "consent-step-up.png")

        bad, _ = idp.authorize_url(scope=READ, redirect_uri="https://attacker.example/callback")
        page.goto(bad)
        page.locator("#error-message").wait_for()
        shot(page, "error.png")
    finally:
        context.close()
        idp.provider.federation.remove("corp")
    return written


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=screenshots_dir(), help="folder to write (default docs/screenshots)")
    args = p.parse_args(argv)
    if not Path(CHROMIUM).is_file():
        print(f"no Chromium at {CHROMIUM} (Debian package `chromium`)", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, running_idp(Path(tmp)) as idp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for path in take(browser, idp, args.out, username=USERNAME):
                print(path)
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
