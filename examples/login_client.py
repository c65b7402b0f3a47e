"""An MCP client that logs a person in: the official ``mcp`` SDK's own OAuth (authorization code
with PKCE), nothing from CBST on the client side.

With the IdP running (``make run``), a local account (``idp users add alice``), the example
server registered as a resource and running, and this client registered as a public client::

    .venv/bin/idp clients add demo-desktop --public --redirect-uri http://127.0.0.1:33418/callback --json
    .venv/bin/python examples/login_client.py --client-id CLIENT_ID --call echo '{"text": "hi"}'

The SDK discovers the IdP from the server's protected resource metadata (RFC 9728), sends the
person to the IdP's authorization endpoint — this client prints the URL and opens a browser —
and waits on its loopback redirect URI (RFC 8252 §7.3) for the code, which it checks (``state``,
RFC 9207 ``iss``) and exchanges for a token. Then it lists the tools the token allows and calls
one. A call the token does not allow makes the SDK step up: the person is asked again, for the
new capability only.

Without ``--client-id`` the SDK registers itself at the IdP (RFC 7591), when the IdP's
registration policy lets it. ``--no-browser`` only prints the URL (open it anywhere that reaches
the IdP). Bad input is a usage error; a failure is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import webbrowser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

DONE_PAGE = (b"<!doctype html><meta charset=utf-8><title>Logged in</title>"
             b"<p>Done: you may close this window and go back to the application.</p>")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default=env("CBST_SERVER", "http://127.0.0.1:9000/mcp"), help="the MCP endpoint")
    p.add_argument("--client-id", default=env("CBST_CLIENT_ID"),
                   help="a pre-registered public client (idp clients add NAME --public --redirect-uri ...)")
    p.add_argument("--port", type=int, default=int(env("CBST_CALLBACK_PORT", "33418")),
                   help="port of the loopback redirect URI http://127.0.0.1:PORT/callback (default 33418)")
    p.add_argument("--scope", default=env("CBST_SCOPE"), help="capabilities to ask for (default: what the server says)")
    p.add_argument("--call", nargs=2, metavar=("TOOL", "JSON"), help="call a tool with JSON arguments")
    p.add_argument("--no-browser", action="store_true", help="print the login URL, do not open a browser")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for the person to log in")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    if not 0 < args.port < 65536:
        p.error("--port must be 1-65535")
    if args.call:
        try:
            if not isinstance(json.loads(args.call[1]), dict):
                raise ValueError
        except ValueError:
            p.error("--call JSON must be a JSON object")
    return args


class MemoryStorage:
    """The SDK's TokenStorage: tokens and the client registration, for this run only."""

    def __init__(self, client_info: Any = None) -> None:
        self.tokens: Any = None
        self.client_info = client_info

    async def get_tokens(self) -> Any:
        return self.tokens

    async def set_tokens(self, tokens: Any) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> Any:
        return self.client_info

    async def set_client_info(self, client_info: Any) -> None:
        self.client_info = client_info


class LoopbackCallback:
    """The redirect URI: a one-shot HTTP server on 127.0.0.1 that takes the authorization
    response (``code``, ``state``, ``iss`` — or ``error``) from the person's browser."""

    def __init__(self, port: int, open_browser: bool, timeout: float) -> None:
        self.port, self.open_browser, self.timeout = port, open_browser, timeout
        self.redirect_uri = f"http://127.0.0.1:{port}/callback"
        self._result: asyncio.Future[dict[str, str]] | None = None
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await asyncio.wait_for(reader.readline(), 10)).decode("latin-1")
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.split(" ")
            target = urlsplit(parts[1]) if len(parts) >= 2 else None
            if target is None or target.path != "/callback":
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            params = {k: v[0] for k, v in parse_qs(target.query).items()}
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nConnection: close\r\n"
                         b"Content-Length: " + str(len(DONE_PAGE)).encode() + b"\r\n\r\n" + DONE_PAGE)
            if self._result is not None and not self._result.done():
                self._result.set_result(params)
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            await writer.drain()
            writer.close()

    async def redirect(self, url: str) -> None:
        """The SDK's redirect handler: listen first (the browser may be quick), then send the person."""
        self._result = asyncio.get_running_loop().create_future()
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        print(f"Log in and consent in your browser:\n  {url}", file=sys.stderr, flush=True)
        if self.open_browser:
            webbrowser.open(url)

    async def returned(self) -> Any:
        """The SDK's callback handler: what the browser brought back."""
        from mcp.client.auth import AuthorizationCodeResult

        assert self._result is not None
        params = await asyncio.wait_for(self._result, self.timeout)
        if "error" in params:
            raise RuntimeError(f"the IdP refused: {params['error']}: {params.get('error_description', '')}".strip())
        return AuthorizationCodeResult(code=params.get("code", ""), state=params.get("state"), iss=params.get("iss"))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def oauth_provider(args: argparse.Namespace, callback: LoopbackCallback) -> Any:
    from mcp.client.auth import OAuthClientProvider
    from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata

    metadata = OAuthClientMetadata(client_name="CBST example login client", redirect_uris=[callback.redirect_uri],
                                   grant_types=["authorization_code", "refresh_token"], response_types=["code"],
                                   token_endpoint_auth_method="none", scope=args.scope)
    known = None
    if args.client_id:  # pre-registered by the operator: no registration request
        known = OAuthClientInformationFull(client_id=args.client_id, **metadata.model_dump(exclude_none=True))
    return OAuthClientProvider(args.server, metadata, MemoryStorage(known), callback.redirect, callback.returned)


async def run(args: argparse.Namespace) -> int:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    callback = LoopbackCallback(args.port, not args.no_browser, args.timeout)
    try:
        async with httpx2.AsyncClient(auth=oauth_provider(args, callback), timeout=30) as http, \
                Client(streamable_http_client(args.server, http_client=http)) as client:
            tools = await client.list_tools()
            print("tools/list:", ", ".join(sorted(t.name for t in tools.tools)) or "(none)")
            if args.call:
                name, arguments = args.call[0], json.loads(args.call[1])
                result = await client.call_tool(name, arguments)
                text = "".join(getattr(c, "text", "") or "" for c in result.content)
                print(f"tools/call {name}: {text}{'  (tool error)' if result.is_error else ''}")
    finally:
        await callback.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if not args.verbose:
        logging.getLogger("mcp").setLevel(logging.CRITICAL + 1)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line, not a traceback: the person can act on it
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
