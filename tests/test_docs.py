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

from idp.config import Settings

from idp_testing import ROOT, free_port

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


def _walkthrough_script(port: int) -> str:
    section = README.split("## Five-minute walkthrough", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert blocks and blocks[0].strip() == "make run", "the walkthrough starts with `make run`"
    return "\n".join(blocks[1:]).replace("127.0.0.1:8000", f"127.0.0.1:{port}")


@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """Every command of the five-minute walkthrough, run by bash against a real `idp serve`."""
    (tmp_path / ".venv").symlink_to(Path(sys.executable).resolve().parent.parent if not (ROOT / ".venv").exists() else ROOT / ".venv")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.update(IDP_ISSUER=f"http://127.0.0.1:{port}", IDP_PORT=str(port), IDP_LOG_LEVEL="warning")
    log = open(tmp_path / "serve.log", "wb")
    server = subprocess.Popen([str(tmp_path / ".venv/bin/idp"), "serve"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            import time

            time.sleep(0.1)
        script = "set -euo pipefail\n" + _walkthrough_script(port)
        done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"walkthrough failed:\nSTDOUT:\n{done.stdout}\nSTDERR:\n{done.stderr}"
        out = done.stdout
        assert '"valid": true' in out  # verified offline by joserfc
        assert '"active":true' in out  # introspection before revocation
        assert '{"active":false}' in out  # and after
        assert "published; signs from" in out  # key rotation
        assert (tmp_path / "idp.db").exists() and (tmp_path / "keys" / "kek").exists()  # embedded defaults
        assert "Traceback" not in done.stderr
    finally:
        server.terminate()
        server.wait(10)
        log.close()
