"""What both of the gateway's apps answer before any MCP handling: the ASGI lifespan, the public
``/healthz`` and paths that are not the MCP endpoint."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sdk.asgi import Receive, Scope, Send
from sdk.server.endpoint import MCPEndpoint

from . import _jsonrpc as rpc

HEALTH_PATH = "/healthz"  # liveness of the gateway itself (it does not probe the upstream)


async def serve_lifespan(receive: Receive, send: Send, *, startup: Callable[[], Awaitable[None]],
                         shutdown: Callable[[], Awaitable[None]]) -> None:
    """``startup`` when the server starts (a failure is reported to it, and it exits), ``shutdown``
    when it stops."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await startup()
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def front_door(scope: Scope, receive: Receive, send: Send, *, endpoint: MCPEndpoint,
                     startup: Callable[[], Awaitable[None]], shutdown: Callable[[], Awaitable[None]],
                     healthy: Callable[[], bool]) -> bool:
    """Answer what is not an MCP request; True when the request is for the MCP endpoint (the
    middleware's own definition of it, so nothing reaches MCP handling unchecked)."""
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send, startup=startup, shutdown=shutdown)
        return False
    if scope["type"] != "http":
        return False
    if scope["path"] == HEALTH_PATH and scope["method"] == "GET":
        # Public (no token): whether the gateway can serve, nothing about the upstream or the child
        # (address, command line, pid); the gateway log has the details.
        if healthy():
            await rpc.send_json(send, 200, {"status": "ok"})
        else:
            await rpc.send_json(send, 503, {"status": "unavailable"})
        return False
    if not endpoint.serves(scope):
        await rpc.send_json(send, 404, rpc.error(None, rpc.INVALID_REQUEST, f"no MCP endpoint at {scope['path']}"))
        return False
    return True
