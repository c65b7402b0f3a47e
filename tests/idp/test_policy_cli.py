"""``idp policy check`` and ``idp policy test`` (the real CLI in a subprocess): what an operator's CI runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from idp_testing import run_cli
from policy_testing import EXAMPLES, write

ENV = {"IDP_LOG_LEVEL": "warning", "COLUMNS": "200"}


def test_check_good_and_bad_folders(tmp_path: Path) -> None:
    res = run_cli("policy", "check", str(EXAMPLES), env=ENV)
    assert res.returncode == 0 and "ok: 6 policies in 2 file(s)" in res.stdout, res.stderr
    data = json.loads(run_cli("policy", "check", "--json", str(EXAMPLES), env=ENV).stdout)
    assert data["ok"] is True and data["policies"] == 6 and data["problems"] == []

    bad = write(tmp_path / "bad", {"a.cedar": "permit (principal, action, resource);\n\n"
                                              "permit (principal, action, resource) when { resource.target == 1 };\n",
                                   "b.cedar": "forbid (principal, action resource);\n"})
    res = run_cli("policy", "check", str(bad), env=ENV)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"{bad / 'a.cedar'}:3:" in res.stdout and f"{bad / 'b.cedar'}:1: syntax error" in res.stdout
    res = run_cli("policy", "check", "--json", str(bad), env=ENV)
    data = json.loads(res.stdout)
    assert res.returncode == 1 and data["ok"] is False
    assert sorted({(Path(p["file"]).name, p["line"]) for p in data["problems"]}) == [("a.cedar", 3), ("b.cedar", 1)]


def test_check_defaults_to_the_configured_folder(tmp_path: Path) -> None:
    res = run_cli("policy", "check", "--json", env={**ENV, "IDP_POLICY_DIR": str(EXAMPLES)})
    assert res.returncode == 0 and json.loads(res.stdout)["ok"]
    res = run_cli("policy", "check", "--json", env=ENV)
    assert res.returncode == 1 and "policy_dir" in json.loads(res.stdout)["error"]


def test_the_shipped_test_cases_pass() -> None:
    res = run_cli("policy", "test", str(EXAMPLES / "tests.toml"), env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "10 passed, 0 failed" in res.stdout and "FAIL" not in res.stdout
    data = json.loads(run_cli("policy", "test", "--json", str(EXAMPLES / "tests.toml"), env=ENV).stdout)
    assert data["passed"] == 10 and data["failed"] == 0
    ops = next(c for c in data["cases"] if c["name"] == "ops may deploy to prod")
    assert ops["actual"] == "allow" and any("(ops-deploy)" in r for r in ops["reasons"])


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    shutil.copytree(EXAMPLES, folder)
    cases = (folder / "tests.toml").read_text()
    # Claim that bob (not in ops) may deploy: the policy says otherwise.
    (folder / "tests.toml").write_text(cases.replace('capability = "tools/call:deploy-staging"\nexpect = "deny"',
                                                     'capability = "tools/call:deploy-staging"\nexpect = "allow"'))
    res = run_cli("policy", "test", str(folder / "tests.toml"), env=ENV)
    assert res.returncode == 1 and "9 passed, 1 failed" in res.stdout and "FAIL" in res.stdout
    data = json.loads(run_cli("policy", "test", "--json", str(folder / "tests.toml"), env=ENV).stdout)
    [failed] = [c for c in data["cases"] if not c["passed"]]
    assert failed["name"] == "not in ops: no deploy" and failed["expected"] == "allow" and failed["actual"] == "deny"


def test_json_cases_and_client_principals(tmp_path: Path) -> None:
    write(tmp_path / "p", {"c.cedar": 'permit (principal is CBST::Client, action, resource) '
                                      'when { principal.reviewed && principal.name == "ci" };'})
    cases = {"policies": "p", "case": [
        {"principal": {"kind": "client", "id": "c1"}, "client": {"name": "ci"}, "resource": "https://r.example/mcp",
         "capability": "tools/call:x", "expect": "allow"},
        {"principal": {"kind": "client", "id": "c2"}, "client": {"name": "ci", "reviewed": False},
         "resource": "https://r.example/mcp", "capability": "tools/call:x", "expect": "deny"},
        {"principal": {"kind": "user", "id": "u"}, "resource": "https://r.example/mcp",
         "capability": "tools/call:x", "expect": "deny"}]}
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    res = run_cli("policy", "test", "--json", str(tmp_path / "cases.json"), env=ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["passed"] == 3


def test_broken_case_files_and_policies_are_one_line_errors(tmp_path: Path) -> None:
    write(tmp_path / "p", {"ok.cedar": "permit (principal, action, resource);"})
    write(tmp_path / "broken", {"x.cedar": "permit (principal, action, resource"})
    good = '[[case]]\nprincipal = { kind = "user", id = "u" }\nresource = "https://r/mcp"\n' \
           'capability = "tools/call:x"\nexpect = "allow"\n'
    bad_files = {
        "syntax.toml": "[[case]\n",
        "nocases.toml": 'policies = "p"\n',
        "expect.toml": 'policies = "p"\n' + good.replace('"allow"', '"maybe"'),
        "capability.toml": 'policies = "p"\n' + good.replace("tools/call:x", "tools/call"),
        "principal.toml": 'policies = "p"\n' + good.replace('kind = "user", id = "u"', 'kind = "robot"'),
        "policies.toml": 'policies = "broken"\n' + good,
    }
    for name, text in bad_files.items():
        (tmp_path / name).write_text(text)
        res = run_cli("policy", "test", "--json", str(tmp_path / name), env=ENV)
        assert res.returncode == 1 and "Traceback" not in res.stderr, (name, res.stderr)
        assert "error" in json.loads(res.stdout), name
    res = run_cli("policy", "test", str(tmp_path / "policies.toml"), env=ENV)
    assert res.returncode == 1 and "x.cedar:1: syntax error" in res.stderr


def test_schema_is_printed() -> None:
    res = run_cli("policy", "schema", env=ENV)
    assert res.returncode == 0 and "namespace CBST" in res.stdout and "action grant" in res.stdout


def test_serve_refuses_to_start_with_a_broken_policy_folder(tmp_path: Path) -> None:
    from idp_testing import free_port

    folder = write(tmp_path / "p", {"a.cedar": "permit (principal, action, resource) when { resource.nope };"})
    env = {**ENV, "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.db'}", "IDP_KEYS_DIR": str(tmp_path / "keys"),
           "IDP_POLICY_DIR": str(folder)}
    res = run_cli("serve", "--port", str(free_port()), env=env, timeout=60)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"{folder / 'a.cedar'}:1: attribute `nope`" in res.stderr
