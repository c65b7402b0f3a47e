"""Helpers shared by the test suite (importable as ``idp_testing`` from any test directory).

Fixtures live in conftest.py; plain helpers live here, because ``from conftest import ...`` is
ambiguous once subdirectories have conftest files of their own.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from idp.config import Settings
from idp.provider import Provider

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("IDP_TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")
SKIP_PG = os.environ.get("IDP_TEST_SKIP_POSTGRES") == "1"
ISSUER = "http://127.0.0.1:8000"
AUDIENCE = "https://mcp.example.test/mcp"


def _pg_admin_url() -> str:
    return PG_URL.replace("postgresql://", "postgresql+psycopg://", 1)


def random_kek() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def register(provider: Provider, name: str = "agent", *, capabilities: str = "tools/call:* resources/read:file:///docs/**",
             audiences: tuple[str, ...] = (AUDIENCE,), auth_method: str = "client_secret_basic",
             jwks: dict[str, Any] | None = None) -> tuple[Any, str | None]:
    """Register a client directly through the registry; returns (record, secret)."""
    return provider.clients.add(name, capabilities=capabilities, audiences=list(audiences), auth_method=auth_method, jwks=jwks)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A real ``idp serve`` process on loopback; stopped by the fixture that made it."""

    def __init__(self, env: dict[str, str], port: int, workers: int = 1, ready_timeout: float = 30) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = Path(env["IDP_KEYS_DIR"]).parent / f"serve-{port}.log"
        self._logfh = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "idp.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
            env={**os.environ, **env}, stdout=self._logfh, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"idp serve exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"idp serve did not become ready:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._logfh.close()


def run_cli(*args: str, env: dict[str, str], input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real ``idp`` CLI in a subprocess."""
    return subprocess.run([sys.executable, "-m", "idp.cli", *args], env={**os.environ, **env}, capture_output=True,
                          text=True, input=input, timeout=timeout, cwd=ROOT)


def env_for(settings: Settings) -> dict[str, str]:
    """Environment variables that reproduce ``settings`` for a subprocess."""
    assert settings.keystore_kek is not None
    return {
        "IDP_ISSUER": settings.issuer,
        "IDP_DATABASE_URL": settings.database_url,
        "IDP_KEYS_DIR": str(settings.keys_dir),
        "IDP_KEYSTORE_KEK": settings.keystore_kek.get_secret_value(),
        "IDP_LOG_LEVEL": "warning",
    }
