"""Fixtures for the pages (idp/web): a provider with a registered MCP server (and its catalogue),
an interactive client, a local user, and a browser-like HTTP client over the real app."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from idp_testing import AUDIENCE, ISSUER

from idp.config import Settings
from idp.provider import Provider

REDIRECT = "http://127.0.0.1:33418/callback"
PASSWORD = "correct horse battery"
SECRETS: dict[str, str] = {}  # client_id -> secret of the clients made here
CATALOGUE = {
    "tools": [
        {"name": "git-status", "title": "Git status", "description": "Show the working tree status",
         "annotations": {"readOnlyHint": True}},
        {"name": "git-log", "description": "Show commit logs",
         "annotations": {"title": "Git log", "readOnlyHint": True}},
        {"name": "git-push", "title": "Git push", "description": "Update remote refs",
         "annotations": {"destructiveHint": True}},
        {"name": "deploy", "description": "Deploy to production"},  # no annotations: destructive (MCP default)
        {"name": "search", "title": "Search", "annotations": {"readOnlyHint": False, "destructiveHint": False}},
    ],
    "resources": [{"uri": "file:///docs/readme.md", "name": "readme", "title": "Read me"}],
    "prompts": [{"name": "summarize", "title": "Summarize", "description": "Summarize a text"}],
}


def make_interactive_client(provider: Provider, name: str = "app", *, registered_by: str = "operator",
                            redirect_uris: tuple[str, ...] = (REDIRECT,), client_name: str | None = None) -> str:
    caps = "tools/call:* resources/read:** prompts/get:* logging/setLevel"
    client, secret = provider.clients.add(name, capabilities=caps, audiences=[AUDIENCE])
    import json

    table = sa.table("clients", sa.column("client_id"), sa.column("redirect_uris"), sa.column("grant_types"),
                     sa.column("registered_by"), sa.column("client_metadata"))
    with provider.engine.begin() as conn:
        conn.execute(table.update().where(table.c.client_id == client.client_id).values(
            redirect_uris=json.dumps(list(redirect_uris)),
            grant_types=json.dumps(["authorization_code", "refresh_token"]), registered_by=registered_by,
            client_metadata=json.dumps({"client_name": client_name}) if client_name else None))
    SECRETS[client.client_id] = secret or ""
    return str(client.client_id)


@pytest.fixture
def web_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"login_fail_account": 3, "login_fail_address": 8})


@pytest.fixture
def web_provider(web_settings: Settings) -> Iterator[Provider]:
    prov = Provider.open(web_settings)
    prov.resources.add(AUDIENCE, name="Example MCP server")
    prov.resources.set_catalogue(AUDIENCE, CATALOGUE, actor="test")
    prov.users.add("alice", PASSWORD, email="alice@example.test", groups=["dev"])
    yield prov
    prov.close()


@pytest.fixture
def client_id(web_provider: Provider) -> str:
    return make_interactive_client(web_provider)


@pytest.fixture
def web_app(web_provider: Provider) -> Any:
    from idp.app import create_app

    return create_app(provider=web_provider, maintenance=False)


@pytest.fixture
def browser(web_app: Any) -> Iterator[Any]:
    """A cookie-keeping client that does not follow redirects (the tests follow them)."""
    from starlette.testclient import TestClient

    with TestClient(web_app, base_url=ISSUER, follow_redirects=False) as client:
        yield client


@pytest.fixture
def other_browser(web_app: Any) -> Iterator[Any]:
    from starlette.testclient import TestClient

    with TestClient(web_app, base_url=ISSUER, follow_redirects=False) as client:
        yield client
