"""``idp policy``: check Cedar policies and run the operator's policy test cases (for CI).

Test case files are TOML (``.toml``) or JSON, one or more cases each (docs/policy.md)::

    policies = "."                      # the folder, relative to this file (else --policies, policy_dir)

    [[resources]]                       # optional: catalogues the cases' resources have
    uri = "https://mcp.example.com/mcp"
    tools = [{ name = "deploy-prod", annotations = { destructiveHint = true } }]

    [[case]]
    name = "ops may deploy"
    principal = { kind = "user", id = "alice", claims = { groups = ["ops"] } }
    client = { id = "claude-desktop", reviewed = true }     # optional
    resource = "https://mcp.example.com/mcp"
    capability = "tools/call:deploy-prod"
    expect = "allow"                    # or "deny"
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from sdk.capabilities import Capability, CapabilityError, CapabilitySet

from ..oauth2.client import DYNAMIC, OPERATOR, ClientRecord
from ..oauth2.subject import CLIENT, USER, Subject
from ..policy import SCHEMA, PolicyError, PolicySource, check_folder, context_for, entities_for, evaluate, load_folder
from .common import JsonOpt, emit_json, fail, load_settings, out, print_table

app = typer.Typer(help="Check Cedar policies and run policy test cases.", no_args_is_help=True)

MAX_CASES = 10_000


def _folder(folder: Path | None, as_json: bool) -> Path:
    if folder is not None:
        return folder
    settings = load_settings(as_json)
    if settings.policy_dir is None:
        fail("name the policy folder (or set policy_dir / IDP_POLICY_DIR)", as_json=as_json)
    return settings.policy_dir


@app.command("check")
def check(
    folder: Annotated[Path | None, typer.Argument(help="Policy folder (default: policy_dir).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Parse the policies and validate them against the schema; file:line for every problem."""
    path = _folder(folder, as_json)
    statements, problems = check_folder(path)
    files = sorted({s.file for s in statements})
    if as_json:
        emit_json({"folder": str(path), "ok": not problems, "policies": len(statements), "files": files,
                   "problems": [p.to_json() for p in problems]})
    elif problems:
        for problem in problems:
            out.print(f"[red]{escape(str(problem))}[/]")
        out.print(f"[bold red]{len(problems)} problem(s)[/] in {escape(str(path))}")
    else:
        out.print(f"[green]ok[/]: {len(statements)} policies in {len(files)} file(s) of {escape(str(path))}")
    if problems:
        raise typer.Exit(1)


@app.command("schema")
def schema() -> None:
    """Print the Cedar schema the IdP validates policies against (copy it as *.cedarschema to extend)."""
    print(SCHEMA, end="")


class CaseError(ValueError):
    pass


