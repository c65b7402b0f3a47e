"""The ``idp`` admin CLI, run as real subprocesses against the same database as an in-process IdP."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from idp_testing import AUDIENCE, env_for, random_kek, register, run_cli
from idp_testing import ROOT as ROOT_DIR

from idp.config import Settings
from idp.provider import Provider

pytestmark = pytest.mark.slow


def cli(env: dict[str, str], *args: str, code: int = 0, input: str | None = None) -> subprocess.CompletedProcess[str]:
    res = run_cli(*args, env=env, input=input)
    assert "Traceback" not in res.stdout + res.stderr, res.stderr
    assert res.returncode == code, (args, res.returncode, res.stdout, res.stderr)
    return res


def cli_json(env: dict[str, str], *args: str, code: int = 0) -> Any:
    return json.loads(cli(env, *args, "--json", code=code).stdout)


def token(http: Any, client_id: str, secret: str) -> Any:
    return http.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))


def counts(prov: Provider) -> dict[str, int]:
    with prov.engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                for t in ("clients", "signing_keys", "revoked_tokens", "audit_events", "idp_state")}


def public_jwks(tmp_path: Path) -> Path:
    from joserfc.jwk import ECKey

    key = ECKey.generate_key("P-256", parameters={"kid": "client-key-1"})
    path = tmp_path / "client-jwks.json"
    path.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    return path


def test_clients_add_list_show_disable_enable_remove_and_tokens_revoke(settings: Settings, provider: Provider,
                                                                       http: Any, tmp_path: Path) -> None:
    env = env_for(settings)
    added = cli_json(env, "clients", "add", "agent", "--capabilities", "tools/call:git-* prompts/get:summarize",
                     "--audience", AUDIENCE, "--audience", "https://other.example/mcp")
    client_id, secret = added["client_id"], added["client_secret"]
    assert secret.startswith("cbsts_") and len(secret) >= 40
    assert added["capabilities"] == "tools/call:git-* prompts/get:summarize"
    assert added["audiences"] == [AUDIENCE, "https://other.example/mcp"] and added["enabled"] is True
    keyed = cli_json(env, "clients", "add", "keyed", "--capabilities", "tools/call:read", "--audience", AUDIENCE,
                     "--auth", "private_key_jwt", "--jwks", str(public_jwks(tmp_path)))
    assert "client_secret" not in keyed and keyed["auth_method"] == "private_key_jwt"
    assert keyed["jwks_kids"] == ["client-key-1"]
    # The secret is printed once: never again, and stored only hashed.
    listed = cli(env, "clients", "list", "--json").stdout
    shown = cli(env, "clients", "show", "agent", "--json").stdout
    human = cli(env, "clients", "list").stdout
    assert secret not in listed + shown + human
    assert [c["name"] for c in json.loads(listed)] == ["agent", "keyed"]
    assert json.loads(shown)["client_id"] == client_id and "agent" in human and "keyed" in human
    with provider.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT * FROM clients WHERE client_id = :c"), {"c": client_id}).one()
    assert secret not in repr(tuple(stored))

    # Token request needs a resource: the client has two audiences.
    resp = http.post("/token", data={"grant_type": "client_credentials", "resource": AUDIENCE},
                     auth=(client_id, secret))
    assert resp.status_code == 200, resp.text
    assert cli_json(env, "clients", "disable", "agent")["enabled"] is False
    resp = http.post("/token", data={"grant_type": "client_credentials", "resource": AUDIENCE},
                     auth=(client_id, secret))
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"
    assert "disabled" in resp.json()["error_description"]
    # By client_id ("--" ends the options, as a script passing any id should).
    assert json.loads(cli(env, "clients", "enable", "--json", "--", client_id).stdout)["enabled"] is True
    resp = http.post("/token", data={"grant_type": "client_credentials", "resource": AUDIENCE},
                     auth=(client_id, secret))
    assert resp.status_code == 200, resp.text
    access_token = resp.json()["access_token"]
    from sdk.jws import b64url_decode

    jti = json.loads(b64url_decode(access_token.split(".")[1]))["jti"]

    def active() -> bool:
        r = http.post("/introspect", data={"token": access_token}, auth=(client_id, secret))
        assert r.status_code == 200
        return bool(r.json()["active"])

    assert active()
    revoked = cli_json(env, "tokens", "revoke", jti)
    assert revoked == {"jti": jti, "client_id": client_id, "revoked": True, "already_revoked": False}
    assert not active()
    assert cli_json(env, "tokens", "revoke", jti)["already_revoked"] is True
    res = cli(env, "tokens", "revoke", "no-such-jti", code=1)
    assert res.stderr.strip().startswith("error:") and "no-such-jti" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1

    # remove: asks for confirmation; "n" keeps the client, --yes removes without asking.
    res = cli(env, "clients", "remove", "keyed", input="n\n", code=1)
    assert "Remove client keyed" in res.stdout
    assert provider.clients.find("keyed") is not None
    cli(env, "clients", "remove", "keyed", input="y\n")
    assert provider.clients.find("keyed") is None
    # Without a prompt (--json) removal still needs --yes.
    assert "--yes" in cli_json(env, "clients", "remove", "agent", code=1)["error"]
    assert provider.clients.find("agent") is not None
    assert cli_json(env, "clients", "remove", "agent", "--yes") == {"removed": client_id}
    assert provider.clients.list() == []
    resp = http.post("/token", data={"grant_type": "client_credentials", "resource": AUDIENCE},
                     auth=(client_id, secret))
    assert resp.status_code == 401


def test_keys_list_rotate_retire(settings: Settings, provider: Provider, http: Any) -> None:
    env = env_for(settings)
    (first,) = cli_json(env, "keys", "list")
    assert first["state"] == "active"
    res = cli(env, "keys", "retire", first["kid"], code=1)
    assert "current signing key" in res.stderr and "rotate" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    pending = cli_json(env, "keys", "rotate")
    assert pending["activate_at"] - first["activate_at"] >= settings.prepublication - 5
    provider.keys.refresh(force=True)
    assert pending["kid"] in {k["kid"] for k in http.get("/jwks").json()["keys"]}  # published before it signs
    now_key = cli_json(env, "keys", "rotate", "--now")
    listed = {k["kid"]: k for k in cli_json(env, "keys", "list")}
    assert listed[now_key["kid"]]["state"] == "active"
    assert listed[first["kid"]]["state"] == "superseded" and listed[first["kid"]]["retires_at"] is not None
    retired = cli_json(env, "keys", "retire", first["kid"])
    assert retired["kid"] == first["kid"] and retired["retired_at"]
    provider.keys.refresh(force=True)
    assert first["kid"] not in {k["kid"] for k in http.get("/jwks").json()["keys"]}
    human = cli(env, "keys", "list").stdout
    assert "retired" in human and "active" in human and "pending" in human
    assert cli_json(env, "keys", "retire", first["kid"], code=1) == {"error": f"key {first['kid']} is already retired"}


def _clean_error(res: subprocess.CompletedProcess[str], *, as_json: bool = False) -> str:
    assert "Traceback" not in res.stdout + res.stderr
    if as_json:
        return str(json.loads(res.stdout)["error"])
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    return lines[0]


def _check_refusals(cases: list[tuple[list[str], dict[str, str], str]], env: dict[str, str],
                    json_cases: int = 2) -> None:
    """Run every case (a few also with --json); each must exit 1 with one clear line and no traceback."""

    def run(i_case: tuple[int, tuple[list[str], dict[str, str], str]]) -> tuple[Any, ...]:
        i, (args, extra, expect) = i_case
        res_json = run_cli(*args, "--json", env={**env, **extra}) if i < json_cases else None
        return (args, extra, expect), run_cli(*args, env={**env, **extra}), res_json

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(run, enumerate(cases)))
    problems = []
    for (args, extra, expect), res, res_json in results:
        if res.returncode != 1 or (res_json is not None and res_json.returncode != 1):
            problems.append(f"{args} {extra}: exit {res.returncode}: {res.stdout} {res.stderr}")
            continue
        try:
            line = _clean_error(res)
            json_error = _clean_error(res_json, as_json=True) if res_json is not None else expect
        except (AssertionError, ValueError) as exc:
            problems.append(f"{args} {extra}: unclear error: {exc!r} {res.stderr!r}")
            continue
        said = expect.lower() in line.lower() and expect.lower() in json_error.lower()
        if not line.startswith("error:") or not said:
            problems.append(f"{args} {extra}: error does not say {expect!r}: {line!r}")
        if "hunter2" in res.stdout + res.stderr + (res_json.stdout if res_json else ""):
            problems.append(f"{args} {extra}: the database password is shown")
    assert not problems, "\n".join(problems)


def test_bad_input_is_refused_with_a_clear_error_and_writes_nothing(settings: Settings, provider: Provider,
                                                                   tmp_path: Path) -> None:
    env = env_for(settings)
    register(provider, "taken")
    private = tmp_path / "private.json"
    from joserfc.jwk import ECKey

    private.write_text(json.dumps({"keys": [ECKey.generate_key("P-256").as_dict(private=True)]}))
    add = ["clients", "add", "newbie", "--capabilities", "tools/call:x", "--audience", AUDIENCE]
    cases: list[tuple[list[str], dict[str, str], str]] = [
        (["clients", "add", "c1", "--capabilities", "tools/call:x y!!", "--audience", AUDIENCE], {}, "capabilit"),
        (["clients", "add", "taken", "--capabilities", "tools/call:x", "--audience", AUDIENCE], {}, "already exists"),
        (["clients", "add", "c1", "--capabilities", "nomethod:**:x", "--audience", AUDIENCE], {}, ""),
        (["clients", "add", "c1", "--capabilities", "tools/call:x", "--audience", "not-a-uri"], {}, "audience"),
        (["clients", "add", "c1", "--capabilities", "tools/call:x", "--audience", "bad[red]uri"], {}, "bad[red]uri"),
        (["clients", "show", "a[/]b"], {}, "a[/]b"),
        (["clients", "add", "bad name!", "--capabilities", "tools/call:x", "--audience", AUDIENCE], {}, "name"),
        ([*add, "--auth", "private_key_jwt", "--jwks", str(tmp_path / "missing.json")], {}, "missing.json"),
        ([*add, "--auth", "private_key_jwt", "--jwks", str(private)], {}, "public keys only"),
        ([*add, "--auth", "private_key_jwt"], {}, "--jwks"),
        ([*add, "--auth", "password"], {}, "auth method"),
        (["tokens", "revoke", "never-issued"], {}, "never-issued"),
        (["clients", "remove", "nobody", "--yes"], {}, "nobody"),
        (["keys", "retire", "nokid"], {}, "nokid"),
    ]
    if settings.database_url.startswith("postgresql"):
        # Input checks do not depend on the database; run the ones that read or write it.
        cases = [c for c in cases if c[2] in ("already exists", "capabilit", "never-issued", "nobody", "nokid")]
    before = counts(provider)
    _check_refusals(cases, env, json_cases=3)
    assert counts(provider) == before


def test_invalid_configuration_is_refused_with_a_clear_error_and_creates_nothing(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    env = {"IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.db'}", "IDP_KEYS_DIR": str(tmp_path / "keys")}
    add = ["clients", "add", "newbie", "--capabilities", "tools/call:x", "--audience", AUDIENCE]
    cases: list[tuple[list[str], dict[str, str], str]] = [
        (add, {"IDP_ACCESS_TOKEN_TTL": "abc"}, "access_token_ttl"),
        (add, {"IDP_ISSUER": "https://idp.example/"}, "issuer"),
        (["keys", "list"], {"IDP_AUDIT_RETENTION_DAYS": "31"}, "audit_retention_days"),
        (["serve"], {"IDP_AUDIT_RETENTION_DAYS": "6"}, "audit_retention_days"),
        (add, {"IDP_DATABASE_URL": "mysql://x/y"}, "unsupported database"),
        (add, {"IDP_CONFIG": str(tmp_path / "missing.toml")}, "missing.toml"),
    ]
    unreachable = {"IDP_DATABASE_URL": "postgresql://idp:hunter2@127.0.0.1:1/idp"}
    cases += [([*cmd], unreachable, "127.0.0.1") for cmd in (["clients", "list"], ["db", "upgrade"], ["db", "current"])]
    # Paths that cannot be created (under a file).
    elsewhere = f"sqlite:///{tmp_path_factory.mktemp('db') / 'idp.db'}"
    cases += [(["clients", "list"], {"IDP_DATABASE_URL": "sqlite:////dev/null/idp.db"}, "/dev/null"),
              (["keys", "list"], {"IDP_DATABASE_URL": elsewhere, "IDP_KEYS_DIR": "/dev/null/keys"}, "/dev/null/keys")]
    _check_refusals(cases, env)
    # Usage errors (click) exit 2, also without a traceback.
    for args in (["clients", "add", "x"], ["--config", str(tmp_path / "nope.toml"), "config", "show"],
                 ["audit", "tail", "-n", "zero"]):
        res = run_cli(*args, env=env)
        assert res.returncode == 2 and "Traceback" not in res.stderr, (args, res.stderr)
    assert list(tmp_path.iterdir()) == []  # no database, no keys directory


def test_config_show_masks_secrets_and_reads_a_toml_file_under_the_environment(tmp_path: Path) -> None:
    """(Precedence and validation in detail: tests/test_config.py; here the command itself.)"""
    base = {"IDP_KEYS_DIR": str(tmp_path / "keys")}
    toml = tmp_path / "idp.toml"
    toml.write_text('issuer = "https://idp.toml.example"\naccess_token_ttl = 120\njwks_max_age = 100\n'
                    'audit_retention_days = 10\nkeystore_passphrase = "passphrase from the file"\n')
    env = {**base, "IDP_KEYSTORE_KEK": "A" * 43, "IDP_ACCESS_TOKEN_TTL": "200",
           "IDP_DATABASE_URL": "postgresql://idp:hunter2secret@db.example:5432/idp"}
    res = cli(env, "--config", str(toml), "config", "show", "--json")
    shown = json.loads(res.stdout)
    assert shown["keystore_passphrase"] == shown["keystore_kek"] == "********"
    assert shown["database_url"].startswith("postgresql://idp:") and "db.example:5432/idp" in shown["database_url"]
    assert shown["issuer"] == "https://idp.toml.example" and shown["audit_retention_days"] == 10  # from the file
    assert shown["key_prepublication"] == 200  # derived from the file's jwks_max_age
    assert shown["access_token_ttl"] == 200  # the environment wins over the file
    human = cli({**env, "IDP_CONFIG": str(toml)}, "config", "show").stdout
    assert "https://idp.toml.example" in human and "IDP_ACCESS_TOKEN_TTL" in human
    for out in (res.stdout, human):
        assert "hunter2secret" not in out and "passphrase from the file" not in out and "A" * 43 not in out

    bad = tmp_path / "bad.toml"
    bad.write_text('issuer = "https://x.example/"\n')
    line = _clean_error(cli(base, "--config", str(bad), "config", "show", code=1))
    assert line.startswith("error:") and "issuer" in line, line


def test_human_output_shows_stored_values_literally(tmp_path: Path) -> None:
    """Values are data, not console markup: brackets in an audience neither crash nor vanish."""
    env = {"IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.db'}", "IDP_KEYS_DIR": str(tmp_path / "keys"),
           "IDP_LOG_LEVEL": "warning", "COLUMNS": "400"}  # wide enough that no table cell is cut
    odd = ["https://x.example/a[/]b", "https://x.example/[red]c[/red]", "https://x.example/[bold]"]
    args = [a for aud in odd for a in ("--audience", aud)]
    added = cli(env, "clients", "add", "odd", "--capabilities", "tools/call:x", *args)
    outputs = {"add": added.stdout}
    for name, cmd in (("list", ["clients", "list"]), ("show", ["clients", "show", "odd"]),
                      ("tail", ["audit", "tail"])):
        outputs[name] = cli(env, *cmd).stdout
    config = cli({**env, "IDP_KEYS_DIR": str(tmp_path / "[/]keys")}, "config", "show").stdout
    assert "[/]keys" in config
    import socket

    with socket.socket() as busy:  # serve prints its notes, then cannot bind: one error line, no server left
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        res = run_cli("serve", "--port", str(busy.getsockname()[1]),
                      env={**env, "IDP_KEYS_DIR": str(tmp_path / "[/]keys")})
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert "[/]keys" in res.stderr  # the note names the generated KEK file literally
    assert "address already in use" in res.stderr
    for name, out in outputs.items():
        flat = "".join(out.split())  # tables may wrap long cells
        for aud in odd:
            assert aud in flat, f"{name}: {aud!r} not shown literally:\n{out}"


# --- issue 6, item 22: one-line errors, clean output ---------------------------------------


def _sqlite_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A fresh SQLite IdP, with the default log level (info): the environment an operator has."""
    return {"IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.db'}", "IDP_KEYS_DIR": str(tmp_path / "keys"),
            "IDP_LOG_LEVEL": "info", **extra}


