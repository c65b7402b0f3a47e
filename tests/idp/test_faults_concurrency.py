"""More concurrent token requests than ``idp.blocking`` has threads, through the real ASGI app:
every request threads block waiting for an audit commit, so the commits must not need one of
those threads (they did, and the server deadlocked into 503s)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from idp import blocking
from idp.app import create_app
from idp.provider import Provider

from idp_testing import register


async def _token(app: Any, auth: bytes) -> int:
    body = b"grant_type=client_credentials"
    scope = {"type": "http", "method": "POST", "path": "/token", "headers": [
        (b"content-type", b"application/x-www-form-urlencoded"), (b"authorization", auth),
        (b"content-length", str(len(body)).encode())]}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


def test_more_concurrent_token_requests_than_threads_are_all_served(provider: Provider) -> None:
    client, secret = register(provider)
    auth = b"Basic " + base64.b64encode(f"{client.client_id}:{secret}".encode())
    app = create_app(provider=provider, maintenance=False)

    async def main() -> list[int]:
        return await asyncio.gather(*[_token(app, auth) for _ in range(4 * blocking.THREADS)])

    for _ in range(3):
        assert asyncio.run(main()) == [200] * (4 * blocking.THREADS)
