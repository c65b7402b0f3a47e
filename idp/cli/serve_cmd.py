"""``idp serve``: run the IdP with uvicorn."""

from __future__ import annotations

import os
from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.markup import escape

from .. import logs
from .common import err, fail, provider

_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def serve(
    host: Annotated[str | None, typer.Option("--host", help="Listen address (default IDP_HOST or 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535,
                                             help="Port (default IDP_PORT or 8000).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, max=64,
                                                help="Worker processes (default IDP_WORKERS or 1).")] = None,
) -> None:
    """Run the identity provider."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from ..serving import GuardedHttpProtocol, ListenError, bind

    # The options go to the environment: the workers build their settings from it, and the
    # default issuer derives from the port (http://127.0.0.1:<port>).
    for name, value in (("IDP_HOST", host), ("IDP_PORT", port), ("IDP_WORKERS", workers)):
        if value is not None:
            os.environ[name] = str(value)
    # Migrate and create the first key once, here, before any worker starts.
    with provider(initial_key=True) as prov:
        settings = prov.settings
        keystore = prov.keystore.source
    logs.configure(settings.log_level, settings.log_json)
    host, port, workers = settings.host, settings.port, settings.workers
    if keystore.startswith("file:"):
        err.print(f"[yellow]note:[/] signing keys are encrypted with a generated key in {escape(keystore[5:])}; "
                  "set IDP_KEYSTORE_PASSPHRASE or IDP_KEYSTORE_KEK in production.")
    issuer = urlsplit(settings.issuer)
    if issuer.hostname in _LOOPBACK and (issuer.port or {"https": 443}.get(issuer.scheme, 80)) != port:
        err.print(f"[yellow]warning:[/] the issuer {escape(settings.issuer)} is not where this server listens "
                  f"(port {port}): resource servers will find no IdP there. Set IDP_ISSUER to the URL "
                  "clients reach this server at.")
    try:
        sock = bind(host, port)  # before anything is announced: a port in use is one clear error
    except ListenError as exc:
        fail(exc.strerror or str(exc))
    err.print(f"CBST IdP: issuer [bold]{escape(settings.issuer)}[/], listening on http://{escape(host)}:{port} "
              f"({workers} worker(s))")
    os.environ.setdefault("IDP_LOG_LEVEL", settings.log_level)
    config = uvicorn.Config("idp.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                            log_level=settings.log_level, access_log=False, proxy_headers=False, server_header=False,
                            http=GuardedHttpProtocol)  # bounds request read time and connections per address
    try:
        if workers > 1:
            Multiprocess(config, sockets=[sock]).run()
        else:
            server = uvicorn.Server(config)
            server.run(sockets=[sock])
            if not server.started:
                raise typer.Exit(3)  # the application failed to start; uvicorn logged why
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