def _load_cases(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
        doc = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CaseError(f"{path}: cannot read test cases: {exc}") from None
    if not isinstance(doc, dict):
        raise CaseError(f"{path}: expected an object with a 'case' list")
    cases = doc.get("case", doc.get("cases"))
    if not isinstance(cases, list) or not cases or len(cases) > MAX_CASES:
        raise CaseError(f"{path}: expected a non-empty 'case' list (at most {MAX_CASES})")
    return doc, cases


def _client_of(case: dict[str, Any], where: str) -> ClientRecord:
    spec = case.get("client") or {}
    if not isinstance(spec, dict):
        raise CaseError(f"{where}: client must be a table/object")
    client_id = str(spec.get("id", "test-client"))
    registered_by = OPERATOR if spec.get("reviewed", True) else str(spec.get("registered_by", DYNAMIC))
    return ClientRecord(client_id=client_id, name=str(spec.get("name", client_id)), auth_method="none",
                        secret_hash=None, jwks=None, capabilities=CapabilitySet(), audiences=(), enabled=True,
                        created_at=0, updated_at=0, kind=str(spec.get("kind", "client")),
                        registered_by=registered_by)


def _subject_of(case: dict[str, Any], client: ClientRecord, where: str) -> Subject:
    spec = case.get("principal")
    if not isinstance(spec, dict) or spec.get("kind", USER) not in (USER, CLIENT):
        raise CaseError(f"{where}: principal must be {{kind = \"user\"|\"client\", id = ..., claims = {{...}}}}")
    if spec.get("kind", USER) == CLIENT:
        return Subject(str(spec.get("id", client.client_id)), CLIENT)
    claims = spec.get("claims") or {}
    if not isinstance(claims, dict) or "id" not in spec:
        raise CaseError(f"{where}: a user principal needs an id (and claims as a table/object)")
    return Subject(str(spec["id"]), USER, claims)


def run_case(source: PolicySource, case: Any, where: str, catalogues: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if not isinstance(case, dict):
        raise CaseError(f"{where}: a case must be a table/object")
    expect = case.get("expect")
    if expect not in ("allow", "deny"):
        raise CaseError(f"{where}: expect must be \"allow\" or \"deny\"")
    resource = case.get("resource")
    if not isinstance(resource, str) or not resource:
        raise CaseError(f"{where}: resource (the MCP server URI) is required")
    try:
        cap = Capability.parse(str(case.get("capability", "")))
    except CapabilityError as exc:
        raise CaseError(f"{where}: {exc}") from None
    client = _client_of(case, where)
    subject = _subject_of(case, client, where)
    if subject.kind == CLIENT:
        client = dataclasses.replace(client, client_id=subject.id)
    requested = CapabilitySet([cap])
    principal, caps = entities_for(subject, client, resource, requested, catalogues.get(resource))
    [result] = evaluate(source, principal, caps, requested, context_for(client, resource))
    actual = "allow" if result.allowed else "deny"
    return {"name": str(case.get("name", where)), "where": where, "capability": str(cap), "resource": resource,
            "principal": f"{subject.kind}:{subject.id}", "expected": expect, "actual": actual,
            "passed": actual == expect, "reasons": list(result.reasons), "errors": list(result.errors)}


@app.command("test")
def test(
    files: Annotated[list[Path], typer.Argument(help="Test case files (.toml or .json).")],
    policies: Annotated[Path | None, typer.Option(
        "--policies", help="Policy folder (default: the file's 'policies' key, else policy_dir).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run policy test cases: each names a principal, client, resource, capability and the expected
    allow|deny. Exit status 1 if any case fails (or a file or policy folder is broken)."""
    results: list[dict[str, Any]] = []
    sources: dict[Path, PolicySource] = {}
    try:
        for path in files:
            doc, cases = _load_cases(path)
            folder = policies
            if folder is None and isinstance(doc.get("policies"), str):
                folder = path.parent / doc["policies"]
            folder = _folder(folder, as_json)
            if folder not in sources:
                sources[folder] = load_folder(folder)
            catalogues: dict[str, dict[str, Any]] = {}
            for entry in doc.get("resources") or []:
                if isinstance(entry, dict) and isinstance(entry.get("uri"), str):
                    catalogues[entry["uri"]] = {k: entry.get(k) or [] for k in ("tools", "resources", "prompts")}
            for i, case in enumerate(cases):
                results.append(run_case(sources[folder], case, f"{path}#{i + 1}", catalogues))
    except CaseError as exc:
        fail(str(exc), as_json=as_json)
    except PolicyError as exc:
        fail(str(exc), as_json=as_json)
    failed = [r for r in results if not r["passed"]]
    if as_json:
        emit_json({"passed": len(results) - len(failed), "failed": len(failed), "cases": results})
    else:
        print_table(["case", "principal", "capability", "expected", "actual", "result", "decided by"], [
            [escape(r["name"]), escape(r["principal"]), escape(r["capability"]), r["expected"], r["actual"],
             "[green]PASS[/]" if r["passed"] else "[bold red]FAIL[/]",
             escape("; ".join(r["reasons"] + [f"error: {e}" for e in r["errors"]]) or "no policy permits")]
            for r in results], ids={"capability"})
        summary = f"{len(results) - len(failed)} passed, {len(failed)} failed"
        out.print(f"[bold red]{summary}[/]" if failed else f"[green]{summary}[/]")
    if failed:
        raise typer.Exit(1)
