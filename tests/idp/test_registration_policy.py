"""The registration policy: ``initial-access-token`` (RFC 7591 §3) needs a live bearer token
from ``idp registration tokens create``; missing, wrong, expired, revoked and used-up tokens are
refused, and a refused registration does not spend a use; ``off`` removes the endpoint from the
metadata and answers 404. SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from idp_testing import env_for, run_cli
from registration_testing import PYTHON_SDK_REQUEST, count_clients, idp, settings_for

from idp.provider import Provider

IAT = "initial-access-token"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_missing_and_wrong_tokens_are_refused(db_url: str, tmp_path: Path) -> None:
    with idp(db_url, tmp_path, registration_policy=IAT) as (prov, http):
        _, token = prov.dynamic_clients.initial_tokens.create(label="ci")
        for headers in ({}, _auth("cbsti_wrong"), _auth(token[:-1]), {"Authorization": f"Basic {token}"}):
            resp = http.post("/register", json=PYTHON_SDK_REQUEST, headers=headers)
            assert resp.status_code == 401, headers
            assert resp.json()["error"] == "invalid_token"
            assert resp.headers["www-authenticate"].startswith("Bearer")
        assert count_clients(prov) == 0
        assert http.post("/register", json=PYTHON_SDK_REQUEST, headers=_auth(token)).status_code == 201


def test_uses_are_counted_and_a_refused_registration_spends_none(db_url: str, tmp_path: Path) -> None:
    with idp(db_url, tmp_path, registration_policy=IAT) as (prov, http):
        info, token = prov.dynamic_clients.initial_tokens.create(label="two", uses=2)
        bad = http.post("/register", json={**PYTHON_SDK_REQUEST, "redirect_uris": ["http://evil.example/cb"]},
                        headers=_auth(token))
        assert bad.status_code == 400
        assert [t.uses_left for t in prov.dynamic_clients.initial_tokens.list()] == [2]
        assert http.post("/register", json=PYTHON_SDK_REQUEST, headers=_auth(token)).status_code == 201
        assert http.post("/register", json=PYTHON_SDK_REQUEST, headers=_auth(token)).status_code == 201
        used_up = http.post("/register", json=PYTHON_SDK_REQUEST, headers=_auth(token))
        assert used_up.status_code == 401 and used_up.json()["error"] == "invalid_token"
        assert count_clients(prov) == 2
        assert prov.dynamic_clients.initial_tokens.list()[0].id == info.id


def test_expired_and_revoked_tokens_are_refused(db_url: str, tmp_path: Path) -> None:
    with idp(db_url, tmp_path, registration_policy=IAT) as (prov, http):
        tokens = prov.dynamic_clients.initial_tokens
        _, short = tokens.create(label="short", expires_at=int(time.time()) + 1)
        info, revoked = tokens.create(label="revoked")
        tokens.revoke(info.id)
        time.sleep(2.1)
        for token in (short, revoked):
            assert http.post("/register", json=PYTHON_SDK_REQUEST, headers=_auth(token)).status_code == 401
        assert count_clients(prov) == 0


def test_tokens_are_stored_only_as_hashes(db_url: str, tmp_path: Path) -> None:
    from sqlalchemy import select

    from idp.models import InitialAccessToken

    with idp(db_url, tmp_path, registration_policy=IAT) as (prov, _):
        _, token = prov.dynamic_clients.initial_tokens.create(label="x")
        table = InitialAccessToken.__table__  # type: ignore[attr-defined]
        with prov.engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(select(table))]
        assert rows and token not in json.dumps(rows)


def test_off_policy_has_no_endpoint(db_url: str, tmp_path: Path) -> None:
    with idp(db_url, tmp_path, registration_policy="off") as (prov, http):
        doc = http.get("/.well-known/oauth-authorization-server").json()
        assert "registration_endpoint" not in doc
        assert http.post("/register", json=PYTHON_SDK_REQUEST).status_code == 404
        assert http.get("/register/abc", headers=_auth("x")).status_code == 404
        assert count_clients(prov) == 0


def test_open_policy_ignores_a_bearer_token(db_url: str, tmp_path: Path) -> None:
    with idp(db_url, tmp_path) as (_, http):
        assert http.post("/register", json=PYTHON_SDK_REQUEST, headers=_auth("anything")).status_code == 201


@pytest.mark.slow
def test_cli_creates_lists_and_revokes_tokens(db_url: str, tmp_path: Path) -> None:
    settings = settings_for(db_url, tmp_path, registration_policy=IAT)
    Provider.open(settings).close()
    env = env_for(settings)
    created = run_cli("registration", "tokens", "create", "--uses", "1", "--expires", "1h", "--label", "ci",
                      "--json", env=env)
    assert created.returncode == 0, created.stderr
    made = json.loads(created.stdout)
    assert made["token"].startswith("cbsti_") and made["uses_left"] == 1 and made["label"] == "ci"
    assert made["expires_at"] > time.time() + 3500
    listed = json.loads(run_cli("registration", "tokens", "list", "--json", env=env).stdout)
    assert [t["id"] for t in listed] == [made["id"]] and "token" not in listed[0]
    with idp(db_url, tmp_path, registration_policy=IAT, keystore_kek=settings.keystore_kek) as (_, http):
        assert http.post("/register", json=PYTHON_SDK_REQUEST, headers=_auth(made["token"])).status_code == 201
    revoked = run_cli("registration", "tokens", "revoke", made["id"], "--json", env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(run_cli("registration", "tokens", "list", "--json", env=env).stdout) == []
    missing = run_cli("registration", "tokens", "revoke", made["id"], env=env)
    assert missing.returncode == 1 and "no initial access token" in missing.stderr
    bad = run_cli("registration", "tokens", "create", "--uses", "0", env=env)
    assert bad.returncode != 0


def test_racing_registrations_cannot_share_the_last_use(db_url: str, tmp_path: Path) -> None:
    """Eight registrations at once with a one-use token, over a real server: exactly one gets it."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from registration_testing import served

    prov = Provider.open(settings_for(db_url, tmp_path, registration_policy=IAT, registration_rate=0))
    try:
        _, token = prov.dynamic_clients.initial_tokens.create(label="once", uses=1)
        with served(prov) as url, httpx.Client(timeout=30) as http, ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: http.post(f"{url}/register", json=PYTHON_SDK_REQUEST,
                                                      headers=_auth(token)).status_code, range(8)))
        assert sorted(codes) == [201] + [401] * 7, codes
        assert count_clients(prov) == 1
    finally:
        prov.close()
