"""The screenshot script (``make screenshots``) still runs: into a temporary folder, never over
the tracked docs/screenshots/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from browser_support import BrowserIdP, screenshots_dir
from screenshots import NAMES, take


@pytest.mark.slow
def test_screenshots_of_every_page(browser: Any, idp: BrowserIdP, tmp_path: Path) -> None:
    written = take(browser, idp, tmp_path)
    assert sorted(p.name for p in written) == sorted(NAMES)
    for path in written:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5_000, path
    tracked = screenshots_dir()
    assert all((tracked / name).is_file() for name in NAMES), "docs/screenshots/ lacks some: run make screenshots"


def test_operations_page_shows_every_screenshot() -> None:
    """docs/operations-interactive.md shows each screenshot, and each one it shows exists."""
    import re

    doc = (screenshots_dir().parent / "operations-interactive.md").read_text()
    shown = re.findall(r"!\[[^\]]+\]\(screenshots/([^)]+)\)", doc)
    assert sorted(shown) == sorted(NAMES), shown
    assert all((screenshots_dir() / name).is_file() for name in shown)
