"""``cbst-gateway``: serve an unmodified MCP server behind CBST capability enforcement.

    cbst-gateway --issuer URL --resource URL --port P [--host 127.0.0.1] [options]
                 (--upstream http://127.0.0.1:3000/mcp | --upstream-stdio "COMMAND ARGS")

(``cbst-gateway --help`` lists the options; docs/gateway.md explains them.)

SIGINT/SIGTERM: graceful shutdown (stdio servers stopped), then exit by that signal, as uvicorn
does. Exit status 1 when the stdio server cannot be started or keeps crashing or the port
cannot be bound, 2 for a bad command line or setting.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any
from urllib.parse import urlsplit

from sdk.net import is_loopback

from .errors import GatewayConfigError, StdioStartError
from .http_proxy import HEALTH_PATH, HTTPUpstreamProxy
from .stdio_bridge import StdioBridge

log = logging.getLogger("cbst.gateway")

IN_SESSION_DENIALS = ("http", "jsonrpc")
IN_SESSION_DENIALS_ENV = "CBST_GATEWAY_IN_SESSION_DENIALS"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cbst-gateway", description=(
        "Put CBST capability enforcement in front of an MCP server: a streamable-HTTP upstream, "
        "or a stdio server the gateway spawns and exposes over streamable HTTP."))
    p.add_argument("--issuer", required=True, help="the CBST IdP's issuer URL (its JWKS verifies tokens)")
    p.add_argument("--resource", required=True,
                   help="this gateway's resource URI, the tokens' audience, e.g. http://127.0.0.1:8080/mcp")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, required=True, help="port to listen on")
    p.add_argument("--path", default=None,
                   help="the MCP endpoint path (default: the path of --resource, or /mcp)")
    up = p.add_mutually_exclusive_group(required=True)
    up.add_argument("--upstream", metavar="URL", help="streamable-HTTP MCP server to proxy to")
    up.add_argument("--upstream-stdio", metavar="COMMAND",
                    help='stdio MCP server to spawn (shell-style quoting, run without a shell), e.g. '
                         '"npx -y @modelcontextprotocol/server-filesystem /srv/docs"')
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait for the upstream's answer (HTTP: also the longest silence inside "
                        "a streamed answer; default 120)")
    p.add_argument("--start-timeout", type=float, default=30.0,
                   help="stdio: seconds the server gets to answer initialize (default 30)")
    p.add_argument("--max-restarts", type=int, default=5,
                   help="stdio: crashes tolerated per minute before the gateway gives up (default 5)")
    p.add_argument("--stdio-handshake-only", action="store_true",
                   help="stdio: never start a 2026-07-28 process; such clients are told to use initialize")
    p.add_argument("--tool-rate", type=float, default=3.0,
                   help="tool calls per second per client (token bucket; 0 disables; default 3)")
    p.add_argument("--in-session-denials", choices=IN_SESSION_DENIALS,
                   default=os.environ.get(IN_SESSION_DENIALS_ENV, "http"),
                   help="a capability denial inside a session: HTTP 403 with a challenge (http, the default), "
                        "or HTTP 200 carrying only the JSON-RPC error (jsonrpc: for clients that end their "
                        f"session on an HTTP error, such as mcp 1.x and fastmcp 2.x); env {IN_SESSION_DENIALS_ENV}")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--no-auth", action="store_true",
                   help="development only: no token checks at all; refused unless --host is loopback")
    return p


def mcp_path(args: argparse.Namespace) -> str:
    if args.path:
        return str(args.path)
    return urlsplit(args.resource).path.rstrip("/") or "/mcp"


async def serve(args: argparse.Namespace) -> int:
    import uvicorn

    path = mcp_path(args)
    exit_code = 0
    server: uvicorn.Server | None = None

    def fatal(reason: str) -> None:
        nonlocal exit_code
        exit_code = 1
        print(f"cbst-gateway: error: {reason}", file=sys.stderr, flush=True)
        if server is not None:
            server.should_exit = True

    config = None
    if not args.no_auth:
        from sdk.server import ProtectionConfig

        try:  # validated before anything starts
            config = ProtectionConfig(issuer=args.issuer, resource=args.resource, mcp_path=path,
                                      tool_rate=args.tool_rate or None, public_paths=(HEALTH_PATH,),
                                      in_session_denials=args.in_session_denials)
        except ValueError as exc:
            print(f"cbst-gateway: error: {exc}", file=sys.stderr, flush=True)
            return 2
    inner: HTTPUpstreamProxy | StdioBridge
    try:
        if args.upstream:
            inner = HTTPUpstreamProxy(args.upstream, path=path, timeout=args.timeout)
        else:
            inner = StdioBridge(args.upstream_stdio, path=path, request_timeout=args.timeout,
                                start_timeout=args.start_timeout, max_restarts=args.max_restarts,
                                modern=not args.stdio_handshake_only, on_fatal=fatal)
    except GatewayConfigError as exc:
        print(f"cbst-gateway: error: {exc}", file=sys.stderr, flush=True)
        return 2
    if isinstance(inner, StdioBridge):
        try:
            await inner.start()
        except StdioStartError as exc:
            print(f"cbst-gateway: error: {exc}", file=sys.stderr, flush=True)
            return 1
    try:
        if config is None:  # no tokens, but still no DNS rebinding (MCP transport: Origin check)
            from sdk.server.origin import OriginGuard

            app: Any = OriginGuard(inner, resource=args.resource)
        else:
            from sdk.server import CBSTMiddleware

            app = CBSTMiddleware(inner, config)
        server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                               lifespan="auto", access_log=args.log_level == "debug"))
        upstream = args.upstream or f"stdio `{args.upstream_stdio}`"
        log.info("cbst-gateway: http://%s:%d%s -> %s (%s)", args.host, args.port, path, upstream,
                 "NO AUTH" if args.no_auth else f"tokens from {args.issuer}")
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits on a startup failure (e.g. the port is taken)
            exit_code = 1
        if not server.started and exit_code == 0:
            exit_code = 1
    finally:
        await inner.aclose()
    return exit_code


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.in_session_denials not in IN_SESSION_DENIALS:  # from the environment: argparse checks only flags
        parser.error(f"--in-session-denials ({IN_SESSION_DENIALS_ENV}) must be one of {', '.join(IN_SESSION_DENIALS)}")
    if args.no_auth and not is_loopback(args.host):
        parser.error("--no-auth is only allowed on a loopback --host")
    for name in ("issuer", "resource"):
        if urlsplit(getattr(args, name)).scheme not in ("http", "https"):
            parser.error(f"--{name} must be an http(s) URL")
    if args.upstream and urlsplit(args.upstream).scheme not in ("http", "https"):
        parser.error("--upstream must be an http(s) URL")
    if args.tool_rate < 0:
        parser.error("--tool-rate must be >= 0")
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sys.exit(asyncio.run(serve(args)))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
