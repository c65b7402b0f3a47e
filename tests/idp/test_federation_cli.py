"""``idp federation``: add (with the discovery check), list, show, disable/enable, remove; --json; bad input.

The real CLI in a subprocess, on SQLite and PostgreSQL; the upstream whose discovery is checked
is a small OpenID provider on loopback (federation_testing.AttackerUpstream, unforged here).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from federation_testing import AttackerUpstream
from idp_testing import env_for, free_port, random_kek, run_cli

from idp.config import Settings
from idp.provider import Provider


@pytest.fixture
def upstream() -> Iterator[AttackerUpstream]:
    up = AttackerUpstream()
    yield up
    up.stop()


@pytest.fixture
def env(settings: Settings, provider: Provider) -> dict[str, str]:
    return env_for(settings)


def cli(env: dict[str, str], *args: str, input: str | None = None) -> tuple[int, str, str]:
    done = run_cli("federation", *args, env=env, input=input)
    return done.returncode, done.stdout, done.stderr


def rows(provider: Provider, table: str) -> list[dict[str, object]]:
    with provider.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.text(f"SELECT * FROM {table}"))]


def test_add_checks_discovery_and_seals_the_secret(env: dict[str, str], provider: Provider,
                                                   upstream: AttackerUpstream, settings: Settings) -> None:
    code, out, err = cli(env, "add", "corp", "--issuer", upstream.issuer, "--client-id", "cbst",
                         "--client-secret-stdin", "--label", "Corp SSO", "--scope", "openid email",
                         "--scope", "groups", "--json", input="top-secret-value\n")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["name"] == "corp" and shown["issuer"] == upstream.issuer and shown["label"] == "Corp SSO"
    assert shown["scopes"] == ["openid", "email", "groups"] and shown["client_secret"] == "set"
    assert shown["redirect_uri"] == f"{settings.issuer}/federation/callback/corp"
    assert "top-secret-value" not in out + err
    [row] = rows(provider, "federation_upstreams")
    assert "top-secret-value" not in json.dumps(row, default=str)  # sealed by the keystore
    assert json.loads(str(row["client_secret"]))["enc"] == "A256GCM"
    assert provider.federation.client_secret("corp") == "top-secret-value"
    [event] = [r for r in rows(provider, "audit_events") if r["event"] == "federation.upstream_added"]
    assert "top-secret-value" not in str(event["data"])


def test_a_sealed_secret_does_not_open_under_another_name(provider: Provider, upstream: AttackerUpstream) -> None:
    provider.federation.add("one", issuer=upstream.issuer, client_id="a", client_secret="s1")
    provider.federation.add("two", issuer=upstream.issuer, client_id="b", client_secret="s2")
    with provider.engine.begin() as conn:  # move one's envelope into two's row
        env = conn.execute(sa.text("SELECT client_secret FROM federation_upstreams WHERE name = 'one'")).scalar()
        conn.execute(sa.text("UPDATE federation_upstreams SET client_secret = :e WHERE name = 'two'"), {"e": env})
    from idp.keystore import KeystoreError

    with pytest.raises(KeystoreError):
        provider.federation.client_secret("two")


def test_list_show_disable_enable_remove(env: dict[str, str], provider: Provider, upstream: AttackerUpstream) -> None:
    assert cli(env, "add", "corp", "--issuer", upstream.issuer, "--client-id", "cbst", "--client-secret", "x")[0] == 0
    code, out, _ = cli(env, "add", "public", "--issuer", upstream.issuer, "--client-id", "pub", "--no-check")
    assert code == 0 and "Register" in out and "/federation/callback/public" in out
    code, out, _ = cli(env, "list", "--json")
    listed = json.loads(out)
    assert [u["name"] for u in listed] == ["corp", "public"]
    assert [u["client_secret"] for u in listed] == ["set", "none"]
    assert [u["scopes"] for u in listed] == [["openid", "email", "profile"]] * 2
    code, out, _ = cli(env, "list")
    assert code == 0 and "corp" in out and upstream.issuer in out
    code, out, _ = cli(env, "show", "corp", "--json")
    assert code == 0 and json.loads(out)["client_id"] == "cbst" and json.loads(out)["client_secret"] == "set"
    code, out, _ = cli(env, "show", "corp")
    assert code == 0 and "redirect_uri" in out
    assert json.loads(cli(env, "disable", "corp", "--json")[1])["enabled"] is False
    assert json.loads(cli(env, "enable", "corp", "--json")[1])["enabled"] is True
    code, out, _ = cli(env, "remove", "corp", "--json")
    assert code == 1 and "without --yes" in json.loads(out)["error"]
    code, out, _ = cli(env, "remove", "corp", "--yes", "--json")
    assert code == 0 and json.loads(out) == {"removed": "corp"}
    assert [u["name"] for u in json.loads(cli(env, "list", "--json")[1])] == ["public"]
    events = [r["event"] for r in rows(provider, "audit_events") if str(r["event"]).startswith("federation.")]
    assert events == ["federation.upstream_added", "federation.upstream_added", "federation.upstream_disabled",
                      "federation.upstream_enabled", "federation.upstream_removed"]


def test_discovery_naming_another_issuer_is_refused(env: dict[str, str], provider: Provider,
                                                    upstream: AttackerUpstream) -> None:
    upstream.discovery_issuer = "https://accounts.google.com"
    code, out, _ = cli(env, "add", "corp", "--issuer", upstream.issuer, "--client-id", "c", "--client-secret", "s",
                       "--json")
    assert code == 1
    error = json.loads(out)["error"]
    assert "names another issuer" in error and "--no-check" in error
    assert rows(provider, "federation_upstreams") == []
    # With --no-check the operator takes it anyway (logins are still checked, and refused).
    code, _, _ = cli(env, "add", "corp", "--issuer", upstream.issuer, "--client-id", "c", "--client-secret", "s",
                     "--no-check")
    assert code == 0


def test_unreachable_issuer_is_one_line(env: dict[str, str], provider: Provider) -> None:
    code, _, err = cli(env, "add", "corp", "--issuer", f"http://127.0.0.1:{free_port()}", "--client-id", "c",
                         "--client-secret", "s")
    assert code == 1 and "cannot be reached" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert rows(provider, "federation_upstreams") == []


@pytest.mark.parametrize(("args", "message"), [
    (["Bad Name", "--issuer", "https://idp.example", "--client-id", "c"], "upstream name"),
    (["../x", "--issuer", "https://idp.example", "--client-id", "c"], "upstream name"),
    (["corp", "--issuer", "http://idp.example", "--client-id", "c"], "https"),
    (["corp", "--issuer", "https://idp.example?x=1", "--client-id", "c"], "without query"),
    (["corp", "--issuer", "https://idp.example#f", "--client-id", "c"], "without query"),
    (["corp", "--issuer", "ftp://idp.example", "--client-id", "c"], "https"),
    (["corp", "--issuer", "https://user:pw@idp.example", "--client-id", "c"], "user information"),
    (["corp", "--issuer", "not a url", "--client-id", "c"], "https"),
    (["corp", "--issuer", "https://idp.example", "--client-id", "c", "--scope", 'bad"scope'], "invalid scope"),
    (["corp", "--issuer", "https://idp.example", "--client-id", "c", "--client-secret", "s",
      "--client-secret-stdin"], "not both"),
])
def test_bad_input_is_refused(tmp_path: Path, args: list[str], message: str) -> None:
    """In-process (typer's runner, SQLite only): the input is refused before any database work."""
    from typer.testing import CliRunner

    from idp.cli import app

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'idp.db'}", keys_dir=tmp_path / "keys",
                        keystore_kek=random_kek())
    result = CliRunner().invoke(app, ["federation", "add", *args, "--json"], input="s\n", env=env_for(settings))
    assert result.exit_code == 1 and message in json.loads(result.stdout)["error"], result.stdout
    assert not (tmp_path / "idp.db").exists()  # refused before the database was even opened