def test_commands_print_no_log_records_unless_verbose_and_still_audit(tmp_path: Path) -> None:
    env = _sqlite_env(tmp_path)
    add = ["clients", "add", "quiet", "--capabilities", "tools/call:x", "--audience", AUDIENCE]
    res = cli(env, *add)
    assert "quiet" in res.stdout and res.stderr == "", res.stderr  # no JSON audit line mixed in
    res = cli(env, "keys", "rotate", "--json")
    assert json.loads(res.stdout)["kid"] and res.stderr == "", res.stderr
    loud = cli(env, "--verbose", "clients", "add", "loud", "--capabilities", "tools/call:x", "--audience", AUDIENCE)
    records = [json.loads(line) for line in loud.stderr.splitlines()]
    assert [r["msg"] for r in records] == ["client.registered"] and records[0]["logger"] == "cbst.audit"
    # Quiet or not, every change is in the audit log.
    events = [json.loads(line)["event"] for line in cli(env, "audit", "tail", "--json").stdout.splitlines()]
    # first key, rotation; the audience became a registered resource with the first client
    assert events == ["client.registered", "resource.registered", "key.created", "key.created", "client.registered"]


def test_tables_never_cut_the_ids_a_user_types_next(tmp_path: Path) -> None:
    env = _sqlite_env(tmp_path, COLUMNS="60")  # a narrow terminal (or a pipe: 80)
    caps = " ".join(f"tools/call:tool-number-{i}" for i in range(8))
    auds = [a for i in range(3) for a in ("--audience", f"https://server-{i}.example.test/mcp")]
    name = "a-client-with-a-rather-long-name"
    client_id = cli_json(env, "clients", "add", name, "--capabilities", caps, *auds)["client_id"]
    kids = [cli_json(env, "keys", "rotate")["kid"] for _ in range(2)]
    listed = cli(env, "clients", "list").stdout
    assert client_id in listed and name in listed, listed
    assert "…" not in listed  # nothing is elided: long cells fold onto more lines
    keys = cli(env, "keys", "list").stdout
    assert all(kid in keys for kid in kids), keys
    assert "…" not in keys


