"""An ASGI app that forwards every HTTP request to ``target`` with a bearer token added.

The conformance runner cannot send custom headers, so this sits between it and
``cbst-gateway``. Everything else passes through as sent — method, path, query, the Host and
Origin headers (the DNS-rebinding scenario depends on them), the body — and responses stream
back chunk by chunk (SSE), ending when either side ends.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx

# Hop-by-hop headers (RFC 9110 section 7.6.1) belong to one connection, not the message.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}


class BearerForwarder:
    def __init__(self, target: str, token: str) -> None:
        self.target = target.rstrip("/")
        self.token = token
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(60, read=None))
        self.client.headers.clear()  # send only what the runner sent (no default Accept, User-Agent...)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k, v) for k, v in scope["headers"]
                   if k.decode().lower() not in HOP_BY_HOP | {"authorization", "content-length"}]
        headers.append((b"authorization", f"Bearer {self.token}".encode()))
        url = self.target + scope["path"] + (("?" + scope["query_string"].decode()) if scope["query_string"] else "")
        request = self.client.build_request(scope["method"], url, headers=headers, content=body)
        response = await self.client.send(request, stream=True)
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [(k, v) for k, v in response.headers.raw if k.decode().lower() not in HOP_BY_HOP]})
            async with anyio.create_task_group() as tg:
                async def until_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(until_disconnect)
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                tg.cancel_scope.cancel()
        finally:
            await response.aclose()
