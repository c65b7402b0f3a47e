"""Two things of the gateway as shipped (a real ``cbst-gateway`` process):

- ``GET /healthz`` answers without a token, so it says whether the gateway can serve and
  nothing else: not the upstream's address, not the stdio command line or its pid.
- ``--in-session-denials jsonrpc`` (or ``CBST_GATEWAY_IN_SESSION_DENIALS=jsonrpc``): a denied
  request inside a session is HTTP 200 with the JSON-RPC error, so the mcp 1.x Python client
  (which ends its session on any HTTP error status) goes on with its session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import IdP, free_port, stdio_test_command

pytestmark = pytest.mark.slow  # real cbst-gateway and idp processes

ROOT = Path(__file__).resolve().parents[2]
MCP1_PYTHON = Path(os.environ.get("CBST_MCP1_PYTHON", ROOT / ".venv-mcp1" / "bin" / "python"))
PY_DRIVER = ROOT / "tests" / "interop" / "py_driver.py"
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}


def _start(gateway_process: Any, idp: IdP, *args: str, **kw: Any) -> tuple[Any, str]:
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    gw = gateway_process("--issuer", idp.url, "--resource", resource, "--tool-rate", "1000",
                         "--log-level", "warning", *args, port=port, **kw)
    return gw, resource


@pytest.mark.parametrize("mode", ["http", "stdio"])
def test_healthz_tells_no_internals(idp: IdP, gateway_process: Any, http_upstream: tuple[str, Any],
                                    mode: str) -> None:
    command = " ".join(stdio_test_command())
    upstream = ["--upstream", http_upstream[0]] if mode == "http" else ["--upstream-stdio", command]
    gw, _ = _start(gateway_process, idp, *upstream)
    health = httpx.get(gw.url + "/healthz")  # no token
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    text = health.text
    for secret in (http_upstream[0], "127.0.0.1", command, sys.executable, "upstream_servers", "pid"):
        assert secret not in text, f"/healthz discloses {secret!r}: {text}"


def _mcp1() -> Path:
    probe = subprocess.run([str(MCP1_PYTHON), "-c", "import importlib.metadata as m; print(m.version('mcp'))"],
                           check=False, capture_output=True, text=True) if MCP1_PYTHON.exists() else None
    if probe is None or probe.returncode != 0 or not probe.stdout.startswith("1."):
        pytest.fail(f"no Python with mcp 1.x at {MCP1_PYTHON} (`make interop-deps` creates it, or set "
                    "CBST_MCP1_PYTHON)")
    return MCP1_PYTHON


def _drive_mcp1(url: str, token: str) -> dict[str, Any]:
    ops = [{"id": "before", "op": "call_tool", "name": "echo", "arguments": {"text": "a"}},
           {"id": "denied", "op": "call_tool", "name": "crash", "arguments": {}},
           {"id": "after", "op": "call_tool", "name": "echo", "arguments": {"text": "b"}}]
    config = {"url": url, "mode": "legacy", "auth": {"token": token}, "ops": ops}
    done = subprocess.run([str(_mcp1()), str(PY_DRIVER)], input=json.dumps(config) + "\n", check=False, capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {e["id"]: e for e in events if "id" in e}


@pytest.mark.parametrize("how", ["flag", "env"])
def test_in_session_denials_jsonrpc_keeps_a_1x_client_session(idp: IdP, gateway_process: Any, how: str) -> None:
    command = " ".join(stdio_test_command())
    if how == "flag":
        _, url = _start(gateway_process, idp, "--upstream-stdio", command, "--in-session-denials", "jsonrpc")
    else:
        _, url = _start(gateway_process, idp, "--upstream-stdio", command,
                        env={"CBST_GATEWAY_IN_SESSION_DENIALS": "jsonrpc"})
    token = idp.token("tools/call:echo", url)
    results = _drive_mcp1(url, token)
    assert results["before"].get("ok", {}).get("text", "").startswith("a (pid "), results
    assert "error" in results["denied"] and "crash" in results["denied"]["error"], results
    assert results["after"].get("ok", {}).get("text", "").startswith("b (pid "), results

    # on the wire: HTTP 200 carrying only the JSON-RPC error (-32003), and the crash tool never ran
    auth = {**HEADERS, "authorization": f"Bearer {token}"}
    sid = httpx.post(url, json=INIT, headers=auth).headers["mcp-session-id"]
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "crash", "arguments": {}}}
    denied = httpx.post(url, json=call, headers={**auth, "mcp-session-id": sid, "mcp-protocol-version": "2025-06-18"})
    assert denied.status_code == 200 and denied.json()["error"]["code"] == -32003


def test_in_session_denials_default_is_http_403(idp: IdP, gateway_process: Any) -> None:
    _, url = _start(gateway_process, idp, "--upstream-stdio", " ".join(stdio_test_command()))
    token = idp.token("tools/call:echo", url)
    auth = {**HEADERS, "authorization": f"Bearer {token}"}
    sid = httpx.post(url, json=INIT, headers=auth).headers["mcp-session-id"]
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "crash", "arguments": {}}}
    denied = httpx.post(url, json=call, headers={**auth, "mcp-session-id": sid, "mcp-protocol-version": "2025-06-18"})
    assert denied.status_code == 403 and 'error="insufficient_scope"' in denied.headers["www-authenticate"]


def test_a_bad_in_session_denials_value_is_exit_status_2() -> None:
    for args, env in ((["--in-session-denials", "silent"], {}), ([], {"CBST_GATEWAY_IN_SESSION_DENIALS": "silent"})):
        done = subprocess.run([sys.executable, "-m", "gateway.cli", "--issuer", "http://127.0.0.1:9", "--resource",
                               "http://127.0.0.1:9/mcp", "--port", "1", "--upstream", "http://127.0.0.1:1/mcp", *args],
                              check=False, capture_output=True, text=True, timeout=30, env={**os.environ, **env})
        assert done.returncode == 2 and "in-session-denials" in done.stderr.lower().replace("_", "-"), done.stderr