def test_audit_tail_refuses_unknown_filters_and_lists_the_valid_ones(tmp_path: Path) -> None:
    env = _sqlite_env(tmp_path)
    added = cli_json(env, "clients", "add", "agent", "--capabilities", "tools/call:x", "--audience", AUDIENCE)
    client_id = added["client_id"]
    for bad in ("nosuch", "token.issud", "clients.*"):
        line = _clean_error(cli(env, "audit", "tail", "--event", bad, code=1))
        assert bad in line and "client.registered" in line and "token.issued" in line, line
        assert bad in cli_json(env, "audit", "tail", "--event", bad, code=1)["error"]
    line = _clean_error(cli(env, "audit", "tail", "--client", "nobody", code=1))
    assert "nobody" in line and "idp clients list" in line, line
    res = run_cli("audit", "tail", "--actor", "cli", env=env)  # an unknown filter key: a usage error
    assert res.returncode == 2 and "Traceback" not in res.stderr and "--actor" in res.stderr, res.stderr
    # Known filters still work: patterns, a client by id or by name, a known event with no records yet.
    matched = cli(env, "audit", "tail", "--event", "client.*", "--json").stdout.splitlines()
    assert [json.loads(r)["event"] for r in matched] == ["client.registered"]
    for ref in (client_id, "agent"):
        rows = [json.loads(r) for r in cli(env, "audit", "tail", "--client", ref, "--json").stdout.splitlines()]
        assert [(r["event"], r["client_id"]) for r in rows] == [("client.registered", client_id)]
    assert cli(env, "audit", "tail", "--event", "token.revoked", "--json").stdout == ""
    assert "no audit records" in cli(env, "audit", "tail", "--event", "token.revoked").stdout
    # A removed client's history stays reachable by its id.
    cli(env, "clients", "remove", "agent", "--yes")
    rows = [json.loads(r) for r in cli(env, "audit", "tail", "--client", client_id, "--json").stdout.splitlines()]
    assert [r["event"] for r in rows] == ["client.registered", "client.removed"]


