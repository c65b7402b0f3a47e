"""``idp serve`` under process and network faults, with real processes and real sockets: the
issuer follows the port, a port in use fails before anything is announced, workers die with a
supervisor killed by SIGKILL, and half-sent requests cannot lock other clients out."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from idp.config import Settings
from idp.provider import Provider

from idp_testing import ROOT, ServerProcess, env_for, free_port, random_kek, register, run_cli

pytestmark = pytest.mark.slow


def base_env(tmp_path: Path) -> dict[str, str]:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'idp.db'}", keys_dir=tmp_path / "keys",
                        keystore_kek=random_kek())
    env = env_for(settings)
    del env["IDP_ISSUER"]
    return env


def test_changing_only_the_port_moves_the_default_issuer_with_it(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    for how in ("--port", "IDP_PORT"):
        port = free_port()
        server = ServerProcess({**env, "IDP_PORT": str(port)} if how == "IDP_PORT" else env, port)
        try:
            meta = httpx.get(server.url + "/.well-known/oauth-authorization-server", timeout=10).json()
            assert meta["issuer"] == f"http://127.0.0.1:{port}", how
            assert meta["token_endpoint"] == f"http://127.0.0.1:{port}/token"
        finally:
            server.stop()
    shown = run_cli("config", "show", "--json", env={**env, "IDP_PORT": "9123"})
    assert '"issuer": "http://127.0.0.1:9123"' in shown.stdout, shown.stdout + shown.stderr


def test_an_explicit_loopback_issuer_on_another_port_is_warned_about(tmp_path: Path) -> None:
    port = free_port()
    server = ServerProcess({**base_env(tmp_path), "IDP_ISSUER": "http://127.0.0.1:8000"}, port)
    try:
        assert httpx.get(server.url + "/.well-known/oauth-authorization-server").json()["issuer"] == "http://127.0.0.1:8000"
    finally:
        server.stop()
    assert "warning: the issuer http://127.0.0.1:8000 is not where this server listens" in server.log.read_text()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_fails_with_one_line_before_anything_is_announced(tmp_path: Path, workers: str) -> None:
    env = {**base_env(tmp_path), "IDP_LOG_LEVEL": "info"}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = run_cli("serve", "--port", str(port), "--workers", workers, env=env, timeout=60)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    errors = [line for line in out.splitlines() if "error" in line.lower()]
    assert errors == [f"error: cannot listen on 127.0.0.1:{port}: address already in use"], out
    for announced in ("startup complete", "listening on", "Uvicorn running", "idp started", "Traceback"):
        assert announced not in out, out


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_exit_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'idp.db'}", keys_dir=tmp_path / "keys",
                        keystore_kek=random_kek())
    prov = Provider.open(settings)
    client, secret = register(prov)
    prov.close()
    port = free_port()
    server = ServerProcess(env_for(settings), port, workers=2)
    try:
        deadline = time.monotonic() + 20
        while len(workers := [p for p in _children(server.proc.pid) if _alive(p)]) < 2:
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.1)
        resp = httpx.post(server.url + "/token", data={"grant_type": "client_credentials"},
                          auth=(client.client_id, secret), timeout=10)
        assert resp.status_code == 200
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in workers):
            assert time.monotonic() < deadline, f"workers {[p for p in workers if _alive(p)]} outlived the supervisor"
            time.sleep(0.1)
        with pytest.raises(httpx.ConnectError):  # nobody holds the port any more
            httpx.get(server.url + "/healthz", timeout=2)
    finally:
        for pid in _children(server.proc.pid) + [p for p in locals().get("workers", []) if _alive(p)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        server.stop()


def test_a_single_process_server_does_not_die_with_its_parent(tmp_path: Path) -> None:
    """Without --workers there is no supervisor: the server outlives the shell that started it."""
    env = {**os.environ, **base_env(tmp_path)}
    port = free_port()
    log = tmp_path / "serve.log"
    launcher = subprocess.Popen(  # a parent that starts `idp serve` and exits at once
        [sys.executable, "-c", "import subprocess, sys; print(subprocess.Popen(sys.argv[1:], stdout=sys.stderr).pid)",
         sys.executable, "-m", "idp.cli", "serve", "--port", str(port)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True)
    pid = int(launcher.communicate(timeout=30)[0])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and _alive(pid), log.read_text()
            time.sleep(0.1)
        time.sleep(1.5)
        assert _alive(pid)
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
