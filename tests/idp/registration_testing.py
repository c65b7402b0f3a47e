"""Helpers of the registration tests: a provider with registration settings and its app."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from idp_testing import ISSUER, random_kek
from starlette.testclient import TestClient

from idp.app import create_app
from idp.config import Settings
from idp.provider import Provider

PYTHON_SDK_REQUEST = {  # what the Python MCP SDK 2.x sends (docs: shared notes on MCP clients)
    "redirect_uris": ["http://localhost:3030/callback"],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "scope": "tools/call:echo",
    "client_name": "Python MCP client",
    "application_type": "native",
}


def settings_for(db_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(issuer=ISSUER, database_url=db_url, keys_dir=tmp_path / "keys", keystore_kek=random_kek(),
                    **overrides)


@contextlib.contextmanager
def idp(db_url: str, tmp_path: Path, **overrides: Any) -> Iterator[tuple[Provider, TestClient]]:
    prov = Provider.open(settings_for(db_url, tmp_path, **overrides))
    try:
        with TestClient(create_app(provider=prov, maintenance=False), base_url=ISSUER) as http:
            yield prov, http
    finally:
        prov.close()


def count_clients(prov: Provider, registered_by: str = "dcr") -> int:
    return sum(1 for c in prov.clients.list() if c.registered_by == registered_by)


def mark_used(prov: Provider, client_id: str) -> None:
    """What the token endpoint leaves when it issues a token: a ``token.issued`` audit record."""
    from idp import audit

    with audit.transaction(prov.engine) as tx:
        tx.record(audit.Record("token.issued", client_id, client_id=client_id, jti="j-" + client_id[:20],
                               data={"exp": 0}))


@contextlib.contextmanager
def served(prov: Provider) -> Iterator[str]:
    """The IdP app on a real uvicorn server on 127.0.0.1, in a thread; its base URL."""
    import threading
    import time

    import uvicorn
    from idp_testing import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(provider=prov, maintenance=False), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