def test_bad_values_in_the_registry(provider: Provider, upstream: AttackerUpstream) -> None:
    from idp.federation.upstreams import UpstreamError

    for kwargs in ({"client_id": ""}, {"client_id": "x\n"}, {"label": "a\x00b"}, {"client_secret": ""},
                   {"label": "x" * 129}):
        with pytest.raises(UpstreamError):
            provider.federation.add("corp", **{"issuer": upstream.issuer, "client_id": "c", "client_secret": "s",
                                               **kwargs})  # type: ignore[arg-type]
    assert rows(provider, "federation_upstreams") == []


def test_duplicate_unknown_and_empty_stdin(env: dict[str, str], provider: Provider, upstream: AttackerUpstream) -> None:
    base = ["add", "corp", "--issuer", upstream.issuer, "--client-id", "c", "--no-check"]
    assert cli(env, *base)[0] == 0
    code, out, _ = cli(env, *base, "--json")
    assert code == 1 and "already exists" in json.loads(out)["error"]
    code, out, _ = cli(env, "add", "other", "--issuer", upstream.issuer, "--client-id", "c", "--client-secret-stdin",
                       "--no-check", "--json", input="")
    assert code == 1 and "no client secret" in json.loads(out)["error"]
    for command in (["show", "nope"], ["remove", "nope", "--yes"], ["disable", "nope"]):
        code, out, _ = cli(env, *command, "--json")
        assert code == 1 and "no upstream 'nope'" in json.loads(out)["error"], command
    code, _, err = cli(env, "show", "nope")
    assert code == 1 and err.startswith("error:")
    assert cli(env, "list", "--json")[1].strip().startswith("[")
    assert len(rows(provider, "federation_upstreams")) == 1
