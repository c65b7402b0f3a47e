"""MCP servers the gateway tests put behind the gateway, built on the official SDK (``mcp`` 2.x).

``build_http_server`` is served over streamable HTTP in-process; run as a script this module
is a stdio MCP server (``python upstream_servers.py``) with a tool that crashes the process.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from mcp.server.mcpserver import Context, MCPServer

# Set by the test client's progress callback; the ``slow`` tool waits for it before answering,
# so the tool only finishes quickly if the progress event reached the client while it waited.
RELEASE = threading.Event()


def build_http_server() -> MCPServer:
    server = MCPServer("cbst-gateway-test-upstream")

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @server.tool(name="delete-file")
    def delete_file(path: str) -> str:
        """Destructive: delete a file."""
        return f"deleted {path}"

    @server.tool()
    async def slow(ctx: Context) -> str:
        """Report progress, wait for the client to have seen it, then answer."""
        RELEASE.clear()
        await ctx.report_progress(1, 2, "first half")
        deadline = time.monotonic() + 5
        while not RELEASE.is_set() and time.monotonic() < deadline:
            await _sleep(0.02)
        return "released" if RELEASE.is_set() else "timed out: the progress event never reached the client"

    @server.resource("file:///docs/readme.txt")
    def readme() -> str:
        return "public docs"

    @server.resource("file:///secret/keys.txt")
    def keys() -> str:
        return "top secret"

    @server.prompt()
    def summarize(text: str) -> str:
        return f"Summarize: {text}"

    return server


async def _sleep(seconds: float) -> None:
    import anyio

    await anyio.sleep(seconds)


def build_stdio_server() -> MCPServer:
    server = MCPServer("cbst-gateway-test-stdio")

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back, with this process's pid."""
        return f"{text} (pid {os.getpid()})"

    @server.tool()
    def crash() -> str:
        """Exit the process abruptly while handling the call."""
        sys.stderr.write("crash tool called: exiting\n")
        sys.stderr.flush()
        os._exit(3)

    @server.tool()
    async def slow(ctx: Context) -> str:
        await ctx.report_progress(1, 2, "first half")
        await _sleep(0.5)
        return "done"

    return server


if __name__ == "__main__":
    build_stdio_server().run("stdio")
