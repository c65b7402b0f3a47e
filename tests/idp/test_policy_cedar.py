"""Cedar policies decide what may be granted (idp/policy.py, docs/policy.md): the real cedarpy engine."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from sdk.capabilities import CapabilitySet

from idp.config import Settings
from idp.oauth2.subject import CLIENT, Subject
from idp.policy import Policy, PolicyError, load_folder, split_statements
from idp.provider import Provider
from idp_testing import random_kek
from policy_testing import EXAMPLES, OTHER, SERVER, Catalogues, client, write

OPS = '''
@id("ops-deploy")
permit (principal is CBST::User, action == CBST::Action::"grant", resource is CBST::Capability)
when {
  principal.groups.contains("ops") && resource.server == "https://mcp.example.com/mcp" &&
  resource.method == "tools/call" && resource has target && resource.target like "deploy-*"
};
'''
ALICE = Subject("alice", claims={"groups": ["ops", "dev"], "username": "alice"})
BOB = Subject("bob", claims={"groups": ["dev"]})


def caps(scope: str) -> CapabilitySet:
    return CapabilitySet.parse(scope)


def test_ops_members_may_be_granted_deploy_tools_on_one_server(tmp_path: Path) -> None:
    policy = Policy(write(tmp_path / "p", {"ops.cedar": OPS}))
    decision = policy.decide(ALICE, client(), SERVER, caps("tools/call:deploy-prod tools/call:status"))
    assert decision.allowed == caps("tools/call:deploy-prod")
    assert [str(c) for c in decision.denied] == ["tools/call:status"]  # deny by default, per capability
    assert not len(policy.decide(BOB, client(), SERVER, caps("tools/call:deploy-prod")).allowed)
    assert not len(policy.decide(ALICE, client(), OTHER, caps("tools/call:deploy-prod")).allowed)  # other server
    # The same rule is not a rule for clients asking for themselves.
    assert not len(policy.decide(Subject("alice", CLIENT), client("alice"), SERVER,
                                 caps("tools/call:deploy-prod")).allowed)


def test_patterns_are_evaluated_as_themselves(tmp_path: Path) -> None:
    policy = Policy(write(tmp_path / "p", {"ops.cedar": OPS}))
    decide = policy.decide
    # deploy-* and narrower patterns match "deploy-*" literally; wider ones do not.
    assert decide(ALICE, client(), SERVER, caps("tools/call:deploy-*")).allowed == caps("tools/call:deploy-*")
    assert len(decide(ALICE, client(), SERVER, caps("tools/call:deploy-prod-*")).allowed) == 1
    for wider in ("tools/call:*", "tools/call:**", "tools/call:dep*", "tools/call:*deploy-x"):
        assert not len(decide(ALICE, client(), SERVER, caps(wider)).allowed), wider
    # A policy may refuse patterns altogether.
    exact = write(tmp_path / "q", {"exact.cedar": OPS.replace("resource has target", "!resource.wildcard && "
                                                                                 "resource has target")})
    assert not len(Policy(exact).decide(ALICE, client(), SERVER, caps("tools/call:deploy-*")).allowed)
    assert len(Policy(exact).decide(ALICE, client(), SERVER, caps("tools/call:deploy-a")).allowed) == 1


def test_claims_of_federated_users_and_malformed_claims(tmp_path: Path) -> None:
    text = '''
    permit (principal is CBST::User, action, resource)
    when { principal.issuer == "https://accounts.example" && principal has upstream && principal.upstream == "corp"
           && principal.groups.contains("admins") && principal has email && principal.email like "*@example.com" };
    '''
    policy = Policy(write(tmp_path / "p", {"fed.cedar": text}))
    want = caps("tools/call:x")
    federated = Subject("corp|123", claims={"issuer": "https://accounts.example", "upstream": "corp",
                                            "groups": ["admins"], "email": "eve@example.com"})
    assert len(policy.decide(federated, client(), SERVER, want).allowed) == 1
    # Another upstream's issuer, a local account, a groups claim that is not a list of strings: denied.
    for claims in ({**federated.claims, "issuer": "https://evil.example"},
                   {k: v for k, v in federated.claims.items() if k != "issuer"},
                   {**federated.claims, "groups": "admins"},
                   {**federated.claims, "groups": [["admins"]]},
                   {**federated.claims, "email": 42}):
        assert not len(policy.decide(Subject("corp|123", claims=claims), client(), SERVER, want).allowed), claims


def test_catalogue_annotations_reach_the_policy(tmp_path: Path) -> None:
    text = '''
    permit (principal, action, resource);
    forbid (principal, action, resource) when { !context.client_reviewed && resource has destructive &&
                                               resource.destructive };
    forbid (principal, action, resource) when { resource.method == "tools/call" && !(resource has in_catalogue) };
    '''
    catalogue = {"tools": [{"name": "rm"}, {"name": "ls", "annotations": {"readOnlyHint": True}},
                           {"name": "safe", "annotations": {"destructiveHint": False}}]}
    policy = Policy(write(tmp_path / "p", {"g.cedar": text}), Catalogues({SERVER: catalogue}))
    dcr = client("dyn", registered_by="dcr")
    # A tool without annotations is destructive (the MCP default); a pattern is destructive if any match is.
    assert policy.decide(ALICE, dcr, SERVER, caps("tools/call:rm tools/call:ls tools/call:safe tools/call:*")
                         ).allowed == caps("tools/call:ls tools/call:safe")
    assert len(policy.decide(ALICE, client(), SERVER, caps("tools/call:rm")).allowed) == 1  # reviewed client
    # No catalogue known for the other server: the third policy refuses its tools.
    assert not len(policy.decide(ALICE, client(), OTHER, caps("tools/call:ls")).allowed)


def test_broken_folders_refuse_to_load_naming_file_and_line(tmp_path: Path) -> None:
    folder = write(tmp_path / "p", {"a.cedar": OPS + "\n// a comment; with a semicolon\npermit (principal, action, "
                                                     'resource) when { resource.nope == "x" };\n',
                                    "b.cedar": 'permit (principal, action, resource) when { "a;b" like "*" };\n\n'
                                               "permit (principal, action resource);\n"})
    with pytest.raises(PolicyError) as err:
        load_folder(folder)
    text = str(err.value)
    assert f"{folder / 'a.cedar'}:10: attribute `nope`" in text
    assert f"{folder / 'b.cedar'}:3: syntax error" in text
    assert len(err.value.problems) == 2
    for files in ({}, {"x.cedar": "permit (principal, action, resource) when { resource.destructive };"},
                  {"x.cedar": "permit (principal == ?principal, action, resource);"},
                  {"x.cedar": OPS, "s.cedarschema": "namespace CBST { entity "}):
        with pytest.raises(PolicyError):
            Policy(write(tmp_path / f"f{len(os.listdir(tmp_path))}", files))
    with pytest.raises(PolicyError):
        Policy(tmp_path / "missing")


def test_a_broken_folder_refuses_to_start_the_provider(tmp_path: Path) -> None:
    folder = write(tmp_path / "p", {"a.cedar": "permit (principal, action, resource"})
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'idp.db'}", keys_dir=tmp_path / "keys",
                        keystore_kek=random_kek(), policy_dir=folder)
    with pytest.raises(PolicyError, match=r"a\.cedar:1: syntax error"):
        Provider.open(settings)
    assert not (tmp_path / "idp.db").exists()  # refused before touching the database


def test_reload_on_change_keeps_the_last_good_set(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = write(tmp_path / "p", {"ops.cedar": OPS})
    policy = Policy(folder, reload_interval=0.01)
    want = caps("tools/call:deploy-prod")
    assert len(policy.decide(ALICE, client(), SERVER, want).allowed) == 1  # (cached from here on)

    def change(text: str) -> None:
        (folder / "ops.cedar").write_text(text)
        stat = (folder / "ops.cedar").stat()
        os.utime(folder / "ops.cedar", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # coarse clocks
        time.sleep(0.02)

    change(OPS.replace('"ops"', '"sre"'))
    assert not len(policy.decide(ALICE, client(), SERVER, want).allowed)  # reloaded: the cache is gone too
    with caplog.at_level(logging.ERROR, logger="cbst.idp.policy"):
        change("permit (principal, action, resource) when { resource.nope };")
        assert not len(policy.decide(ALICE, client(), SERVER, want).allowed)  # last good set kept
    assert "policy reload failed" in caplog.text
    change(OPS)
    assert len(policy.decide(ALICE, client(), SERVER, want).allowed) == 1
    (folder / ".#ops.cedar").write_text("not cedar")  # an editor's lock file is not a policy
    time.sleep(0.02)
    assert policy.reload_if_changed(force=True) is False
    assert len(policy.decide(ALICE, client(), SERVER, want).allowed) == 1


def test_evaluation_errors_fail_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Validated, but overflows at run time. Cedar itself would ignore an erroring forbid and allow;
    # the IdP denies whenever any policy errors.
    text = '''
    permit (principal, action, resource);
    forbid (principal, action, resource) when { resource.method == "tools/call" && 9223372036854775807 + 1 > 0 };
    '''
    policy = Policy(write(tmp_path / "p", {"e.cedar": text}))
    decision = policy.decide(ALICE, client(), SERVER, caps("tools/call:x prompts/get:y"))
    assert decision.allowed == caps("prompts/get:y") and [str(c) for c in decision.denied] == ["tools/call:x"]

    import cedarpy

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("engine failure")

    monkeypatch.setattr(cedarpy, "is_authorized_batch", broken)
    decision = policy.decide(BOB, client(), SERVER, caps("prompts/get:y"))  # (not cached: another subject)
    assert not len(decision.allowed) and len(decision.denied) == 1


def test_without_a_folder_everything_is_permitted() -> None:
    policy = Policy()
    want = caps("tools/call:* resources/read:file:///** logging/setLevel")
    assert policy.decide(ALICE, client(), SERVER, want).allowed == want
    assert policy.source.origin == "built-in"


def test_the_shipped_examples_load() -> None:
    source = load_folder(EXAMPLES)
    assert {s.id for s in source.statements} >= {"ops-deploy", "clients"}


def test_statement_splitter_skips_strings_and_comments() -> None:
    text = 'permit (principal, action, resource) when { "a;\\"b;" like "*" }; // x; y\n\n  forbid (p, a, r);'
    assert [line for line, _ in split_statements(text)] == [1, 3]


def test_ids_and_claims_are_data_not_policy(tmp_path: Path) -> None:
    """Quotes, newlines and Cedar syntax in a subject id or claim cannot change what a policy means."""
    policy = Policy(write(tmp_path / "p", {"ops.cedar": OPS}))
    want = caps("tools/call:deploy-prod")
    for sub in ('x" || true || "', "a\nb", 'CBST::User::"alice"', ""):
        tricky = Subject(sub, claims={"groups": ['ops") || true || ("'], "username": 'alice"'})
        assert not len(policy.decide(tricky, client(), SERVER, want).allowed), sub
    assert len(policy.decide(Subject('x" || true || "', claims={"groups": ["ops"]}), client(), SERVER,
                             want).allowed) == 1
