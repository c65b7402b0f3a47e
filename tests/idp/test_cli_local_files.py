"""Local files of the IdP: private whatever the umask, and a full disk is a clean one-line error
that leaves the database as it was. Run through the real ``idp`` CLI and ``Provider.open``."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from idp_testing import AUDIENCE, ISSUER, ROOT, random_kek, register

from idp.config import Settings
from idp.provider import Provider

pytestmark = pytest.mark.slow


def run(args: list[str], env: dict[str, str], umask: int | None = None) -> subprocess.CompletedProcess[str]:
    def preexec() -> None:
        if umask is not None:
            os.umask(umask)

    return subprocess.run([sys.executable, *args], env={**os.environ, **env}, capture_output=True, text=True,
                          check=False, timeout=60, cwd=ROOT, preexec_fn=preexec)


def idp(*args: str, env: dict[str, str], umask: int | None = None) -> subprocess.CompletedProcess[str]:
    return run(["-m", "idp.cli", *args], env, umask)


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


# --- issue 6, item 7: files are private whatever the umask ----------------------------------


def test_cli_creates_the_database_and_keys_folder_private_under_umask_022(tmp_path: Path) -> None:
    env = {"IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'idp.db'}", "IDP_KEYS_DIR": str(tmp_path / "keys")}
    res = idp("clients", "add", "agent", "--capabilities", "tools/call:x", "--audience", AUDIENCE, "--json",
              env=env, umask=0o022)
    assert res.returncode == 0, res.stderr
    modes = {p.name: mode(p) for p in (tmp_path / "data" / "idp.db", tmp_path / "keys", tmp_path / "keys" / "kek")}
    assert modes == {"idp.db": "0o600", "keys": "0o700", "kek": "0o600"}


def test_provider_open_creates_database_wal_shm_and_keys_private_under_umask_022(tmp_path: Path) -> None:
    """The -wal/-shm files exist only while the database is open: stat them from inside."""
    script = textwrap.dedent(f"""
        import json, os, stat
        from pathlib import Path
        from idp.config import Settings
        from idp.provider import Provider
        tmp = Path({str(tmp_path)!r})
        prov = Provider.open(Settings(database_url=f"sqlite:///{{tmp / 'idp.db'}}", keys_dir=tmp / "keys"))
        prov.clients.add("agent", capabilities="tools/call:x", audiences=[{AUDIENCE!r}])
        paths = [tmp / "idp.db", tmp / "idp.db-wal", tmp / "idp.db-shm", tmp / "keys", *(tmp / "keys").iterdir()]
        print(json.dumps({{p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in paths}}))
        prov.close()
    """)
    res = run(["-c", script], {}, umask=0o022)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"idp.db": "0o600", "idp.db-wal": "0o600", "idp.db-shm": "0o600",
                                      "keys": "0o700", "kek": "0o600"}


# --- issue 6, item 17: a full disk ----------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB filesystem that the test can fill (tmpfs; needs root)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mnt)],
                             capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        pytest.skip(f"cannot mount a tmpfs to fill: {exc}")
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True, timeout=30)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def snapshot(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {t: [tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {t} ORDER BY 1"))]
                for t in ("clients", "signing_keys", "revoked_tokens", "audit_events", "idp_state")}


def test_write_commands_on_a_full_disk_fail_with_one_line_and_change_nothing(small_disk: Path) -> None:
    settings = Settings.model_validate({"issuer": ISSUER, "database_url": f"sqlite:///{small_disk / 'idp.db'}",
                                        "keys_dir": small_disk / "keys", "keystore_kek": random_kek()})
    env = {"IDP_ISSUER": ISSUER, "IDP_DATABASE_URL": settings.database_url, "IDP_KEYS_DIR": str(settings.keys_dir),
           "IDP_KEYSTORE_KEK": settings.keystore_kek.get_secret_value()}  # type: ignore[union-attr]
    # A running IdP holds the database open (its -wal and -shm exist), has issued a token...
    prov = Provider.open(settings)
    try:
        _, secret = register(prov, "agent")
        client_id = prov.clients.find("agent").client_id  # type: ignore[union-attr]
        from starlette.testclient import TestClient

        from idp.app import create_app

        with TestClient(create_app(provider=prov, maintenance=False), base_url=ISSUER) as http:
            resp = http.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret or ""))
        assert resp.status_code == 200, resp.text
        from sdk.jws import b64url_decode

        jti = json.loads(b64url_decode(resp.json()["access_token"].split(".")[1]))["jti"]
        superseded = prov.keys.list()[0].kid
        prov.keys.rotate(actor="test", immediate=True)  # the first key can now be retired
        before = snapshot(prov.engine)
        # ... and then the disk fills up.
        filler = fill(small_disk)
        commands = [
            ["clients", "add", "newbie", "--capabilities", "tools/call:x", "--audience", AUDIENCE],
            ["clients", "disable", "agent"],
            ["clients", "remove", "agent", "--yes"],
            ["keys", "rotate"],
            ["keys", "rotate", "--now"],
            ["keys", "retire", superseded],
            ["tokens", "revoke", jti],
        ]
        problems = []
        for cmd in commands:
            for as_json in (False, True):
                res = idp(*cmd, *(["--json"] if as_json else []), env=env)
                where = (f"{cmd} json={as_json}: exit {res.returncode}\n"
                         f"stdout: {res.stdout}\nstderr: {res.stderr[-2000:]}")
                if res.returncode != 1 or "Traceback" in res.stdout + res.stderr:
                    problems.append(where)
                    continue
                if as_json:
                    try:
                        error = json.loads(res.stdout)["error"]
                    except (ValueError, KeyError, TypeError):
                        problems.append(f"no JSON error object: {where}")
                        continue
                    if res.stderr.strip():
                        problems.append(f"stderr not empty: {where}")
                else:
                    lines = res.stderr.strip().splitlines()
                    error = lines[0] if len(lines) == 1 and lines[0].startswith("error:") else ""
                    if not error or res.stdout.strip():
                        problems.append(f"not one error line: {where}")
                        continue
                if "full" not in error:
                    problems.append(f"the error does not say the disk is full: {where}")
        # A generated KEK cannot be written either: a clear error, no partial key file left.
        res = idp("keys", "list", env={**env, "IDP_KEYSTORE_KEK": "", "IDP_KEYS_DIR": str(small_disk / "new-keys")})
        if res.returncode != 1 or len(res.stderr.strip().splitlines()) != 1 or "Traceback" in res.stderr:
            problems.append(f"generated KEK on a full disk: exit {res.returncode}: {res.stderr[-2000:]}")
        assert not list((small_disk / "new-keys").glob("*")), "a partial KEK file was left behind"
        assert not problems, "\n\n".join(problems)

        # Nothing half-written: the database opens and holds what it held, full disk or not.
        assert snapshot(prov.engine) == before
        listed = idp("clients", "list", "--json", env=env)
        assert listed.returncode == 0 and [c["name"] for c in json.loads(listed.stdout)] == ["agent"], listed.stderr
        filler.unlink()
        with prov.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        assert snapshot(prov.engine) == before
        revoked = idp("tokens", "revoke", jti, "--json", env=env)  # and works again once there is room
        assert revoked.returncode == 0 and json.loads(revoked.stdout)["revoked"] is True, revoked.stderr
    finally:
        prov.close()
