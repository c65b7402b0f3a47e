"""The login pages (``idp.web``) as federation uses them, looked up when first needed.

``idp.web.session.complete_login`` and ``idp.web.login_methods.register_source`` are the pages'
interfaces (see docs/federation.md). Looked up at run time so that federation does not fail to
import where the pages are absent (an API-only deployment): there a federated login ends at an
error page instead.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def _attr(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def complete_login() -> Callable[..., Any] | None:
    found = _attr("idp.web.session", "complete_login")
    return found if callable(found) else None


def register_source(source: Callable[[Any], list[Any]]) -> bool:
    register = _attr("idp.web.login_methods", "register_source")
    if not callable(register):
        return False
    register(source)
    return True
