"""Running the official MCP clients with their OWN OAuth code against the session IdP and MCP server.

Shared by test_client_credentials_providers.py and test_interactive_clients.py: where each client
lives (``mcp`` 2.x in the shared venv, 1.x in ``.venv-mcp1``, fastmcp in ``.venv-fastmcp``, the
TypeScript SDKs and mcp-remote under ``ts/node_modules``), and a runner that speaks the drivers'
line protocol (``py_oauth_driver.py``, ``ts/oauth_driver.mjs``) and answers their ``authorize``
events with a callable (the headless person, see ``headless_login.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from idp_testing import ROOT

HERE = Path(__file__).resolve().parent
TS_DIR = HERE / "ts"
INSTALL_HINT = "install the interop runtimes with `make interop-deps`"
DRIVER_TIMEOUT = 90

#: The Python environments, by name: the interpreter and the ``mcp`` major version it must hold.
PYTHONS: dict[str, tuple[Path, str, str]] = {
    "py2": (Path(sys.executable), "mcp", "2."),
    "py1": (Path(os.environ.get("CBST_MCP1_PYTHON", ROOT / ".venv-mcp1" / "bin" / "python")), "mcp", "1."),
    "fastmcp": (Path(os.environ.get("CBST_FASTMCP_PYTHON", ROOT / ".venv-fastmcp" / "bin" / "python")),
                "fastmcp-slim", "4."),
}


def python_for(name: str) -> Path:
    """The interpreter of one environment, failing (not skipping) with the install hint if it is
    missing or holds the wrong version."""
    python, package, prefix = PYTHONS[name]
    if not python.exists():
        pytest.fail(f"no Python for {name} at {python}; {INSTALL_HINT}")
    probe = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0 or not probe.stdout.startswith(prefix):
        pytest.fail(f"{python} does not have {package} {prefix}x ({probe.stdout.strip() or probe.stderr.strip()}); "
                    f"{INSTALL_HINT}")
    return python


#: Answers an ``authorize`` event: given the authorization URL, the URL the browser ends at.
Authorizer = Callable[[str], str]


@dataclass
class Run:
    events: list[dict[str, Any]]
    stderr: str = ""
    authorizations: list[str] = field(default_factory=list)

    @property
    def results(self) -> dict[str, dict[str, Any]]:
        return {e["id"]: e for e in self.events if "id" in e and "event" not in e}

    def ok(self, op_id: str) -> Any:
        result = self.results.get(op_id)
        assert result is not None and "ok" in result, \
            f"{op_id}: expected success, got {result}\nall: {self.events}\nstderr:\n{self.stderr}"
        return result["ok"]

    def error(self, op_id: str) -> str:
        result = self.results.get(op_id)
        assert result is not None and "error" in result, \
            f"{op_id}: expected a refusal, got {result}\nall: {self.events}"
        return result["error"]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == kind]

    def after(self, op_id: str) -> Run:
        """The events after the result of ``op_id``."""
        for i, e in enumerate(self.events):
            if e.get("id") == op_id and "event" not in e:
                return Run(self.events[i + 1:], self.stderr)
        raise AssertionError(f"no result for {op_id}: {self.events}")

    def before(self, op_id: str) -> Run:
        for i, e in enumerate(self.events):
            if e.get("id") == op_id and "event" not in e:
                return Run(self.events[:i], self.stderr)
        raise AssertionError(f"no result for {op_id}: {self.events}")


def run_driver(cmd: list[str], config: dict[str, Any], authorize: Authorizer | None = None,
               env: dict[str, str] | None = None, timeout: float = DRIVER_TIMEOUT) -> Run:
    errfile = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty driver cannot block on it
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errfile, text=True,
                            env={**os.environ, **(env or {})}, cwd=ROOT)
    assert proc.stdin is not None and proc.stdout is not None
    events: list[dict[str, Any]] = []
    watchdog = threading.Timer(timeout, proc.kill)  # a silent, hung driver is killed too
    watchdog.start()
    try:
        proc.stdin.write(json.dumps(config) + "\n")
        proc.stdin.flush()
        for line in proc.stdout:
            if not line.startswith("{"):
                continue  # stray output from a library
            event = json.loads(line)
            events.append(event)
            kind = event.get("event")
            if kind == "authorize":
                try:
                    if authorize is None:
                        raise AssertionError("the client asked for an authorization nobody expected")
                    answer: dict[str, str] = {"callback": authorize(event["url"])}
                except Exception as exc:  # noqa: BLE001 - the driver reports it; the test sees both
                    answer = {"error": f"{type(exc).__name__}: {exc}"}
                    events.append({"event": "authorize_failed", "error": answer["error"]})
                proc.stdin.write(json.dumps(answer) + "\n")
                proc.stdin.flush()
            elif kind == "paused":
                proc.stdin.write("\n")
                proc.stdin.flush()
            elif kind == "done":
                break
        proc.wait(10)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    errfile.seek(0)
    stderr = errfile.read()[-8000:]
    errfile.close()
    assert events and events[-1].get("event") == "done", \
        f"driver did not finish (killed after {timeout} s?): {events}\nstderr:\n{stderr}"
    assert not any(e.get("event") == "fatal" for e in events), f"driver crashed: {events}\nstderr:\n{stderr}"
    return Run(events, stderr)


def ts_modules(node: str) -> Path:
    """``npm ci`` in tests/interop/ts when its node_modules is missing or older than the lockfile
    (under a file lock, so pytest-xdist workers install once)."""
    import fcntl
    import shutil

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
    for package in ("@modelcontextprotocol/sdk", "@modelcontextprotocol/client", "mcp-remote"):
        if not (TS_DIR / "node_modules" / package / "package.json").exists():
            pytest.fail(f"{package} is missing from {TS_DIR}/node_modules; {INSTALL_HINT}")
    return TS_DIR


def node_path() -> str:
    import shutil

    path = shutil.which("node")
    if path is None:
        pytest.fail(f"node is not on PATH: the TypeScript interop tests need Node >= 20; {INSTALL_HINT}")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        pytest.fail(f"node {version} is too old (@modelcontextprotocol/client 2.x needs >= 20); {INSTALL_HINT}")
    return path


class Clients:
    """``clients.run(name, config, authorize=None)`` for name in py2 | py1 | fastmcp | ts1 | ts2."""

    def __init__(self) -> None:
        self._pythons: dict[str, Path] = {}
        self._node: str | None = None

    def node(self) -> str:
        if self._node is None:
            self._node = node_path()
            ts_modules(self._node)
        return self._node

    def run(self, name: str, config: dict[str, Any], authorize: Authorizer | None = None) -> Run:
        if name in ("ts1", "ts2"):
            return run_driver([self.node(), str(TS_DIR / "oauth_driver.mjs")],
                              {**config, "sdk": "v1" if name == "ts1" else "v2"}, authorize)
        if name not in self._pythons:
            self._pythons[name] = python_for(name)
        config = {**config, "client": "fastmcp" if name == "fastmcp" else "mcp"}
        return run_driver([str(self._pythons[name]), str(HERE / "py_oauth_driver.py")], config, authorize,
                          env={"PYTHONPATH": ""})