def test_postgresql_url_without_the_driver_is_a_clear_error(tmp_path: Path) -> None:
    """psycopg is installed here; a package shadowing it stands in for an install without it."""
    shadow = tmp_path / "no-driver" / "psycopg"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ModuleNotFoundError("No module named \'psycopg\'", name="psycopg")\n')
    import os

    env = {"IDP_DATABASE_URL": "postgresql://idp:hunter2@127.0.0.1:5432/idp", "IDP_KEYS_DIR": str(tmp_path / "keys"),
           "PYTHONPATH": os.pathsep.join([str(shadow.parent), str(ROOT_DIR), os.environ.get("PYTHONPATH", "")])}
    _check_refusals([(["clients", "list"], {}, "psycopg"), (["keys", "rotate"], {}, "psycopg"),
                     (["db", "upgrade"], {}, "psycopg"), (["db", "current"], {}, "psycopg")], env, json_cases=4)


def test_psycopg_is_part_of_the_normal_install() -> None:
    import tomllib

    project = tomllib.loads((ROOT_DIR / "pyproject.toml").read_text())["project"]
    assert any(dep.replace(" ", "").startswith("psycopg[binary]") for dep in project["dependencies"])


@pytest.mark.postgres
def test_a_plain_postgresql_url_works(pg_database: str) -> None:
    assert pg_database.startswith("postgresql://")
    env = {"IDP_DATABASE_URL": pg_database, "IDP_KEYSTORE_KEK": random_kek(), "IDP_LOG_LEVEL": "info"}
    added = cli_json(env, "clients", "add", "pg", "--capabilities", "tools/call:x", "--audience", AUDIENCE)
    assert [c["client_id"] for c in cli_json(env, "clients", "list")] == [added["client_id"]]
    assert cli_json(env, "db", "current")["revision"]
