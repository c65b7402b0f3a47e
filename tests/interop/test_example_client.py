"""examples/client.py against examples/server.py and a real IdP: the README's one command works."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from idp_testing import ROOT, free_port

from .conftest import IdP

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def example_server(idp: IdP, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("example") / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / "server.py"), "--issuer", idp.url,
                                 "--port", str(port)], stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"examples/server.py exited:\n{log.read_text()}")
            try:
                httpx.get(f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"examples/server.py did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_client(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "examples" / "client.py"), *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_example_client_calls_the_example_server(idp: IdP, example_server: str, tmp_path: Path, mode: str) -> None:
    client_id, secret = idp.register("demo-client", capabilities="tools/call:echo resources/read:file:///docs/**",
                                     audiences=(example_server,))
    creds = tmp_path / "demo-client.json"
    creds.write_text(json.dumps({"client_id": client_id, "client_secret": secret}))
    done = run_client("--credentials", str(creds), "--issuer", idp.url, "--server", example_server, "--mode", mode,
                      "--read", "file:///docs/readme.md")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "tools: echo\n" in out  # filtered: add, git-status, delete-file are hidden
    assert "tools/call echo: hello from examples/client.py" in out
    assert "resources/read file:///docs/readme.md: # Example" in out
    assert "prompts/list: refused" in out  # no prompts/* capability at all


def test_example_client_refusal_and_step_up(idp: IdP, example_server: str) -> None:
    client_id, secret = idp.register("demo-stepper", capabilities="tools/call:echo tools/call:add",
                                     audiences=(example_server,))
    base = ["--client-id", client_id, "--client-secret", secret or "", "--issuer", idp.url, "--server", example_server]
    done = run_client(*base, "--scope", "tools/call:echo", "--call", "add", '{"a": 2, "b": 40}')
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tools/call add: 42" in done.stdout and "stepped up to scope 'tools/call:echo tools/call:add'" in done.stdout
    done = run_client(*base, "--call", "delete-file", '{"path": "/docs/readme.md"}')
    assert "tools/call delete-file: refused" in done.stdout, done.stdout + done.stderr


def test_example_client_bad_secret_is_a_clear_error(idp: IdP, example_server: str) -> None:
    client_id, _ = idp.register("demo-bad", capabilities="tools/call:echo", audiences=(example_server,))
    done = run_client("--client-id", client_id, "--client-secret", "wrong", "--issuer", idp.url,
                      "--server", example_server)
    assert done.returncode == 1
    assert "no token:" in done.stderr and "invalid_client" in done.stderr
