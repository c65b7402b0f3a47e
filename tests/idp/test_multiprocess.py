"""Real ``idp serve`` processes: two instances sharing PostgreSQL, one with two workers on SQLite,
and the very first start in an empty directory."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from joserfc import jwt
from joserfc.jwk import KeySet

from idp.config import Settings
from idp.provider import Provider

from idp_testing import AUDIENCE, ISSUER, ROOT, ServerProcess, env_for, free_port, random_kek, register, run_cli

pytestmark = pytest.mark.slow


def verify(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    return jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256", "EdDSA"]).claims


def kid_of(token: str) -> str:
    from sdk.jws import split

    return split(token)[0]["kid"]


def get_token(base: str, auth: tuple[str, str], client: httpx.Client | None = None) -> str:
    resp = (client or httpx).post(base + "/token", data={"grant_type": "client_credentials"}, auth=auth, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["access_token"]


def jwks_of(base: str) -> dict[str, Any]:
    resp = httpx.get(base + "/jwks", timeout=30)
    assert resp.status_code == 200
    return resp.json()


def introspect(base: str, auth: tuple[str, str], token: str) -> dict[str, Any]:
    resp = httpx.post(base + "/introspect", data={"token": token}, auth=auth, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_two_servers_on_one_postgres_verify_each_others_tokens_across_a_rotation(pg_database: str,
                                                                                tmp_path: Path) -> None:
    settings = Settings(issuer=ISSUER, database_url=pg_database, keys_dir=tmp_path / "keys", keystore_kek=random_kek())
    prov = Provider.open(settings)
    client, secret = register(prov)
    prov.close()
    auth = (client.client_id, secret)
    # Fast key refresh and a short pre-publication (2 x jwks_max_age = 4 s) to see a rotation happen.
    env = {**env_for(settings), "IDP_KEY_REFRESH_INTERVAL": "1", "IDP_JWKS_MAX_AGE": "2"}
    a = ServerProcess(env, free_port())
    try:
        b = ServerProcess(env, free_port())
        try:
            ta, tb = get_token(a.url, auth), get_token(b.url, auth)
            assert verify(ta, jwks_of(b.url))["client_id"] == client.client_id
            assert verify(tb, jwks_of(a.url))["client_id"] == client.client_id
            assert introspect(b.url, auth, ta)["active"] is True
            assert introspect(a.url, auth, tb)["active"] is True
            # A revocation at one instance is seen by the other.
            assert httpx.post(b.url + "/revoke", data={"token": ta}, auth=auth, timeout=30).status_code == 200
            assert introspect(a.url, auth, ta) == {"active": False}

            old_kid = kid_of(tb)
            rotated = run_cli("keys", "rotate", "--json", env=env)
            assert rotated.returncode == 0, rotated.stderr
            new_kid = json.loads(rotated.stdout)["kid"]
            seen_new = {"a": False, "b": False}
            tokens: list[str] = []
            deadline = time.monotonic() + 20
            while not all(seen_new.values()) and time.monotonic() < deadline:
                for name, mine, other in (("a", a, b), ("b", b, a)):
                    tok = get_token(mine.url, auth)
                    # The other instance publishes every key this one signs with.
                    claims = verify(tok, jwks_of(other.url))
                    assert introspect(other.url, auth, tok)["active"] is True
                    assert claims["iss"] == ISSUER
                    tokens.append(tok)
                    seen_new[name] = seen_new[name] or kid_of(tok) == new_kid
                time.sleep(0.25)
            assert all(seen_new.values()), "the new key never started signing"
            kids = [kid_of(t) for t in tokens]
            assert kids[0] == old_kid  # pre-published first: the old key kept signing for a while
            # Tokens signed before the switch still verify against both instances afterwards.
            for base in (a.url, b.url):
                jwks = jwks_of(base)
                assert {old_kid, new_kid} <= {k["kid"] for k in jwks["keys"]}
                for tok in tokens:
                    verify(tok, jwks)
        finally:
            b.stop()
    finally:
        a.stop()


def test_serve_two_workers_on_sqlite_issues_concurrent_tokens_each_audited_exactly_once(tmp_path: Path) -> None:
    settings = Settings(issuer=ISSUER, database_url=f"sqlite:///{tmp_path / 'idp.db'}", keys_dir=tmp_path / "keys",
                        keystore_kek=random_kek())
    prov = Provider.open(settings)
    client, secret = register(prov)
    auth = (client.client_id, secret)
    server = ServerProcess(env_for(settings), free_port(), workers=2)
    try:
        n = 200
        with httpx.Client(timeout=30) as http, ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda _: http.post(server.url + "/token",
                                                          data={"grant_type": "client_credentials"}, auth=auth),
                                      range(n)))
        assert [r.status_code for r in responses] == [200] * n, {r.status_code: r.text for r in responses}
        tokens = [r.json()["access_token"] for r in responses]
        jwks = jwks_of(server.url)
        jtis = [verify(t, jwks)["jti"] for t in tokens]
        assert len(set(jtis)) == n
        with prov.engine.connect() as conn:
            audited = dict(conn.execute(sa.text(
                "SELECT jti, count(*) FROM audit_events WHERE event = 'token.issued' GROUP BY jti")).all())
        assert audited == {j: 1 for j in jtis}
        log = server.log.read_text()
        assert "Traceback" not in log and '"level":"error"' not in log
    finally:
        server.stop()
        prov.close()


def test_first_start_in_an_empty_directory_creates_database_and_keystore_and_serves_a_token(tmp_path: Path) -> None:
    home = tmp_path / "fresh"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env["IDP_LOG_LEVEL"] = "info"
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "idp.cli", "serve", "--port", str(port)], env=env, cwd=home,
                                stdout=fh, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert (home / "idp.db").is_file()
        kek = home / "keys" / "kek"
        assert kek.is_file() and stat.S_IMODE(kek.stat().st_mode) == 0o600
        assert "generated key" in log.read_text()  # the operator is told where the KEK is
        added = subprocess.run([sys.executable, "-m", "idp.cli", "clients", "add", "first", "--capabilities",
                                "tools/call:*", "--audience", AUDIENCE, "--json"], env=env, cwd=home,
                               capture_output=True, text=True, timeout=60)
        assert added.returncode == 0, added.stderr
        info = json.loads(added.stdout)
        token = get_token(base, (info["client_id"], info["client_secret"]))
        claims = verify(token, jwks_of(base))
        assert claims["aud"] == AUDIENCE and claims["client_id"] == info["client_id"]
        assert claims["iss"] == f"http://127.0.0.1:{port}"  # the default issuer: where it listens
        # The server wrote the issuance's audit record as a JSON line on stderr.
        deadline = time.monotonic() + 10
        while True:
            lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
            audit = [x["audit"] for x in lines if x.get("logger") == "cbst.audit" and x["msg"] == "token.issued"]
            if audit or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert [(a["jti"], a["client_id"], a["data"]["aud"]) for a in audit] == [
            (claims["jti"], info["client_id"], AUDIENCE)]
    finally:
        proc.terminate()
        proc.wait(15)
    assert sorted(p.name for p in home.iterdir() if not p.name.startswith("idp.db")) == ["keys"]
    assert ROOT != home
