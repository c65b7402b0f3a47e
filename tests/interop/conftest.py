"""Fixtures for the client and interop tests: a real IdP process, tiny threaded HTTP servers.

The IdP runs once per session (``idp serve`` on a free loopback port, SQLite in a temporary
directory); clients are registered through an in-process ``Provider`` on the same database,
which the server reads on each request.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from idp_testing import ServerProcess, env_for, free_port, random_kek, run_cli

from idp.config import Settings
from idp.provider import Provider

#: Access token lifetime of the session IdP, seconds.
IDP_TOKEN_TTL = 120


def claims_of(token: str) -> dict[str, Any]:
    """The (unverified) claims of a JWT — enough for tests that only look at what was issued."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@dataclass
class IdP:
    url: str
    settings: Settings
    provider: Provider
    env: dict[str, str]
    process: ServerProcess

    def register(self, name: str, *, capabilities: str, audiences: tuple[str, ...],
                 auth_method: str = "client_secret_basic",
                 jwks: dict[str, Any] | None = None) -> tuple[str, str | None]:
        """Register a client (``name`` gets a random suffix); returns (client_id, secret or None)."""
        record, secret = self.provider.clients.add(
            f"{name[:40]}-{secrets.token_hex(4)}", capabilities=capabilities, audiences=list(audiences),
            auth_method=auth_method, jwks=jwks)
        return record.client_id, secret

    def revoke_cli(self, jti: str) -> None:
        """Revoke a token with the admin CLI (``idp tokens revoke --json -- JTI``: a jti is
        base64url and may start with ``-``, which would otherwise read as an option)."""
        done = run_cli("tokens", "revoke", "--json", "--", jti, env=self.env)
        assert done.returncode == 0, done.stderr + done.stdout


@pytest.fixture(scope="session")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdP]:
    base = tmp_path_factory.mktemp("idp")
    port = free_port()
    settings = Settings(issuer=f"http://127.0.0.1:{port}", database_url=f"sqlite:///{base / 'idp.db'}",
                        keys_dir=base / "keys", keystore_kek=random_kek(), access_token_ttl=IDP_TOKEN_TTL,
                        log_json=True)
    provider = Provider.open(settings)  # migrates and creates the signing key before the server starts
    env = {**env_for(settings), "IDP_ACCESS_TOKEN_TTL": str(IDP_TOKEN_TTL)}
    process = ServerProcess(env, port)
    try:
        yield IdP(process.url, settings, provider, env, process)
    finally:
        process.stop()
        provider.close()


class ThreadedServer:
    """An ASGI app served by uvicorn on a free loopback port in a background thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def count_requests(path: str) -> tuple[list[str], dict[str, list[Any]], dict[str, list[Any]]]:
    """A list recording requests whose path is ``path``, and ``event_hooks`` values that fill it
    for sync and async httpx/httpx2 clients (hooks see the requests an auth flow makes, too)."""
    seen: list[str] = []

    def hook(request: Any) -> None:
        if request.url.path == path:
            seen.append(str(request.url))

    async def ahook(request: Any) -> None:
        hook(request)

    return seen, {"request": [hook]}, {"request": [ahook]}


@pytest.fixture
def wait_for() -> Any:
    def wait(predicate: Any, timeout: float, interval: float = 0.2) -> float:
        start = time.monotonic()
        while not predicate():
            if time.monotonic() - start > timeout:
                raise AssertionError(f"condition not met within {timeout} s")
            time.sleep(interval)
        return time.monotonic() - start

    return wait



# --- the protected MCP server --------------------------------------------------------------------

HERE = Path(__file__).resolve().parent
#: How often the interop server refetches the IdP's revocation list (ProtectionConfig
#: ``revocation_poll_interval``); a revoked token must stop working within this, plus one fetch.
REVOCATION_POLL = 1.0


@dataclass
class McpServer:
    url: str  # the MCP endpoint, also the resource URI (RFC 8707 audience)
    proc: subprocess.Popen[bytes]
    log: Path


@contextlib.contextmanager
def mcp_server_process(issuer: str, log: Path, ready_timeout: float = 60) -> Iterator[McpServer]:
    """``server_app.py`` (official mcp SDK + CBSTMiddleware) under uvicorn on a free port, for ``issuer``."""
    port = free_port()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "server_app.py"), "--issuer", issuer, "--port", str(port),
             "--revocation-poll", str(REVOCATION_POLL)], stdout=fh, stderr=subprocess.STDOUT)
    server = McpServer(f"http://127.0.0.1:{port}/mcp", proc, log)
    try:
        deadline = time.monotonic() + ready_timeout  # generous: a loaded 2-core machine is slow to import
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"MCP server exited early:\n{log.read_text()}")
            try:
                metadata = f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp"
                if httpx.get(metadata, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"MCP server did not become ready:\n{log.read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="session")
def mcp_server(idp: IdP, tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpServer]:
    """``server_app.py`` (official mcp SDK + CBSTMiddleware) under uvicorn on a free port."""
    with mcp_server_process(idp.url, tmp_path_factory.mktemp("mcp") / "server.log") as server:
        yield server


@pytest.fixture(scope="session")
def registered_resource(idp: IdP, mcp_server: McpServer) -> str:
    """The MCP server registered as a protected resource (``idp resources add``): the IdP mints
    tokens only for registered resources."""
    if idp.provider.resources.get(mcp_server.url) is None:
        idp.provider.resources.add(mcp_server.url, name="CBST interop server", actor="test")
    return mcp_server.url
