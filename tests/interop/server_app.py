"""The protected MCP server the interop tests drive: official ``mcp`` SDK + ``CBSTMiddleware``.

Run as a process by the ``mcp_server`` fixture::

    python tests/interop/server_app.py --issuer URL --port P [--revocation-poll S]

Tools ``echo``, ``add``, ``delete-file`` (destructive); resources ``file:///docs/a.md``,
``file:///docs/b.md``, ``file:///private/secret.txt``; prompts ``summarize``, ``internal``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, for ``sdk``

from mcp.server.mcpserver import MCPServer  # noqa: E402
from mcp.types import ToolAnnotations  # noqa: E402

from sdk.server import CBSTMiddleware, ProtectionConfig  # noqa: E402

RESOURCES = {
    "file:///docs/a.md": "document A",
    "file:///docs/b.md": "document B",
    "file:///private/secret.txt": "the secret",
}


def build() -> MCPServer:
    mcp = MCPServer("cbst-interop")

    @mcp.tool(description="Echo the text back.", annotations=ToolAnnotations(readOnlyHint=True))
    def echo(text: str) -> str:
        return f"echo: {text}"

    @mcp.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @mcp.tool(name="delete-file", description="Delete a file.", annotations=ToolAnnotations(destructiveHint=True))
    def delete_file(path: str) -> str:
        return f"deleted {path}"

    for uri, text in RESOURCES.items():
        mcp.resource(uri, name=uri.rsplit("/", 1)[-1], mime_type="text/plain")(_reader(text))

    @mcp.prompt(name="summarize", description="Summarize a text.")
    def summarize(text: str) -> str:
        return f"Summarize: {text}"

    @mcp.prompt(name="internal", description="An internal prompt.")
    def internal() -> str:
        return "internal instructions"

    return mcp


def _reader(text: str):  # type: ignore[no-untyped-def]
    def read() -> str:
        return text

    return read


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--revocation-poll", type=float, default=1.0)
    args = parser.parse_args()

    import uvicorn

    resource = f"http://127.0.0.1:{args.port}/mcp"
    config = ProtectionConfig(issuer=args.issuer, resource=resource, revocation_poll_interval=args.revocation_poll,
                              revocation_fail_closed_after=max(60.0, args.revocation_poll), tool_rate=1000.0,
                              scopes_supported=["tools/call:echo"])
    app = CBSTMiddleware(build().streamable_http_app(), config)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
