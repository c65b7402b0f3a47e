"""Client kinds (RFC 7662 §4): 'client' (default) or 'resource_server', registered with
``idp clients add --resource-server``, shown by ``clients list/show``, and added to existing
databases by migration 0003 (existing clients become ordinary clients)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import sqlalchemy as sa
from idp_testing import AUDIENCE, env_for, run_cli

from idp import db
from idp.config import Settings
from idp.provider import Provider


def _cli(settings: Settings, *args: str) -> Any:
    done = run_cli(*args, "--json", env=env_for(settings))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_cli_registers_a_resource_server_that_may_introspect_its_audience(settings: Settings, http: Any) -> None:
    rs = _cli(settings, "clients", "add", "files-rs", "--resource-server", "--capabilities", "logging/setLevel",
              "--audience", AUDIENCE)
    agent = _cli(settings, "clients", "add", "agent", "--capabilities", "tools/call:*", "--audience", AUDIENCE)
    fellow = _cli(settings, "clients", "add", "fellow", "--capabilities", "tools/call:*", "--audience", AUDIENCE)
    assert (rs["kind"], agent["kind"], fellow["kind"]) == ("resource_server", "client", "client")
    assert {c["name"]: c["kind"] for c in _cli(settings, "clients", "list")} == {
        "files-rs": "resource_server", "agent": "client", "fellow": "client"}
    assert _cli(settings, "clients", "show", "files-rs")["kind"] == "resource_server"
    table = run_cli("clients", "list", env={**env_for(settings), "COLUMNS": "250"})
    assert "resource_server" in table.stdout

    token = http.post("/token", data={"grant_type": "client_credentials"},
                      auth=(agent["client_id"], agent["client_secret"])).json()["access_token"]

    def introspect(who: dict[str, Any]) -> dict[str, Any]:
        resp = http.post("/introspect", data={"token": token}, auth=(who["client_id"], who["client_secret"]))
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    assert introspect(rs)["active"] is True and introspect(rs)["client_id"] == agent["client_id"]
    assert introspect(agent)["active"] is True
    assert introspect(fellow) == {"active": False}


def test_kind_is_validated_at_registration(provider: Provider) -> None:
    from idp.clients import ClientError

    with pytest.raises(ClientError, match="kind"):
        provider.clients.add("x", capabilities="tools/call:*", kind="admin")


def test_migration_0003_makes_existing_clients_ordinary_clients(db_url: str) -> None:
    engine = db.create_db_engine(db_url)
    try:
        db.upgrade(engine, "0002")
        now = int(time.time())
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO clients (client_id, name, auth_method, secret_hash, capabilities, audiences, enabled,"
                " created_at, updated_at)"
                " VALUES ('c1', 'old', 'client_secret_basic', 'h', 'tools/call:*', :aud, :t, :now, :now)"),
                {"aud": json.dumps([AUDIENCE]), "t": True, "now": now})
        db.upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT kind FROM clients WHERE client_id = 'c1'")).scalar_one() == "client"
        db.downgrade(engine, "0002")
        with engine.connect() as conn:
            assert "kind" not in {c["name"] for c in sa.inspect(conn).get_columns("clients")}
            assert conn.execute(sa.text("SELECT name FROM clients")).scalar_one() == "old"
    finally:
        engine.dispose()
