"""The documentation stays true to the code: the README walkthrough runs as written, and the
reference pages name every setting and command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from idp_testing import ROOT, free_port

from idp.config import Settings

README = (ROOT / "README.md").read_text()


def test_configuration_reference_lists_every_setting() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    missing = [name for name in Settings.model_fields if f"`IDP_{name.upper()}`" not in doc]
    assert not missing, f"docs/configuration.md does not document: {missing}"


def test_cli_reference_lists_every_command() -> None:
    from typer.main import get_command

    from idp.cli import app

    doc = (ROOT / "docs" / "cli.md").read_text()
    root = get_command(app)
    names = []
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        subs = getattr(cmd, "commands", None)
        names.extend([f"idp {name} {sub}" for sub in subs] if subs else [f"idp {name}"])
    missing = [n for n in names if n not in doc]
    assert not missing, f"docs/cli.md does not document: {missing}"


def _section(title: str) -> str:
    return README.split(f"\n## {title}", 1)[1].split("\n## ", 1)[0]


def _sh_blocks(section: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


# Between step 4 and step 5 of the walkthrough another client gets a token, as happens on a live
# IdP: step 5 must revoke the walkthrough's own $TOKEN, not whichever token was issued last.
_OTHER_CLIENT = """
.venv/bin/idp clients add other-agent --capabilities "tools/call:*" --audience https://mcp.example.test/mcp --json > other.json
curl -sf -u "$(.venv/bin/python -c 'import json; d = json.load(open("other.json")); print(d["client_id"] + ":" + d["client_secret"])')" \
    -d grant_type=client_credentials -d scope=tools/call:x -d resource=https://mcp.example.test/mcp \
    http://127.0.0.1:8000/token > /dev/null
"""


def _walkthrough_script(port: int) -> str:
    blocks = _sh_blocks(_section("Five-minute walkthrough"))
    assert blocks and blocks[0].strip() == "make run", "the walkthrough starts with `make run`"
    steps = [_OTHER_CLIENT + block if "tokens revoke" in block else block for block in blocks[1:]]
    assert any(_OTHER_CLIENT in step for step in steps), "step 5 revokes a token with `idp tokens revoke`"
    return "\n".join(steps).replace("127.0.0.1:8000", f"127.0.0.1:{port}")


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited ({proc.returncode}):\n{log.read_text(errors='replace')}"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered 200:\n{log.read_text(errors='replace')}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _filesystem_server_modules() -> Path:
    """``tests/gateway/npm/node_modules`` (``npm ci`` from its lockfile when missing): what the
    README's ``npx -y @modelcontextprotocol/server-filesystem`` finds locally, offline."""
    npm_dir = ROOT / "tests" / "gateway" / "npm"
    modules = npm_dir / "node_modules"
    if not (modules / "@modelcontextprotocol" / "server-filesystem").exists():
        import shutil

        npm = shutil.which("npm")
        assert npm, "npm is needed to run the README's gateway command (Node 18+)"
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefix", str(npm_dir)],
                              check=False, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return modules


