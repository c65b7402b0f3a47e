"""End to end: a real IdP, a real MCP server (official SDK + CBSTMiddleware), the official clients.

Clients: Python ``mcp`` 2.x in-process in ``mode="auto"`` (2026-07-28 generation) and
``mode="legacy"`` (handshake generation), Python ``mcp`` 1.x in its own virtualenv
(``.venv-mcp1``; a subprocess), and the TypeScript ``@modelcontextprotocol/sdk`` run with the
machine's Node (a subprocess). Each runs the same operations (``py_driver.py`` /
``ts/driver.mjs`` protocol) and must see the same outcome: allowed calls succeed, disallowed
ones are refused, lists are filtered, a token for another audience is refused, and a revoked
token stops working within the server's revocation bound.

Missing runtimes fail the tests with the command that installs them (``make interop-deps``):
nothing here is skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from idp_testing import ROOT
from sdk.client import ClientCredentials

from . import py_driver
from .conftest import HERE, REVOCATION_POLL, IdP, McpServer, claims_of

pytestmark = pytest.mark.slow

TS_DIR = HERE / "ts"
MCP1_PYTHON = Path(os.environ.get("CBST_MCP1_PYTHON", ROOT / ".venv-mcp1" / "bin" / "python"))
INSTALL_HINT = "install the interop runtimes with `make interop-deps`"
OTHER_AUDIENCE = "http://127.0.0.1:9/other-mcp"
MODERN = "2026-07-28"
#: A revoked token must be refused within the server's poll interval plus one fetch of the list
#: (docs/sdk-server.md); the fetch is given generous time, as the machine may be loaded.
REVOCATION_BOUND = REVOCATION_POLL + 4.0
DRIVER_TIMEOUT = 60

CAPABILITIES = "tools/call:echo resources/read:file:///docs/** prompts/get:summarize"

OPS: list[dict[str, Any]] = [
    {"id": "list_tools", "op": "list_tools"},
    {"id": "echo", "op": "call_tool", "name": "echo", "arguments": {"text": "hi"}},
    {"id": "delete", "op": "call_tool", "name": "delete-file", "arguments": {"path": "/etc/passwd"}},
    {"id": "add", "op": "call_tool", "name": "add", "arguments": {"a": 1, "b": 2}},
    {"id": "list_resources", "op": "list_resources"},
    {"id": "read_doc", "op": "read_resource", "uri": "file:///docs/a.md"},
    {"id": "read_private", "op": "read_resource", "uri": "file:///private/secret.txt"},
    {"id": "read_escape", "op": "read_resource", "uri": "file:///docs/../private/secret.txt"},
    {"id": "list_prompts", "op": "list_prompts"},
    {"id": "prompt", "op": "get_prompt", "name": "summarize", "arguments": {"text": "t"}},
    {"id": "prompt_denied", "op": "get_prompt", "name": "internal"},
]
ALLOWED = {
    "list_tools": ["echo"],  # add and delete-file are filtered out
    "echo": {"text": "echo: hi", "is_error": False},
    "list_resources": ["file:///docs/a.md", "file:///docs/b.md"],  # not file:///private/...
    "read_doc": "document A",
    "list_prompts": ["summarize"],
    "prompt": "Summarize: t",
}
REFUSED = ("delete", "add", "read_private", "read_escape", "prompt_denied")

DRIVERS = ["py2-auto", "py2-legacy", "py1", "ts"]


def ops_for(kind: str) -> list[dict[str, Any]]:
    """The scenario for one client. The Python 1.x client ends its session on any HTTP error
    status (its transport raises ``HTTPStatusError`` in its task group), so it runs each refused
    operation in a session of its own; the others run everything in one session, which must
    survive the refusals."""
    if kind != "py1":
        return OPS
    ops = [op for op in OPS if op["id"] not in REFUSED]
    for op in OPS:
        if op["id"] in REFUSED:
            ops += [{"id": f"connect-{op['id']}", "op": "reconnect"}, op]
    return ops


# --- runtimes ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail(f"node is not on PATH: the TypeScript interop tests need Node >= 18; {INSTALL_HINT}")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 18:
        pytest.fail(f"node {version} is too old (need >= 18); {INSTALL_HINT}")
    return path


@pytest.fixture(scope="session")
def ts_sdk(node: str) -> Path:
    """``npm ci`` in tests/interop/ts when its node_modules is missing or older than the lockfile
    (under a file lock, so pytest-xdist workers install once)."""
    import fcntl

    installed = TS_DIR / "node_modules" / ".package-lock.json"
    with open(TS_DIR / ".npm-ci.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not installed.exists() or installed.stat().st_mtime < (TS_DIR / "package-lock.json").stat().st_mtime:
            npm = shutil.which("npm")
            if npm is None:
                pytest.fail(f"npm is not on PATH, and tests/interop/ts/node_modules is missing; {INSTALL_HINT}")
            done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=TS_DIR, capture_output=True,
                                  text=True, timeout=300)
            if done.returncode != 0:
                pytest.fail(f"`npm ci` in {TS_DIR} failed:\n{done.stdout}\n{done.stderr}")
    return TS_DIR / "driver.mjs"


@pytest.fixture(scope="session")
def mcp1_python() -> Path:
    if not MCP1_PYTHON.exists():
        pytest.fail(f"no Python with mcp 1.x at {MCP1_PYTHON} (set CBST_MCP1_PYTHON to use another); {INSTALL_HINT}")
    probe = subprocess.run([str(MCP1_PYTHON), "-c", "import importlib.metadata as m; print(m.version('mcp'))"],
                           capture_output=True, text=True)
    if probe.returncode != 0 or not probe.stdout.startswith("1."):
        found = probe.stdout.strip() or probe.stderr.strip()
        pytest.fail(f"{MCP1_PYTHON} does not have mcp 1.x ({found}); {INSTALL_HINT}")
    return MCP1_PYTHON


# --- running a driver ----------------------------------------------------------------------------

OnPause = Callable[[list[dict[str, Any]]], None]


@dataclass
class Run:
    events: list[dict[str, Any]]

    @property
    def results(self) -> dict[str, dict[str, Any]]:
        return {e["id"]: e for e in self.events if "id" in e}

    def ok(self, op_id: str) -> Any:
        result = self.results.get(op_id)
        assert result is not None and "ok" in result, f"{op_id}: expected success, got {result}\nall: {self.events}"
        return result["ok"]

    def error(self, op_id: str) -> str:
        result = self.results.get(op_id)
        assert result is not None and "error" in result, \
            f"{op_id}: expected a refusal, got {result}\nall: {self.events}"
        return result["error"]


def run_subprocess(cmd: list[str], config: dict[str, Any], on_pause: OnPause | None = None,
                   env: dict[str, str] | None = None) -> Run:
    errfile = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty driver cannot block on it
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errfile, text=True,
                            env={**os.environ, **(env or {})}, cwd=ROOT)
    assert proc.stdin is not None and proc.stdout is not None
    events: list[dict[str, Any]] = []
    watchdog = threading.Timer(DRIVER_TIMEOUT, proc.kill)  # a silent, hung driver is killed too
    watchdog.start()
    try:
        proc.stdin.write(json.dumps(config) + "\n")
        proc.stdin.flush()
        for line in proc.stdout:
            if not line.startswith("{"):
                continue  # stray output from a library
            event = json.loads(line)
            events.append(event)
            if event.get("event") == "paused":
                if on_pause is not None:
                    on_pause(events)
                proc.stdin.write("\n")
                proc.stdin.flush()
            if event.get("event") == "done":
                break
        proc.wait(10)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    errfile.seek(0)
    stderr = errfile.read()[-5000:]
    errfile.close()
    assert events and events[-1].get("event") == "done", \
        f"driver did not finish (killed after {DRIVER_TIMEOUT} s?): {events}\nstderr:\n{stderr}"
    assert not any(e.get("event") == "fatal" for e in events), f"driver crashed: {events}\nstderr:\n{stderr}"
    return Run(events)


def run_py2(config: dict[str, Any], on_pause: OnPause | None = None, credentials: Any = None) -> Run:
    events: list[dict[str, Any]] = []

    async def pause() -> None:
        if on_pause is not None:
            await asyncio.to_thread(on_pause, events)

    asyncio.run(py_driver.run(config, events.append, pause, credentials=credentials))
    return Run(events)


@pytest.fixture
def drive(request: pytest.FixtureRequest, mcp_server: McpServer) -> Callable[..., Run]:
    """``drive(kind, auth, ops, on_pause=None)``: run ops with the client ``kind`` (one of DRIVERS)."""

    def run(kind: str, auth: dict[str, Any], ops: list[dict[str, Any]], on_pause: OnPause | None = None) -> Run:
        config = {"url": mcp_server.url, "auth": auth, "ops": ops}
        if kind.startswith("py2-"):
            return run_py2({**config, "mode": kind.removeprefix("py2-")}, on_pause)
        if kind == "py1":
            python = request.getfixturevalue("mcp1_python")
            return run_subprocess([str(python), str(HERE / "py_driver.py")], config, on_pause,
                                  env={"PYTHONPATH": str(ROOT)})
        assert kind == "ts"
        driver = request.getfixturevalue("ts_sdk")
        return run_subprocess([request.getfixturevalue("node"), str(driver)], config, on_pause)

    return run


@pytest.fixture(scope="module")
def limited(idp: IdP, mcp_server: McpServer) -> dict[str, Any]:
    """A client allowed echo, the docs and the summarize prompt, for this server and another."""
    client_id, secret = idp.register("interop-limited", capabilities=CAPABILITIES,
                                     audiences=(mcp_server.url, OTHER_AUDIENCE))
    return {"issuer": idp.url, "client_id": client_id, "client_secret": secret, "resource": mcp_server.url}


def assert_forbidden(message: str) -> None:
    """A capability refusal: the 2.x client shows the JSON-RPC error of the 403, the 1.x and TS
    clients the HTTP status."""
    assert "does not allow" in message or "403" in message, message


# --- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", DRIVERS)
def test_capabilities_are_enforced_and_lists_filtered(drive: Any, limited: dict[str, Any], kind: str) -> None:
    run = drive(kind, limited, ops_for(kind))
    version = run.ok("connect")["protocol_version"]
    if kind == "py2-auto":
        assert version == MODERN  # the 2026-07-28 generation: server/discover, no session
    else:
        assert version and version < MODERN  # the handshake generation
    for op_id, expected in ALLOWED.items():
        assert run.ok(op_id) == expected, op_id
    for op_id in REFUSED:
        assert_forbidden(run.error(op_id))


@pytest.mark.parametrize("kind", DRIVERS)
def test_a_token_for_another_audience_is_refused(drive: Any, limited: dict[str, Any], kind: str) -> None:
    run = drive(kind, {**limited, "resource": OTHER_AUDIENCE}, OPS[:2])
    message = run.error("connect")
    assert "401" in message or "nauthorized" in message or "(aud)" in message, message
    assert "ok" not in run.results.get("echo", {})


def wait_until_refused(url: str, token: str, since: float) -> float:
    """Poll the server with ``token`` until it answers 401; the seconds since ``since``.
    Fails if that takes longer than REVOCATION_BOUND."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    while True:
        status = httpx.post(url, headers=headers, json=body, timeout=10).status_code
        elapsed = time.monotonic() - since
        if status == 401:
            return elapsed
        assert elapsed < REVOCATION_BOUND, f"revoked token still accepted after {elapsed:.1f} s (HTTP {status})"
        time.sleep(0.1)


