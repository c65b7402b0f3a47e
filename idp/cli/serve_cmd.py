"""``idp serve``: run the IdP with uvicorn."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer
from rich.markup import escape

from .. import logs
from .common import err, provider


def serve(
    host: Annotated[Optional[str], typer.Option("--host", help="Listen address (default IDP_HOST or 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option("--port", min=1, max=65535, help="Port (default IDP_PORT or 8000).")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, max=64, help="Worker processes (default IDP_WORKERS or 1).")] = None,
) -> None:
    """Run the identity provider."""
    import uvicorn

    # Migrate and create the first key once, here, before any worker starts.
    with provider(initial_key=True) as prov:
        settings = prov.settings
        keystore = prov.keystore.source
    logs.configure(settings.log_level, settings.log_json)
    host = host or settings.host
    port = port or settings.port
    workers = workers or settings.workers
    if keystore.startswith("file:"):
        err.print(f"[yellow]note:[/] signing keys are encrypted with a generated key in {escape(keystore[5:])}; "
                  "set IDP_KEYSTORE_PASSPHRASE or IDP_KEYSTORE_KEK in production.")
    err.print(f"CBST IdP: issuer [bold]{escape(settings.issuer)}[/], listening on http://{escape(host)}:{port} "
              f"({workers} worker(s))")
    os.environ.setdefault("IDP_LOG_LEVEL", settings.log_level)
    uvicorn.run("idp.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=settings.log_level, access_log=False, proxy_headers=False, server_header=False)
