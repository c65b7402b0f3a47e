"""Fixtures for the gateway tests: upstream MCP servers, the gateway in-process or as a real
``cbst-gateway`` process, the npm-installed third-party stdio server, and a real IdP.

Everything listens on 127.0.0.1 on free ports and is stopped by the fixture that started it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from idp.config import Settings
from idp.provider import Provider

# The suite's root conftest, loaded by path under its own name (``from conftest import`` is
# ambiguous once several test directories have a conftest.py).
_root_spec = importlib.util.spec_from_file_location(
    "cbst_gateway_root_conftest", Path(__file__).resolve().parent.parent / "conftest.py")
assert _root_spec and _root_spec.loader
root_conftest = importlib.util.module_from_spec(_root_spec)
_root_spec.loader.exec_module(root_conftest)
free_port = root_conftest.free_port

HERE = Path(__file__).resolve().parent
NPM_DIR = HERE / "npm"
FILESYSTEM_SERVER = NPM_DIR / "node_modules" / "@modelcontextprotocol" / "server-filesystem" / "dist" / "index.js"
STDIO_TEST_SERVER = HERE / "upstream_servers.py"
BIN = Path(sys.executable).parent


class ThreadedServer:
    """An ASGI app served by uvicorn on a free loopback port in a background thread."""

    def __init__(self, app: Any, *, lifespan: str = "off") -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan=lifespan,
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.server.should_exit = True
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


class HeaderRecorder:
    """ASGI wrapper that remembers the headers of every HTTP request reaching ``app``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[dict[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.seen.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
        await self.app(scope, receive, send)


@pytest.fixture(scope="session")
def http_upstream() -> Iterator[tuple[str, HeaderRecorder]]:
    """The official-SDK MCP server over streamable HTTP: (its /mcp URL, its header recorder)."""
    from upstream_servers import build_http_server

    app = HeaderRecorder(build_http_server().streamable_http_app())
    with ThreadedServer(app, lifespan="on") as srv:
        yield srv.url + "/mcp", app


@pytest.fixture(scope="session")
def filesystem_server() -> Path:
    """The npm-installed ``@modelcontextprotocol/server-filesystem`` (``npm ci`` on first use)."""
    import fcntl

    lock = NPM_DIR / "package-lock.json"
    stamp = NPM_DIR / "node_modules" / ".package-lock.json"
    with open(NPM_DIR / ".install.lock", "w") as guard:  # pytest-xdist workers install once
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not FILESYSTEM_SERVER.exists() or not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
            npm = shutil.which("npm")
            if npm is None:
                pytest.fail("npm is needed for the stdio interop tests (Node 18+): "
                            "run `npm ci --prefix tests/gateway/npm`")
            done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefix", str(NPM_DIR)],
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    assert FILESYSTEM_SERVER.exists()
    return FILESYSTEM_SERVER


@pytest.fixture
def served_dir(tmp_path: Path) -> Path:
    root = tmp_path / "served"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "hello.txt").write_text("hello from the filesystem server\n")
    (root / "secret.txt").write_text("do not read\n")
    return root.resolve()


def filesystem_command(server: Path, root: Path) -> list[str]:
    node = shutil.which("node")
    assert node, "node is needed for the stdio interop tests"
    return [node, str(server), str(root)]


def stdio_test_command() -> list[str]:
    return [sys.executable, str(STDIO_TEST_SERVER)]


class GatewayProcess:
    """A real ``cbst-gateway`` process on a free loopback port."""

    def __init__(self, *args: str, port: int | None = None, log: Path, wait: bool = True,
                 env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._fh = open(log, "wb")
        exe = BIN / "cbst-gateway"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "gateway.cli"]
        self.proc = subprocess.Popen([*cmd, "--port", str(self.port), *args], stdout=self._fh,
                                     stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cbst-gateway exited early ({self.proc.returncode}):\n{self.output()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"cbst-gateway did not become ready:\n{self.output()}")

    def output(self) -> str:
        if not self._fh.closed:
            self._fh.flush()
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self._fh.closed:
            self._fh.close()


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(*args: str, **kw: Any) -> GatewayProcess:
        gw = GatewayProcess(*args, log=tmp_path / f"gateway-{len(started)}.log", **kw)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


# -- a real IdP ----------------------------------------------------------------------------------

class IdP:
    """``idp serve`` on a free port plus an in-process Provider on the same database."""

    def __init__(self, url: str, provider: Provider, process: Any) -> None:
        self.url, self.provider, self.process = url, provider, process
        self._n = 0

    def token(self, capabilities: str, resource: str) -> str:
        """Register a client allowed ``capabilities`` for ``resource``; a token for exactly those."""
        self._n += 1
        record, secret = self.provider.clients.add(f"gw-{self._n}-{time.monotonic_ns()}", capabilities=capabilities,
                                                   audiences=[resource], auth_method="client_secret_basic")
        assert secret is not None
        resp = httpx.post(self.url + "/token", auth=(record.client_id, secret), timeout=10,
                          data={"grant_type": "client_credentials", "scope": capabilities, "resource": resource})
        assert resp.status_code == 200, resp.text
        return str(resp.json()["access_token"])


@pytest.fixture(scope="session")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdP]:
    base = tmp_path_factory.mktemp("gateway-idp")
    port = free_port()
    settings = Settings(issuer=f"http://127.0.0.1:{port}", database_url=f"sqlite:///{base / 'idp.db'}",
                        keys_dir=base / "keys", keystore_kek=root_conftest.random_kek(), log_json=True)
    provider = Provider.open(settings)  # migrates and creates the signing key before the server starts
    process = root_conftest.ServerProcess(root_conftest.env_for(settings), port)
    try:
        yield IdP(process.url, provider, process)
    finally:
        process.stop()
        provider.close()


def mcp_client(url: str, token: str | None, *, mode: str = "legacy") -> Any:
    """The official MCP Python client (mcp 2.x) over streamable HTTP with a bearer token."""
    import contextlib

    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    @contextlib.asynccontextmanager
    async def connect() -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http:
            async with Client(streamable_http_client(url, http_client=http), mode=mode, cache=None) as client:
                yield client

    return connect()
