"""Drive a protected MCP server with an official Python client doing its OWN OAuth (no CBST code).

Runs in whichever environment has the client: ``mcp`` 2.x (the shared venv), ``mcp`` 1.x
(``.venv-mcp1``) or fastmcp (``.venv-fastmcp``), always as a subprocess::

    <python> tests/interop/py_oauth_driver.py

The line protocol of ``ts/oauth_driver.mjs``. stdin, first line — one JSON object::

    {"client": "mcp" | "fastmcp", "url": ..., "mode": "auto" | "legacy" (mcp 2.x),
     "auth": {"kind": "client_credentials", "client_id", "client_secret", "issuer", "scope"?,
              "auth_method"?: "client_secret_basic" | "client_secret_post"}
           | {"kind": "private_key_jwt", "client_id", "issuer", "private_key_pem", "alg", "scope"?}
           | {"kind": "interactive", "redirect_uri", "client_name"?, "client_metadata_url"?},
     "ops": [{"id", "op": "list_tools" | "call_tool" | ... | "expire_access_token" | "pause"}]}

stdout — JSON lines: ``{"id", "ok"}`` / ``{"id", "error"}`` per op (``"connect"`` first);
``{"event": "authorize", "url"}`` when the client sends the person to the authorization
endpoint — the test answers one line ``{"callback": "<redirect URI with code, state, iss>"}``
or ``{"error": ...}``; ``{"event": "registered", "client_id"}``; ``{"event": "tokens",
"access_token", "scope", "refresh_token"}``; ``{"event": "paused"}``; ``{"event": "done"}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from py_driver import _op, describe  # noqa: E402 - the same ops as the CBST-credentials driver

Emit = Callable[[dict[str, Any]], None]
MAJOR = int(version("mcp").split(".")[0])


async def read_line() -> dict[str, Any]:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        raise RuntimeError("stdin closed")
    return json.loads(line)


class MemoryStorage:
    """The SDK's TokenStorage protocol, in memory; reports what the SDK stores."""

    def __init__(self, emit: Emit) -> None:
        self.emit = emit
        self.tokens: Any = None
        self.client_info: Any = None

    async def get_tokens(self) -> Any:
        return self.tokens

    async def set_tokens(self, tokens: Any) -> None:
        self.tokens = tokens
        self.emit({"event": "tokens", "access_token": tokens.access_token, "scope": tokens.scope,
                   "refresh_token": tokens.refresh_token})

    async def get_client_info(self) -> Any:
        return self.client_info

    async def set_client_info(self, client_info: Any) -> None:
        self.client_info = client_info
        self.emit({"event": "registered", "client_id": client_info.client_id})


class Browser:
    """The person's browser, as the SDK's redirect and callback handlers: the test drives the
    IdP's pages and answers with the URL the browser was finally sent back to."""

    def __init__(self, emit: Emit) -> None:
        self.emit = emit
        self.callback: dict[str, list[str]] = {}

    async def redirect(self, url: str) -> None:
        self.emit({"event": "authorize", "url": url})
        answer = await read_line()
        if "error" in answer:
            raise RuntimeError(f"authorization failed: {answer['error']}")
        self.callback = parse_qs(urlsplit(answer["callback"]).query)

    async def returned(self) -> Any:
        params = {k: v[0] for k, v in self.callback.items()}
        if MAJOR >= 2:
            from mcp.client.auth import AuthorizationCodeResult

            return AuthorizationCodeResult(code=params.get("code", ""), state=params.get("state"),
                                           iss=params.get("iss"))
        return params.get("code", ""), params.get("state")  # 1.x: (code, state)


