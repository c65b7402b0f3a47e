"""The gateway's exceptions have one root, ``GatewayError``, and a broken invariant is an error
of its own, not an ``assert`` (which ``python -O`` strips, leaving an AttributeError later)."""

from __future__ import annotations

import sys

import anyio
import pytest

from gateway import (
    GatewayConfigError,
    GatewayError,
    HTTPUpstreamProxy,
    StdioBridge,
    StdioChild,
    StdioStartError,
)


def test_every_gateway_exception_derives_from_gateway_error() -> None:
    assert issubclass(StdioStartError, GatewayError) and issubclass(GatewayConfigError, GatewayError)
    for bad in (lambda: HTTPUpstreamProxy("ftp://x/mcp"), lambda: HTTPUpstreamProxy("http://x/mcp", path="mcp"),
                lambda: StdioBridge([]), lambda: StdioChild(["x"], generation="future")):
        with pytest.raises(GatewayConfigError):
            bad()
    with pytest.raises(ValueError):  # also what Python raises for a bad argument
        HTTPUpstreamProxy("ftp://x/mcp")


def test_a_child_that_cannot_start_is_a_gateway_error() -> None:
    async def start() -> None:
        await StdioChild(["/nonexistent/mcp-server"]).start()

    with pytest.raises(GatewayError, match="cannot start stdio MCP server"):
        anyio.run(start)


def test_the_protocol_version_of_an_uninitialised_child_is_a_gateway_error() -> None:
    child = StdioChild([sys.executable, "-c", "pass"])
    with pytest.raises(GatewayError, match="not been initialised"):
        _ = child.protocol_version


@pytest.mark.parametrize("extra", [["--upstream", "http://127.0.0.1:1/mcp", "--timeout", "0"],
                                   ["--upstream-stdio", ""], ["--upstream-stdio", "npx 'unbalanced"],
                                   ["--upstream-stdio", "x", "--max-restarts", "-1"],
                                   ["--upstream-stdio", "x", "--start-timeout", "0"]])
def test_a_bad_option_value_is_exit_status_2_not_a_traceback(extra: list[str]) -> None:
    import subprocess

    done = subprocess.run([sys.executable, "-m", "gateway.cli", "--issuer", "http://127.0.0.1:9", "--resource",
                           "http://127.0.0.1:9/mcp", "--port", "1", *extra],
                          check=False, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.startswith("cbst-gateway: error: "), done.stderr
