"""examples/client.py on bad input, a down IdP or a broken MCP server: one line, never a traceback.

(The happy path against examples/server.py: tests/interop/test_example_client.py.)"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from idp_testing import ROOT, ServerProcess, free_port, random_kek, run_cli

pytestmark = pytest.mark.slow


def run_client(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "examples" / "client.py"), *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, check=False)


def one_line(res: subprocess.CompletedProcess[str], expect: str) -> str | None:
    """None if ``res`` failed with one clear line naming ``expect``; else what is wrong."""
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    if res.returncode not in (1, 2) or "Traceback" in res.stdout + res.stderr:
        return f"exit {res.returncode}: {res.stderr[-1500:]}"
    if res.returncode == 1 and len(lines) != 1:
        return f"not one line: {res.stderr[-1500:]}"
    if expect not in res.stderr:
        return f"does not say {expect!r}: {res.stderr[-1500:]}"
    return None


@pytest.fixture
def stub(request: pytest.FixtureRequest) -> Iterator[str]:
    """An HTTP server that answers everything with ``request.param`` = (status, content type, body)."""
    status, ctype, body = request.param

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_bad_input_and_a_down_idp_are_one_line(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"client_id": "c1", "client_secret": "s1"}))
    files = {"not-json.json": "nope", "no-id.json": '{"client_secret": "x"}', "list.json": "[1, 2]",
             "bad-id.json": '{"client_id": 42, "client_secret": "x"}', "pem.txt": "not a PEM key"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there: the IdP is down
    base = ["--issuer", down]
    cases = [
        (["--credentials", str(tmp_path / "missing.json"), *base], "missing.json"),
        (["--credentials", str(tmp_path / "not-json.json"), *base], "not-json.json"),
        (["--credentials", str(tmp_path / "no-id.json"), *base], "client_id"),
        (["--credentials", str(tmp_path / "list.json"), *base], "client_id"),
        (["--credentials", str(tmp_path / "bad-id.json"), *base], "client_id"),
        (["--credentials", str(good), "--issuer", "localhost:8000"], "http(s) URL"),
        (["--credentials", str(good), "--server", "not a url", *base], "not a url"),
        (["--client-id", "c1", "--key-file", str(tmp_path / "missing.pem"), *base], "missing.pem"),
        (["--client-id", "c1", "--key-file", str(tmp_path / "pem.txt"), *base], "pem.txt"),
        (["--credentials", str(good), "--call", "add", "{not json", *base], "ARGS_JSON"),
        (["--credentials", str(good), "--call", "add", "[1]", *base], "ARGS_JSON"),
        (["--credentials", str(good), "--prompt", "summarize", "nope", *base], "ARGS_JSON"),
        (["--credentials", str(good), *base], "cannot reach the IdP"),
        (["--client-id", "c1", *base], "no secret"),
    ]
    problems = [f"{args}: {p}" for args, expect in cases if (p := one_line(run_client(*args), expect))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("stub", [(503, "text/html", b"<h1>503 Service Unavailable</h1>"),
                                  (200, "text/html", b"<html>a login page</html>"),
                                  (200, "application/json", b'{"jsonrpc": "2.0"}')],
                         indirect=True, ids=["503", "html", "junk-json"])
def test_a_broken_mcp_server_is_one_line(tmp_path: Path, stub: str) -> None:
    """A real IdP issues the token; the "MCP server" is down behind a proxy, or not MCP at all."""
    port = free_port()
    env = {"IDP_ISSUER": f"http://127.0.0.1:{port}", "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.db'}",
           "IDP_KEYS_DIR": str(tmp_path / "keys"), "IDP_KEYSTORE_KEK": random_kek(), "IDP_LOG_LEVEL": "warning"}
    server_url = stub + "/mcp"
    added = run_cli("clients", "add", "demo", "--capabilities", "tools/call:echo", "--audience", server_url,
                    "--json", env=env)
    assert added.returncode == 0, added.stderr
    creds = tmp_path / "demo.json"
    creds.write_text(added.stdout)
    idp = ServerProcess(env, port)
    try:
        res = run_client("--credentials", str(creds), "--issuer", idp.url, "--server", server_url)
    finally:
        idp.stop()
    assert "token for" in res.stdout, res.stdout + res.stderr
    problem = one_line(res, server_url)
    assert problem is None, problem
