"""The ASGI lifespan protocol, served the same way by both of the gateway's apps."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sdk.asgi import Receive, Send


async def serve_lifespan(receive: Receive, send: Send, *, startup: Callable[[], Awaitable[None]],
                         shutdown: Callable[[], Awaitable[None]]) -> None:
    """``startup`` when the server starts (a failure is reported to it, and it exits), ``shutdown``
    when it stops."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await startup()
            except Exception as exc:  # noqa: BLE001 — reported to the server, which exits
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
