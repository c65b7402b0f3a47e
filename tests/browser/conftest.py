"""Fixtures of the browser tests: the system Chromium under Playwright, a real ``idp serve``, the
client's loopback redirect URI and a page of another site. Helpers live in ``browser_support.py``.

Skipped (with the reason) only when the system Chromium is absent: ``make system-deps`` installs
the Debian ``chromium`` package. Nothing is downloaded at run time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from browser_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    BrowserIdP,
    OtherSite,
    Watch,
    chromium_available,
    running_idp,
    watch_context,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every browser test in one xdist group (``make test`` runs ``--dist loadgroup``), so they run
    back to back on one worker, which then closes the browser: Playwright's sync API keeps an
    event loop running in the thread while it is open, and every other test there that calls
    ``asyncio.run()`` would fail ("cannot be called from a running event loop")."""
    for item in items:
        if "tests/browser/" in item.nodeid.replace("\\", "/") or item.nodeid.startswith("browser/"):
            item.add_marker(pytest.mark.xdist_group("browser"))


@pytest.fixture(scope="module")  # closed before the worker runs tests of other modules (see above)
def browser() -> Iterator[Any]:
    if not chromium_available():
        pytest.skip(f"no system Chromium at {CHROMIUM} (Debian package `chromium`; `make system-deps` installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserIdP]:
    with running_idp(tmp_path_factory.mktemp("browser-idp")) as running:
        yield running


@pytest.fixture(scope="session")
def other_site() -> Iterator[OtherSite]:
    site = OtherSite()
    try:
        yield site
    finally:
        site.stop()


@pytest.fixture
def context(browser: Any, idp: BrowserIdP) -> Iterator[Any]:
    """A fresh browser profile (no cookies) per test; the callback's record is cleared too."""
    idp.callback.clear()
    ctx = browser.new_context(viewport={"width": 1000, "height": 800}, locale="en-US")
    ctx.set_default_timeout(10_000)
    ctx.set_default_navigation_timeout(15_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def watch(context: Any) -> Watch:
    return watch_context(context)


@pytest.fixture
def page(context: Any, watch: Watch) -> Any:
    return context.new_page()
