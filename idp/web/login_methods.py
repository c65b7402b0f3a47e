"""How a person may log in: local accounts and the sources other modules register (federation).

A :class:`LoginMethod` is a name, a label for the chooser page and the URL that starts it for one
interaction. :func:`available` lists local accounts first (when any user exists), then every
registered source's methods; with one method the person goes straight to it, with several they
choose. A method that proved who the person is calls :func:`idp.web.session.complete_login`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

if TYPE_CHECKING:
    from ..provider import Provider as Stores

__all__ = ["LOCAL", "LocalPassword", "LoginMethod", "available", "register_source"]

log = logging.getLogger("cbst.idp")
LOCAL = "password"


class LoginMethod(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def label(self) -> str: ...

    def start_url(self, interaction_id: str) -> str: ...


@dataclass(frozen=True)
class LocalPassword:
    name: str = LOCAL
    label: str = "Username and password"

    def start_url(self, interaction_id: str) -> str:
        return "/login/password?interaction=" + quote(interaction_id, safe="")


_sources: list[Callable[[Stores], list[LoginMethod]]] = []


def register_source(fn: Callable[[Stores], list[LoginMethod]]) -> None:
    """Add a source of login methods (called on every login, so it sees current configuration)."""
    if fn not in _sources:
        _sources.append(fn)


def available(stores: Stores) -> list[LoginMethod]:
    """Every way to log in now: local accounts first if any exist, then each source's."""
    methods: list[LoginMethod] = [LocalPassword()] if stores.users.exist() else []
    for source in list(_sources):
        try:
            methods.extend(source(stores))
        except Exception:  # one broken source must not take the local login down with it
            log.exception("login method source failed", extra={"fields": {"source": repr(source)}})
    return methods
