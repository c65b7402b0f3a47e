"""Fixtures for the server-side SDK tests (helpers: ``sdk_server_support.py``).

* ``idp`` (session): ``idp serve`` on a free loopback port over a temporary SQLite database, plus
  an in-process Provider on the same database to register clients, revoke and rotate keys.
* ``mcp_server`` (session): the example MCP server (official ``mcp`` SDK, streamable HTTP,
  sessions, SSE responses) wrapped by ``CBSTMiddleware``; ``mcp_json_server``: stateless, JSON.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from idp.config import Settings
from idp.provider import Provider
from sdk_server_support import *  # noqa: F403 - also keeps ``from conftest import free_port`` working
from sdk_server_support import IdP, MCPUnderTest, ServerProcess, env_for, free_port, protected_example, random_kek
from sdk_server_support import root_conftest

globals().update({k: v for k, v in vars(root_conftest).items() if not k.startswith("_") and k not in globals()})

@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"
@pytest.fixture(scope="session")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdP]:
    d = tmp_path_factory.mktemp("idp")
    port = free_port()
    settings = Settings(issuer=f"http://127.0.0.1:{port}", database_url=f"sqlite:///{d / 'idp.db'}",
                        keys_dir=d / "keys", keystore_kek=random_kek(), log_json=True,
                        key_refresh_interval=1)
    provider = Provider.open(settings)
    proc = ServerProcess({**env_for(settings), "IDP_KEY_REFRESH_INTERVAL": "1"}, port)
    try:
        yield IdP(proc.url, settings, provider, proc)
    finally:
        proc.stop()
        provider.engine.dispose()
@pytest.fixture(scope="session")
def mcp_server(idp: IdP) -> Iterator[MCPUnderTest]:
    """Stateful (sessions), SSE responses; generous rate limit so other tests are not throttled."""
    with protected_example(idp, tool_rate=1000.0, scopes_supported=["tools/call:echo"],
                           jwks_min_refetch_interval=0.5) as srv:
        yield srv


@pytest.fixture(scope="session")
def mcp_json_server(idp: IdP) -> Iterator[MCPUnderTest]:
    """Stateless, JSON responses."""
    with protected_example(idp, stateless=True, json_response=True, tool_rate=1000.0,
                           jwks_min_refetch_interval=0.5) as srv:
        yield srv