@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """Every command of the README, run by bash against a real `idp serve`, from a folder that
    looks like the checkout after `make run`: the five-minute walkthrough, then the example
    server and client, then the gateway around the npm filesystem server."""
    import shutil

    venv = ROOT / ".venv" if (ROOT / ".venv").exists() else Path(sys.prefix)  # the venv running the tests
    (tmp_path / ".venv").symlink_to(venv)
    for name in ("examples", "docs"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "node_modules").symlink_to(_filesystem_server_modules())
    port, server_port, gateway_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDP_", "CBST_"))}
    env.update(IDP_ISSUER=f"http://127.0.0.1:{port}", IDP_PORT=str(port), IDP_LOG_LEVEL="warning",
               # examples/client.py's defaults name the README's ports; here they are free ones
               CBST_ISSUER=f"http://127.0.0.1:{port}", CBST_SERVER=f"http://127.0.0.1:{server_port}/mcp")
    env["PATH"] = f"{tmp_path / 'node_modules' / '.bin'}:{env.get('PATH', '')}"
    assert shutil.which("npx", path=env["PATH"]), "npx is needed to run the README's gateway command"

    def ports(text: str) -> str:
        return (text.replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace("9000", str(server_port))
                .replace("8080", str(gateway_port)))

    def background(command: str, name: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"{name}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(["bash", "-c", f"set -euo pipefail\nexec {ports(command).strip()}"],
                                    cwd=tmp_path, env=env, stdout=fh, stderr=subprocess.STDOUT)
        started.append(proc)
        return proc, log

    started: list[subprocess.Popen[bytes]] = []
    try:
        idp, log = background(".venv/bin/idp serve", "serve")
        _wait_http(f"http://127.0.0.1:{port}/healthz", idp, log)

        script = "set -euo pipefail\n" + _walkthrough_script(port)
        done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, check=False, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"walkthrough failed:\nSTDOUT:\n{done.stdout}\nSTDERR:\n{done.stderr}"
        out = done.stdout
        assert '"valid": true' in out  # verified offline by joserfc
        assert '"active":true' in out  # introspection before revocation
        assert '{"active":false}' in out  # and after: $TOKEN itself was revoked
        assert "published; signs from" in out  # key rotation
        assert (tmp_path / "idp.db").exists() and (tmp_path / "keys" / "kek").exists()  # embedded defaults
        assert "Traceback" not in done.stderr

        server_cmd, client_cmds, gateway_cmd = _sh_blocks(_section("Protect an MCP server, call it with a token"))
        assert "examples/server.py" in server_cmd and "cbst-gateway" in gateway_cmd
        server, log = background(server_cmd, "example-server")
        _wait_http(f"http://127.0.0.1:{server_port}/.well-known/oauth-protected-resource/mcp", server, log)
        done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + ports(client_cmds)], cwd=tmp_path, env=env,
                              check=False, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"example client failed:\nSTDOUT:\n{done.stdout}\nSTDERR:\n{done.stderr}"
        assert "echo" in done.stdout, done.stdout  # it listed the tools its token allows

        for command in re.findall(r"\bnpx\b[^\n\"]*", README):  # a first run must not stop at npx's prompt
            assert re.match(r"npx (-y|--yes)\b", command), f"README: {command!r} lacks -y"
        gateway, log = background(gateway_cmd.replace("\\\n", " "), "gateway")
        # 200 once the stdio server has answered initialize: the command and its folder are real
        _wait_http(f"http://127.0.0.1:{gateway_port}/healthz", gateway, log)
    finally:
        for proc in reversed(started):
            _stop(proc)


def test_make_run_installs_what_the_readme_runs() -> None:
    """`make run` (the README's first command) installs the `mcp` that examples/server.py needs:
    the 2.x line (``mcp.server.mcpserver``); 1.x, as in the interop venv, cannot run it."""
    import importlib.metadata
    import tomllib

    from packaging.requirements import Requirement

    dry = subprocess.run(["make", "-n", "-B", "run"], cwd=ROOT, check=False, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    installs = [line for line in dry.stdout.splitlines() if "pip install" in line and " -e " in line]
    assert installs, dry.stdout
    target = re.search(r"-e\s+'?(\.(\[[^\]']*\])?)", installs[-1])
    assert target, installs
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})

    def requirements(names: set[str]) -> list[Requirement]:
        out = [Requirement(r) for r in project["dependencies"]]
        todo, seen = list(names), set()
        while todo:
            extra = todo.pop()
            if extra in seen:
                continue
            seen.add(extra)
            for raw in extras.get(extra, []):
                req = Requirement(raw)
                if req.name == project["name"]:
                    todo.extend(req.extras)
                else:
                    out.append(req)
        return out

    named = set((target.group(2) or "[]").strip("[]").split(",")) - {""}
    mcp = [r for r in requirements(named) if r.name == "mcp"]
    assert mcp, f"`make run` ({installs[-1].strip()}) does not install mcp, which examples/server.py imports"
    assert "from mcp.server.mcpserver import" in (ROOT / "examples" / "server.py").read_text()
    installed = importlib.metadata.version("mcp")
    assert installed.startswith("2.") and mcp[0].specifier.contains(installed), (mcp[0], installed)
    for too_old in ("1.10.0", "1.30.0"):
        assert not mcp[0].specifier.contains(too_old), f"{mcp[0]} admits mcp {too_old}, which the example cannot run on"


def test_example_server_exposes_in_session_denials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's advice for mcp 1.x clients (`--in-session-denials jsonrpc`) is an option of
    examples/server.py, also as CBST_IN_SESSION_DENIALS, and reaches its ProtectionConfig."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cbst_example_server", ROOT / "examples" / "server.py")
    assert spec and spec.loader
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert "--in-session-denials jsonrpc" in README
    assert example.build_config(example.parse_args([])).in_session_denials == "http"
    assert example.build_config(example.parse_args(["--in-session-denials", "jsonrpc"])).in_session_denials == "jsonrpc"
    monkeypatch.setenv("CBST_IN_SESSION_DENIALS", "jsonrpc")
    assert example.build_config(example.parse_args([])).in_session_denials == "jsonrpc"
    with pytest.raises(SystemExit) as bad:
        example.parse_args(["--in-session-denials", "silent"])
    assert bad.value.code == 2
