"""Protected resources are registered (``idp resources ...``, idp/resources.py), and the client
credentials grant mints only for registered resources, intersected with the Cedar policy —
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from idp_testing import ISSUER, random_kek, run_cli
from sqlalchemy import text
from starlette.testclient import TestClient

from idp.app import create_app
from idp.clients import ClientError
from idp.config import Settings
from idp.provider import Provider
from policy_testing import write

MCP = "https://mcp.example.test/mcp"


def _env(tmp_path: Path) -> dict[str, str]:
    return {"IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.db'}", "IDP_KEYS_DIR": str(tmp_path / "keys"),
            "IDP_KEYSTORE_KEK": random_kek(), "IDP_LOG_LEVEL": "warning", "COLUMNS": "200"}


def _ok(*args: str, env: dict[str, str]) -> Any:
    res = run_cli(*args, "--json", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


def _err(*args: str, env: dict[str, str]) -> str:
    res = run_cli(*args, "--json", env=env)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stdout + res.stderr
    return str(json.loads(res.stdout)["error"])


def test_resources_cli_lifecycle(tmp_path: Path) -> None:
    env = _env(tmp_path)
    reader = _ok("clients", "add", "reader", "--capabilities", "tools/call:**", env=env)
    added = _ok("resources", "add", MCP, "--name", "Example MCP", "--client", "reader", env=env)
    assert added["uri"] == MCP and added["name"] == "Example MCP" and added["client_id"] == reader["client_id"]
    assert added["catalogue_updated_at"] is None and added["tools"] == 0
    assert [r["uri"] for r in _ok("resources", "list", env=env)] == [MCP]
    shown = _ok("resources", "show", MCP, env=env)
    assert shown["catalogue"] == {} and shown["name"] == "Example MCP"
    human = run_cli("resources", "list", env=env).stdout
    assert MCP in human and "Example MCP" in human
    assert _ok("resources", "update", MCP, "--name", "Renamed", "--no-client", env=env)["client_id"] is None

    assert "already registered" in _err("resources", "add", MCP, "--name", "again", env=env)
    assert "absolute URI" in _err("resources", "add", "not a uri", "--name", "x", env=env)
    assert "absolute URI" in _err("resources", "add", "https://x.example/mcp#frag", "--name", "x", env=env)
    assert "name" in _err("resources", "add", "https://x.example/mcp", "--name", "", env=env)
    assert "no client" in _err("resources", "add", "https://x.example/mcp", "--name", "x", "--client", "nobody",
                               env=env)
    assert "no resource" in _err("resources", "show", "https://nowhere.example/mcp", env=env)
    assert "no resource" in _err("resources", "remove", "https://nowhere.example/mcp", "--yes", env=env)
    assert "--yes" in _err("resources", "remove", MCP, env=env)
    assert "no resource" in _err("resources", "sync", "https://nowhere.example/mcp", env=env)
    assert "no client to pull" in _err("resources", "sync", MCP, env=env)
    assert _ok("resources", "remove", MCP, "--yes", env=env) == {"removed": MCP}
    assert _ok("resources", "list", env=env) == []
    import sqlalchemy as sa

    engine = sa.create_engine(env["IDP_DATABASE_URL"])
    with engine.connect() as conn:
        events = {r.event for r in conn.execute(text("select event from audit_events where event like 'resource.%'"))}
    engine.dispose()
    assert events == {"resource.registered", "resource.updated", "resource.removed"}


def test_clients_add_registers_its_audiences_as_resources(tmp_path: Path) -> None:
    env = _env(tmp_path)
    _ok("resources", "add", MCP, "--name", "Kept name", env=env)
    _ok("clients", "add", "agent", "--capabilities", "tools/call:*", "--audience", MCP,
        "--audience", "https://other.example.test:8443/mcp", env=env)
    listed = {r["uri"]: r["name"] for r in _ok("resources", "list", env=env)}
    assert listed == {MCP: "Kept name", "https://other.example.test:8443/mcp": "other.example.test"}
    # A refused client registers nothing (one transaction).
    _err("clients", "add", "agent", "--capabilities", "tools/call:*", "--audience", "https://third.example/mcp",
         env=env)
    assert "https://third.example/mcp" not in {r["uri"] for r in _ok("resources", "list", env=env)}


# --- the token endpoint, on both databases ------------------------------------------------------------

CLIENT_POLICY = '''
// Clients may have echo and add; never a destructive tool the catalogue knows.
permit (principal is CBST::Client, action, resource is CBST::Capability)
when { resource.method == "tools/call" && resource has target && (resource.target == "echo" ||
       resource.target == "add" || resource.target == "delete-file") };
forbid (principal is CBST::Client, action, resource is CBST::Capability)
when { resource has destructive && resource.destructive };
'''


@pytest.fixture
def env(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Provider, TestClient]]:
    folder = write(tmp_path / "policies", {"clients.cedar": CLIENT_POLICY}) if "policy" in request.node.name else None
    settings = Settings(issuer=ISSUER, database_url=db_url, keys_dir=tmp_path / "keys", keystore_kek=random_kek(),
                        policy_dir=folder)
    prov = Provider.open(settings)
    with TestClient(create_app(provider=prov, maintenance=False)) as http:
        yield prov, http
    prov.close()


def _token(http: TestClient, client: Any, secret: str | None, **form: str) -> Any:
    assert secret is not None
    return http.post("/token", data={"grant_type": "client_credentials", **form},
                     auth=(client.client_id, secret))


def test_tokens_only_for_registered_resources(env: tuple[Provider, TestClient]) -> None:
    prov, http = env
    client, secret = prov.clients.add("agent", capabilities="tools/call:*", audiences=[MCP])
    assert _token(http, client, secret, resource=MCP).status_code == 200
    prov.resources.remove(MCP)
    for form in ({"resource": MCP}, {}):  # named, or the client's only audience by default
        res = _token(http, client, secret, **form)
        assert res.status_code == 400 and res.json()["error"] == "invalid_target", res.text
        assert "registered protected resource" in res.json()["error_description"]
    with prov.engine.connect() as conn:
        issued = conn.execute(text("select count(*) from audit_events where event = 'token.issued'")).scalar()
    assert issued == 1  # the refusals issued nothing
    prov.resources.add(MCP, name="back")
    assert _token(http, client, secret, resource=MCP).status_code == 200


def test_policy_intersects_the_client_credentials_grant(env: tuple[Provider, TestClient]) -> None:
    prov, http = env
    client, secret = prov.clients.add("agent", capabilities="tools/call:echo tools/call:add tools/call:delete-file "
                                                            "tools/call:other", audiences=[MCP])
    # The allowed subset is granted, and the response says which (RFC 6749 §5.1 scope).
    res = _token(http, client, secret, scope="tools/call:echo tools/call:other")
    assert res.status_code == 200 and res.json()["scope"] == "tools/call:echo"
    # Nothing requested survives the policy: invalid_scope, naming what was refused.
    res = _token(http, client, secret, scope="tools/call:other")
    assert res.status_code == 400 and res.json()["error"] == "invalid_scope"
    assert "tools/call:other" in res.json()["error_description"]
    # No scope: the registered capabilities, intersected. The catalogue is unknown, so delete-file passes...
    assert _token(http, client, secret).json()["scope"] == "tools/call:echo tools/call:add tools/call:delete-file"
    # ...until the catalogue says it is destructive (the decision cache follows the catalogue's version).
    prov.resources.set_catalogue(MCP, {"tools": [{"name": "echo", "annotations": {"readOnlyHint": True}},
                                                 {"name": "add", "annotations": {"destructiveHint": False}},
                                                 {"name": "delete-file"}], "resources": [], "prompts": []},
                                 actor="test")
    time.sleep(1.1)  # decisions re-read a resource's record at most once a second
    assert _token(http, client, secret).json()["scope"] == "tools/call:echo tools/call:add"
    res = _token(http, client, secret, scope="tools/call:delete-file")
    assert res.status_code == 400 and res.json()["error"] == "invalid_scope"
    # The registered capabilities still bound what policy can grant.
    res = _token(http, client, secret, scope="tools/call:*")
    assert res.status_code == 400 and res.json()["error"] == "invalid_scope"


def test_registry_refuses_bad_updates(env: tuple[Provider, TestClient]) -> None:
    prov, _ = env
    prov.resources.add(MCP, name="x")
    for kwargs in ({}, {"name": ""}, {"name": "a\nb"}):
        with pytest.raises(ClientError):
            prov.resources.update(MCP, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ClientError):
        prov.resources.update("https://none.example/mcp", name="y")
    first = prov.resources.set_catalogue(MCP, {"tools": []}, actor="t").catalogue_updated_at
    second = prov.resources.set_catalogue(MCP, {"tools": [{"name": "a"}]}, actor="t").catalogue_updated_at
    assert first is not None and second is not None and second > first  # versions strictly increase
    assert prov.resources.get(MCP).catalogue == {"tools": [{"name": "a"}]}  # type: ignore[union-attr]
