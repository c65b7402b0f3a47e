"""``idp users`` and ``idp grants``, run as real subprocesses against the database of an
in-process provider (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from idp_testing import AUDIENCE, env_for, run_cli

from idp import audit
from idp.config import Settings
from idp.provider import Provider
from sdk.capabilities import CapabilitySet

pytestmark = pytest.mark.slow


def cli(env: dict[str, str], *args: str, code: int = 0, input: str | None = None) -> subprocess.CompletedProcess[str]:
    res = run_cli(*args, env=env, input=input)
    assert "Traceback" not in res.stdout + res.stderr, res.stderr
    assert res.returncode == code, (args, res.returncode, res.stdout, res.stderr)
    return res


def cli_json(env: dict[str, str], *args: str, code: int = 0, input: str | None = None) -> Any:
    return json.loads(cli(env, *args, "--json", code=code, input=input).stdout)


def test_users_add_list_show_passwd_remove(settings: Settings, provider: Provider) -> None:
    env = env_for(settings)
    added = cli_json(env, "users", "add", "alice", "--email", "alice@example.test", "--group", "dev", "--group", "ops",
                     "--password-stdin", input="s3cret-password\n")
    assert added["username"] == "alice" and added["email"] == "alice@example.test" and added["groups"] == ["dev", "ops"]
    subject = added["subject"]
    assert subject.startswith("usr_") and "alice" not in subject  # a stable random id, not the username
    assert provider.users.authenticate("alice", "s3cret-password") is not None
    assert provider.users.authenticate("alice", "s3cret-password\n") is None
    listed = cli_json(env, "users", "list")
    assert [u["username"] for u in listed] == ["alice"]
    assert "s3cret" not in json.dumps(listed) and "argon2" not in json.dumps(listed)
    human = cli(env, "users", "list").stdout
    assert "alice" in human and subject in human
    assert cli_json(env, "users", "show", subject)["username"] == "alice"
    assert "alice@example.test" in cli(env, "users", "show", "alice").stdout
    # the stored hash is argon2id
    import sqlalchemy as sa

    with provider.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT password_hash FROM users")).scalar_one()
    assert stored.startswith("$argon2id$") and "s3cret" not in stored

    changed = cli_json(env, "users", "passwd", "alice", "--password-stdin", input="another-password\n")
    assert changed["password_changed"] is True
    assert provider.users.authenticate("alice", "s3cret-password") is None
    assert provider.users.authenticate("alice", "another-password") is not None

    assert cli_json(env, "users", "remove", "alice", "--yes")["subject"] == subject
    assert cli_json(env, "users", "list") == []
    recorded = [r["event"] for r in audit.tail(provider.engine) if r["event"].startswith("user.")]
    assert recorded == ["user.added", "user.password_changed", "user.removed"]
    # a new alice is a new subject: she inherits nobody's grants
    again = cli_json(env, "users", "add", "alice", "--password-stdin", input="s3cret-password\n")
    assert again["subject"] != subject


def test_users_bad_input_is_one_line_and_exit_1(settings: Settings, provider: Provider) -> None:
    env = env_for(settings)
    cli(env, "users", "add", "bob", "--password-stdin", input="long-enough-pw\n")
    cases = [
        (["users", "add", "bob", "--password-stdin"], "long-enough-pw\n", "already exists"),
        (["users", "add", "bad name", "--password-stdin"], "long-enough-pw\n", "username"),
        (["users", "add", "carol", "--password-stdin"], "short\n", "8 to 1024"),
        (["users", "add", "carol", "--password-stdin"], "", "no password"),
        (["users", "add", "carol", "--email", "not-an-email", "--password-stdin"], "long-enough-pw\n", "email"),
        (["users", "add", "carol", "--group", "bad group!", "--password-stdin"], "long-enough-pw\n", "group"),
        (["users", "add", "carol"], None, "--password-stdin"),  # no terminal to prompt on
        (["users", "show", "nobody"], None, "no user"),
        (["users", "remove", "nobody", "--yes"], None, "no user"),
        (["users", "remove", "bob"], None, "without --yes"),
        (["users", "passwd", "nobody", "--password-stdin"], "long-enough-pw\n", "no user"),
    ]
    for i, (args, stdin, message) in enumerate(cases):
        res = cli(env, *args, "--json", code=1, input=stdin)
        assert message in json.loads(res.stdout)["error"], (args, res.stdout)
        if i % 4:
            continue  # the human form of a few: one line on stderr
        res = cli(env, *args, code=1, input=stdin)
        assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, (args, res.stderr)
    assert [u.username for u in provider.users.list()] == ["bob"]


def test_grants_list_and_revoke(settings: Settings, provider: Provider) -> None:
    env = env_for(settings)
    user = provider.users.add("dave", "long-enough-pw")
    with audit.transaction(provider.engine) as tx:
        provider.consents.remember(tx, user.subject, "client-a", AUDIENCE, CapabilitySet.parse("tools/call:git-log"))
        provider.consents.remember(tx, user.subject, "client-a", "https://other.test/mcp",
                                   CapabilitySet.parse("prompts/get:x"))
        provider.consents.remember(tx, "usr_someone", "client-b", AUDIENCE, CapabilitySet.parse("tools/call:deploy"))
    everything = cli_json(env, "grants", "list")
    assert len(everything) == 3
    mine = cli_json(env, "grants", "list", "--subject", "dave")  # a username names its subject
    assert {g["resource"] for g in mine} == {AUDIENCE, "https://other.test/mcp"}
    assert all(g["subject"] == user.subject for g in mine)
    assert [g["client_id"] for g in cli_json(env, "grants", "list", "--client", "client-b")] == ["client-b"]
    assert "tools/call:deploy" in cli(env, "grants", "list").stdout

    out = cli_json(env, "grants", "revoke", "dave", "client-a", AUDIENCE)
    assert out["resources"] == [AUDIENCE] and out["token_families_revoked"] == 0
    assert provider.consents.get(user.subject, "client-a", AUDIENCE) == CapabilitySet()
    assert len(provider.consents.get(user.subject, "client-a", "https://other.test/mcp")) == 1
    out = cli_json(env, "grants", "revoke", user.subject, "client-a")  # every resource
    assert out["resources"] == ["https://other.test/mcp"]
    assert len(cli_json(env, "grants", "list")) == 1
    revoked = [r for r in audit.tail(provider.engine) if r["event"] == "consent.revoked"]
    assert len(revoked) == 2 and revoked[0]["data"]["subject"] == user.subject
    # nothing left to revoke: one-line error, exit 1
    res = cli(env, "grants", "revoke", "dave", "client-a", code=1)
    assert "no remembered grant" in res.stderr
    assert "no remembered grant" in json.loads(cli(env, "grants", "revoke", "dave", "client-a", "--json",
                                                   code=1).stdout)["error"]
    cli(env, "grants", "revoke", "dave", code=2)  # usage error


def test_grants_revoke_revokes_the_tokens_issued_under_it(web_settings: Settings, web_provider: Provider,
                                                         browser: Any, client_id: str) -> None:
    """Log in and consent through the pages, redeem the code for tokens (with a refresh token),
    then `idp grants revoke`: the remembered grant is gone and so are the tokens issued under it."""
    from .conftest import REDIRECT, SECRETS
    from .flows import Pkce, authorize_params, consent_form, follow, login, redirect_params, submit_consent

    pkce = Pkce()
    params = authorize_params(client_id, "tools/call:git-status offline_access", pkce)
    from urllib.parse import urlencode

    page = follow(browser, browser.get("/authorize?" + urlencode(params)))
    got = redirect_params(submit_consent(browser, consent_form(follow(browser, login(browser, page)))))
    resp = browser.post("/token", data={"grant_type": "authorization_code", "code": got["code"],
                                        "redirect_uri": REDIRECT, "code_verifier": pkce.verifier,
                                        "resource": AUDIENCE}, auth=(client_id, SECRETS[client_id]))
    assert resp.status_code == 200, resp.text
    tokens = resp.json()
    assert tokens["scope"].split()[0] == "tools/call:git-status" and "refresh_token" in tokens

    env = env_for(web_settings)
    [grant] = cli_json(env, "grants", "list", "--client", client_id)
    out = cli_json(env, "grants", "revoke", grant["subject"], client_id)
    assert out["resources"] == [AUDIENCE] and out["token_families_revoked"] == 1
    refreshed = browser.post("/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                             auth=(client_id, SECRETS[client_id]))
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
    introspected = browser.post("/introspect", data={"token": tokens["access_token"]},
                                auth=(client_id, SECRETS[client_id]))
    assert introspected.status_code == 200 and introspected.json()["active"] is False
    # and the next authorization asks again
    page = follow(browser, browser.get("/authorize?" + urlencode(authorize_params(client_id, "tools/call:git-status"))))
    assert consent_form(page).offered == {"tools/call:git-status": True}
