"""The IdP's pages for people: the authorization endpoint, login, consent (server-rendered, Jinja2).

``idp.app.create_app`` includes :data:`router`; login methods plug in through
:mod:`idp.web.login_methods`. See docs/authorization.md.
"""

from __future__ import annotations

from .routes import router

__all__ = ["router"]