def _revoke_via_cli(idp: IdP, token: str) -> None:
    idp.revoke_cli(claims_of(token)["jti"])


def _revoke_via_endpoint(idp: IdP, auth: dict[str, Any], token: str) -> None:
    """RFC 7009: the client revokes its own token at the IdP's revocation endpoint."""
    r = httpx.post(f"{idp.url}/revoke", data={"token": token}, auth=(auth["client_id"], auth["client_secret"]))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("kind", DRIVERS)
def test_a_revoked_token_stops_working_within_the_bound(drive: Any, idp: IdP, limited: dict[str, Any],
                                                        kind: str) -> None:
    ops = [{"id": "before", "op": "call_tool", "name": "echo", "arguments": {"text": "1"}}, {"op": "pause"},
           {"id": "after", "op": "call_tool", "name": "echo", "arguments": {"text": "2"}}]
    revoked_at: list[float] = []
    if kind == "ts":  # the TS driver fetches its own token; it reports it, and we revoke it at /revoke
        auth = {**limited, "scope": "tools/call:echo"}

        def on_pause(events: list[dict[str, Any]]) -> None:
            token = next(e["token"] for e in events if e.get("event") == "token")
            t0 = time.monotonic()
            _revoke_via_endpoint(idp, limited, token)
            revoked_at.append(wait_until_refused(limited["resource"], token, t0))
    else:  # a fixed token, revoked by the admin CLI
        token = ClientCredentials(limited["issuer"], limited["client_id"], client_secret=limited["client_secret"],
                                  scope="tools/call:echo", resource=limited["resource"]).get_token().value
        auth = {"token": token}

        def on_pause(events: list[dict[str, Any]]) -> None:
            t0 = time.monotonic()
            _revoke_via_cli(idp, token)
            revoked_at.append(wait_until_refused(limited["resource"], token, t0))

    run = drive(kind, auth, ops, on_pause)
    assert run.ok("before") == {"text": "echo: 1", "is_error": False}
    assert revoked_at, "the driver never paused"
    message = run.error("after")
    assert "401" in message or "nauthorized" in message or "revoked" in message, message


