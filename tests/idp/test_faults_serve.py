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


def _start(env: dict[str, str], port: int, log: Path, nofile: int | None = None) -> subprocess.Popen[bytes]:
    import resource

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen([sys.executable, "-m", "idp.cli", "serve", "--port", str(port)], env={**os.environ, **env},
                            cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT, preexec_fn=limit)
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """What the server sends until it closes the connection, and when (``limit`` if it does not)."""
    start = time.monotonic()
    data = b""
    sock.settimeout(0.2)
    while time.monotonic() - start < limit:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - start


def test_half_sent_requests_are_answered_408_and_closed_within_the_read_timeout(tmp_path: Path) -> None:
    port = free_port()
    proc = _start({**base_env(tmp_path), "IDP_REQUEST_READ_TIMEOUT": "2"}, port, tmp_path / "serve.log")
    try:
        partial = {
            "nothing": b"",
            "half the headers": b"POST /token HTTP/1.1\r\nHost: idp\r\nContent-Le",
            "half the body": b"POST /token HTTP/1.1\r\nHost: idp\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                             b"Content-Length: 100\r\n\r\ngrant_type=client_",
            "a second request, half sent": b"GET /healthz HTTP/1.1\r\nHost: idp\r\n\r\nGET /healthz HTTP/1.1\r\nHo",
        }
        socks = {}
        for name, data in partial.items():
            socks[name] = socket.create_connection(("127.0.0.1", port))
            socks[name].sendall(data)
        # A client that sends slowly but within the time is served.
        slow = socket.create_connection(("127.0.0.1", port))
        for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: idp\r\n", b"\r\n"):
            slow.sendall(piece)
            time.sleep(0.4)
        assert _read_until_closed(slow, 1.0)[0].startswith(b"HTTP/1.1 200")
        slow.close()
        for name, sock in socks.items():
            data, took = _read_until_closed(sock, 8.0)
            assert took < 5.0, f"{name}: still open after {took:.1f}s"
            if name != "nothing":
                assert b"408 Request Timeout" in data, (name, data)
            sock.close()
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        _stop(proc)


def test_idle_sockets_from_one_address_do_not_lock_other_clients_out(tmp_path: Path) -> None:
    """Four hundred half-sent requests from one address, against a server allowed 256 open files
    (ulimit -n): a client from another address is still served at once."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'idp.db'}", keys_dir=tmp_path / "keys",
                        keystore_kek=random_kek())
    prov = Provider.open(settings)
    client, secret = register(prov)
    prov.close()
    env = {k: v for k, v in env_for(settings).items() if k != "IDP_ISSUER"}
    port = free_port()
    proc = _start(env, port, tmp_path / "serve.log", nofile=256)
    attackers: list[socket.socket] = []
    try:
        for _ in range(400):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.connect(("127.0.0.1", port))
            s.sendall(b"POST /token HTTP/1.1\r\nHost: idp\r\nContent-Length: 100\r\n")
            attackers.append(s)
        time.sleep(0.5)
        other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=5)
        start = time.monotonic()
        assert other.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        resp = other.post(f"http://127.0.0.1:{port}/token", data={"grant_type": "client_credentials"},
                          auth=(client.client_id, secret))
        assert resp.status_code == 200, resp.text
        assert time.monotonic() - start < 3.0
        other.close()
        # The connections beyond the per-address limit were refused with 503, not held.
        refused = 0
        for s in attackers:
            s.settimeout(0.05)
            try:
                if s.recv(200).startswith(b"HTTP/1.1 503"):
                    refused += 1
            except (socket.timeout, ConnectionResetError):
                pass
        assert refused >= 400 - 64
        assert "Traceback" not in (tmp_path / "serve.log").read_text()
    finally:
        for s in attackers:
            s.close()
        _stop(proc)
