"""A small MCP server (official ``mcp`` SDK, streamable HTTP) protected by CBST capability tokens.

Run it against a running IdP (``idp serve``)::

    .venv/bin/python examples/server.py --issuer http://127.0.0.1:8000 --port 9000

(or set ``CBST_ISSUER``, ``CBST_RESOURCE``, ``CBST_PORT``, ``CBST_IN_SESSION_DENIALS``). The resource URI defaults to
``http://127.0.0.1:<port>/mcp``: register your client with that audience at the IdP, e.g.
``idp clients add agent --capabilities "tools/call:echo resources/read:file:///docs/**" \
--audience http://127.0.0.1:9000/mcp``.

What it offers:

* tools ``echo``, ``add``, ``git-status`` (read-only) and ``delete-file`` (marked destructive
  with ``destructiveHint``: give it out sparingly, e.g. ``tools/call:delete-file``);
* resources under ``file:///docs/`` and ``file:///private/``, plus a template
  ``file:///docs/{name}``;
* a prompt ``summarize``.

A token with ``tools/call:echo`` sees only ``echo`` in ``tools/list``, can call only ``echo``,
and gets HTTP 403 ``insufficient_scope`` naming ``tools/call:delete-file`` if it tries that.
Clients that end their whole session on an HTTP 403 (the mcp 1.x Python client; fastmcp 2.x
hangs) want ``--in-session-denials jsonrpc``: a denial inside a session is then HTTP 200 with
the JSON-RPC error alone, and the session goes on.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

from sdk.server import CBSTMiddleware, ProtectionConfig

DOCS = {
    "readme.md": "# Example\nA protected MCP server.\n",
    "guide.md": "Ask the IdP for a token with the capabilities you need.\n",
}
PRIVATE = {"salaries.csv": "alice,100\nbob,90\n"}


def build_mcp(name: str = "cbst-example") -> MCPServer:
    mcp = MCPServer(name, instructions="Example tools, resources and a prompt, behind CBST.")
    files: dict[str, str] = {f"/docs/{k}": v for k, v in DOCS.items()}
    files.update({f"/private/{k}": v for k, v in PRIVATE.items()})

    @mcp.tool(description="Echo the text back.", annotations=ToolAnnotations(readOnlyHint=True))
    def echo(text: str) -> str:
        return text

    @mcp.tool(description="Add two integers.", annotations=ToolAnnotations(readOnlyHint=True))
    def add(a: int, b: int) -> int:
        return a + b

    @mcp.tool(name="git-status", description="Pretend to run git status.",
              annotations=ToolAnnotations(readOnlyHint=True))
    def git_status() -> str:
        return "On branch main\nnothing to commit, working tree clean"

    @mcp.tool(name="delete-file", description="Delete a file of this server (destructive).",
              annotations=ToolAnnotations(destructiveHint=True, readOnlyHint=False, idempotentHint=True))
    def delete_file(path: str) -> str:
        existed = files.pop(path, None) is not None
        return f"deleted {path}" if existed else f"no such file {path}"

    for fname, text in DOCS.items():
        _register_file(mcp, f"file:///docs/{fname}", fname, text)
    for fname, text in PRIVATE.items():
        _register_file(mcp, f"file:///private/{fname}", fname, text)

    @mcp.resource("file:///docs/{name}", name="doc", description="Any document under /docs.",
                  mime_type="text/plain")
    def doc(name: str) -> str:
        return files.get(f"/docs/{name}", f"(no document {name})")

    @mcp.prompt(name="summarize", description="Summarize a text.")
    def summarize(text: str) -> str:
        return f"Summarize the following text in three sentences:\n\n{text}"

    return mcp


def _register_file(mcp: MCPServer, uri: str, name: str, text: str) -> None:
    @mcp.resource(uri, name=name, mime_type="text/plain")
    def read() -> str:
        return text


def create_app(config: ProtectionConfig, *, stateless: bool = False, json_response: bool = False,
               mcp: MCPServer | None = None) -> Any:
    """The protected ASGI app: the MCP server's streamable-HTTP app wrapped by CBSTMiddleware."""
    mcp = mcp or build_mcp()
    inner = mcp.streamable_http_app(streamable_http_path=config.mcp_path, stateless_http=stateless,
                                    json_response=json_response)
    return CBSTMiddleware(inner, config)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--issuer", default=os.environ.get("CBST_ISSUER", "http://127.0.0.1:8000"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("CBST_PORT", "9000")))
    parser.add_argument("--host", default=os.environ.get("CBST_HOST", "127.0.0.1"))
    parser.add_argument("--resource", default=os.environ.get("CBST_RESOURCE"),
                        help="resource URI (default http://HOST:PORT/mcp)")
    parser.add_argument("--json-response", action="store_true", help="answer JSON instead of SSE")
    parser.add_argument("--stateless", action="store_true", help="no sessions (handshake generation)")
    parser.add_argument("--log-tool-arguments", action="store_true")
    parser.add_argument("--in-session-denials", choices=["http", "jsonrpc"],
                        default=os.environ.get("CBST_IN_SESSION_DENIALS", "http"),
                        help="a capability denial inside a session: HTTP 403 (default), or HTTP 200 with "
                             "the JSON-RPC error only (for mcp 1.x / fastmcp 2.x clients)")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> ProtectionConfig:
    return ProtectionConfig(
        issuer=args.issuer, resource=args.resource or f"http://{args.host}:{args.port}/mcp",
        resource_name="CBST example server",
        scopes_supported=["tools/call:echo", "tools/call:add", "resources/read:file:///docs/**",
                          "prompts/get:summarize"],
        log_tool_arguments=args.log_tool_arguments, in_session_denials=args.in_session_denials,
    )


def main(argv: list[str] | None = None) -> None:
    import logging

    import uvicorn

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = build_config(args)
    resource = config.resource
    app = create_app(config, stateless=args.stateless, json_response=args.json_response)
    print(f"protected MCP server on {resource} (issuer {args.issuer})", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