def test_client_credentials_replace_a_revoked_token(idp: IdP, mcp_server: McpServer, limited: dict[str, Any]) -> None:
    """Revoking a token does not lock the client out: ClientCredentials gets a new one (the old
    one stays refused)."""
    creds = ClientCredentials(limited["issuer"], limited["client_id"], client_secret=limited["client_secret"],
                              scope="tools/call:echo", resource=mcp_server.url)
    old: list[str] = []

    def on_pause(events: list[dict[str, Any]]) -> None:
        assert creds.token is not None
        old.append(creds.token.value)
        t0 = time.monotonic()
        _revoke_via_cli(idp, old[0])
        wait_until_refused(mcp_server.url, old[0], t0)

    ops = [{"id": "before", "op": "call_tool", "name": "echo", "arguments": {"text": "1"}}, {"op": "pause"},
           {"id": "after", "op": "call_tool", "name": "echo", "arguments": {"text": "2"}}]
    run = run_py2({"url": mcp_server.url, "mode": "legacy", "auth": limited, "ops": ops}, on_pause, credentials=creds)
    assert run.ok("after") == {"text": "echo: 2", "is_error": False}
    assert creds.token_requests == 2 and creds.token is not None and creds.token.value != old[0]
    headers = {"Authorization": f"Bearer {old[0]}", "Accept": "application/json, text/event-stream"}
    probe = httpx.post(mcp_server.url, headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert probe.status_code == 401, probe.text


@pytest.mark.parametrize("kind", ["py2-auto", "py2-legacy", "py1"])
def test_step_up_through_the_mcp_client(drive: Any, idp: IdP, mcp_server: McpServer, kind: str) -> None:
    """The client asks for tools/call:echo only; calling add draws a 403 insufficient_scope and
    ClientCredentials steps up to the union (the client is registered for add too)."""
    client_id, secret = idp.register("interop-stepper", capabilities="tools/call:echo tools/call:add",
                                     audiences=(mcp_server.url,))
    auth = {"issuer": idp.url, "client_id": client_id, "client_secret": secret, "scope": "tools/call:echo",
            "resource": mcp_server.url}
    ops = [{"id": "tools_before", "op": "list_tools"},
           {"id": "add", "op": "call_tool", "name": "add", "arguments": {"a": 2, "b": 3}},
           {"id": "tools_after", "op": "list_tools"},
           {"id": "delete", "op": "call_tool", "name": "delete-file", "arguments": {"path": "/x"}}]
    run = drive(kind, auth, ops)
    assert run.ok("tools_before") == ["echo"]
    assert run.ok("add") == {"text": "5", "is_error": False}
    assert run.ok("tools_after") == ["add", "echo"]
    assert_forbidden(run.error("delete"))  # beyond the registration: the IdP refuses the step-up


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_private_key_jwt_client_through_the_mcp_2x_client(idp: IdP, mcp_server: McpServer, mode: str) -> None:
    from sdk.jws import PrivateKey

    key = PrivateKey.generate("ES256")
    jwks = ClientCredentials(idp.url, "unused", private_key=key).public_jwks()
    client_id, _ = idp.register("interop-pkjwt", capabilities=CAPABILITIES, audiences=(mcp_server.url,),
                                auth_method="private_key_jwt", jwks=jwks)
    creds = ClientCredentials(idp.url, client_id, private_key=key, scope="tools/call:echo", resource=mcp_server.url)
    ops = [{"id": "list_tools", "op": "list_tools"}, OPS[1], {"id": "read_doc", "op": "read_resource",
                                                              "uri": "file:///docs/a.md"}]
    run = run_py2({"url": mcp_server.url, "mode": mode, "auth": {}, "ops": ops}, credentials=creds)
    assert run.ok("list_tools") == ["echo"]
    assert run.ok("echo") == {"text": "echo: hi", "is_error": False}
    assert run.ok("read_doc") == "document A"  # stepped up: the registration allows the docs
    # The server challenges for exactly what the request needs; the IdP grants it (it is under
    # the registered resources/read:file:///docs/**).
    assert creds.scope == "tools/call:echo resources/read:file:///docs/a.md" and creds.token_requests == 2