def build_provider(config: dict[str, Any], emit: Emit) -> Any:
    auth, url = config["auth"], config["url"]
    storage = MemoryStorage(emit)
    kind = auth["kind"]
    scope_kw = "scope" if MAJOR >= 2 else "scopes"
    if config.get("client") == "fastmcp":
        from fastmcp.client.auth import ClientCredentialsOAuthProvider as FastCC

        assert kind == "client_credentials"
        return FastCC(url, client_id=auth["client_id"], client_secret=auth["client_secret"], scopes=auth.get("scope"),
                      issuer=auth["issuer"], token_endpoint_auth_method=auth.get("auth_method", "client_secret_basic"))
    if kind == "client_credentials":
        from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider

        return ClientCredentialsOAuthProvider(
            url, storage, auth["client_id"], auth["client_secret"], issuer=auth["issuer"],
            token_endpoint_auth_method=auth.get("auth_method", "client_secret_basic"), **{scope_kw: auth.get("scope")})
    if kind == "private_key_jwt":
        from mcp.client.auth.extensions.client_credentials import PrivateKeyJWTOAuthProvider, SignedJWTParameters

        params = SignedJWTParameters(issuer=auth["client_id"], subject=auth["client_id"],
                                     signing_key=auth["private_key_pem"], signing_algorithm=auth["alg"])
        return PrivateKeyJWTOAuthProvider(url, storage, auth["client_id"], params.create_assertion_provider(),
                                          issuer=auth["issuer"], **{scope_kw: auth.get("scope")})
    assert kind == "interactive"
    from mcp.client.auth import OAuthClientProvider
    from mcp.shared.auth import OAuthClientMetadata

    browser = Browser(emit)
    metadata = OAuthClientMetadata(
        client_name=auth.get("client_name", "cbst-interop-py"), redirect_uris=[auth["redirect_uri"]],
        grant_types=["authorization_code", "refresh_token"], response_types=["code"],
        token_endpoint_auth_method="none")
    kwargs: dict[str, Any] = {}
    if auth.get("client_metadata_url"):
        kwargs["client_metadata_url"] = auth["client_metadata_url"]
    return OAuthClientProvider(url, metadata, storage, browser.redirect, browser.returned, **kwargs)


def expire(provider: Any) -> None:
    """The access token's lifetime is over (by the clock the SDK keeps): the next request must
    use the refresh token."""
    provider.context.token_expiry_time = time.time() - 1


async def connect(stack: AsyncExitStack, config: dict[str, Any], provider: Any) -> tuple[Any, str]:
    if config.get("client") == "fastmcp":
        from fastmcp import Client as FastClient

        client = await stack.enter_async_context(FastClient(config["url"], auth=provider, timeout=30))
        return client, "fastmcp"
    if MAJOR >= 2:
        import httpx2
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        http = await stack.enter_async_context(httpx2.AsyncClient(auth=provider, timeout=30))
        client = await stack.enter_async_context(
            Client(streamable_http_client(config["url"], http_client=http), mode=config.get("mode", "auto")))
        return client, str(client.protocol_version)
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    read, write, _ = await stack.enter_async_context(streamablehttp_client(config["url"], auth=provider))
    session = await stack.enter_async_context(ClientSession(read, write))
    result = await session.initialize()
    return session, str(result.protocolVersion)


async def fastmcp_op(client: Any, op: dict[str, Any]) -> Any:
    if op["op"] == "list_tools":
        return sorted(t.name for t in await client.list_tools())
    if op["op"] == "call_tool":
        result = await client.call_tool(op["name"], op.get("arguments") or {}, raise_on_error=False)
        return {"text": "".join(getattr(c, "text", "") or "" for c in result.content), "is_error": result.is_error}
    raise ValueError(f"unknown op {op['op']!r}")


async def run(config: dict[str, Any], emit: Emit) -> None:
    provider = build_provider(config, emit)
    try:
        async with AsyncExitStack() as stack:
            try:
                session, protocol = await connect(stack, config, provider)
            except Exception as exc:  # noqa: BLE001 - reported to the test, which decides
                emit({"id": "connect", "error": describe(exc)})
                return
            emit({"id": "connect", "ok": {"protocol_version": protocol}})
            for op in config["ops"]:
                if op["op"] == "pause":
                    emit({"event": "paused"})
                    await read_line()
                    continue
                if op["op"] == "expire_access_token":
                    expire(provider)
                    emit({"id": op["id"], "ok": True})
                    continue
                try:
                    result = await (fastmcp_op(session, op) if config.get("client") == "fastmcp" else _op(session, op))
                    emit({"id": op["id"], "ok": result})
                except Exception as exc:  # noqa: BLE001
                    emit({"id": op["id"], "error": describe(exc)})
    except Exception as exc:  # noqa: BLE001 - the transport died under us
        emit({"event": "close_error", "error": describe(exc)})


def main() -> None:
    config = json.loads(sys.stdin.readline())

    def emit(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    try:
        asyncio.run(run(config, emit))
    finally:
        emit({"event": "done"})


if __name__ == "__main__":
    main()
