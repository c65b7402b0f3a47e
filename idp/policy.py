"""Which capabilities a subject may be granted, for a client at a resource: Cedar policies as code.

The policy decision point of the IdP (docs/policy.md). Each requested capability is one Cedar
authorization request::

    principal  CBST::User::"<sub>"  (a person)  or  CBST::Client::"<client_id>"  (client credentials)
    action     CBST::Action::"grant"
    resource   CBST::Capability::"<capability>"  with method, target, server and, for tools the
               resource's catalogue knows, destructive / read_only
    context    client_id, client_name, client_reviewed, client_registered_by, resource

and is granted only if Cedar answers Allow *without any policy erroring* (an error fails closed).
A requested pattern (``tools/call:deploy-*``) is evaluated as itself: ``resource.target`` is the
pattern string, ``resource.wildcard`` is true, and Cedar's ``like`` (whose ``*`` also matches a
literal ``*``) allows it exactly when every name the pattern can stand for matches the policy's
pattern — unless that policy pattern escapes a star (``\\*``), which docs/policy.md warns about.

Policies live in the folder ``policy_dir`` (``*.cedar`` files, an optional ``*.cedarschema``);
they are parsed and validated against the schema at start (a broken folder refuses to start) and
re-read when a file changes (checked at most every ``policy_reload`` seconds, a stat per
file); a broken change is logged and the last good set stays. Without a folder the built-in
policy permits everything: consent is then the only gate for people, and clients keep their
registered capabilities.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cedarpy

from sdk.capabilities import NAME_METHODS, TOOLS_CALL, URI_METHODS, Capability, CapabilitySet

from .errors import IdPError
from .oauth2.client import ClientRecord
from .oauth2.resource import ResourceRecord, tool_flags
from .oauth2.subject import CLIENT, Subject

if TYPE_CHECKING:
    from .oauth2.stores import ResourceStore

log = logging.getLogger("cbst.idp.policy")

__all__ = ["DEFAULT_POLICY", "SCHEMA", "Decision", "Policy", "PolicyError", "PolicyProblem", "PolicySource",
           "check_folder", "entities_for", "load_folder"]

#: The Cedar schema of the requests the IdP makes (docs/policy.md); ``idp policy schema`` prints it.
SCHEMA = """\
// CBST policy schema: what the IdP tells Cedar when it decides whether to grant a capability.
namespace CBST {
  // A person: a local account or a federated login (claims from the upstream ID token).
  entity User = {
    username?: String,
    email?: String,
    email_verified?: Bool,
    name?: String,
    groups: Set<String>,   // empty when the upstream sends none
    issuer: String,        // the upstream issuer URL, or "local" for local accounts
    upstream?: String,     // the name of the configured upstream (idp federation add NAME)
  };
  // A client asking for itself (client credentials grant).
  entity Client = {
    name: String,
    kind: String,          // "client" or "resource_server"
    registered_by: String, // "operator", "dcr" or "cimd"
    reviewed: Bool,        // registered by the operator
  };
  // One requested capability, e.g. CBST::Capability::"tools/call:deploy-prod".
  entity Capability = {
    method: String,        // "tools/call", "resources/read", "logging/setLevel"...
    target?: String,       // the tool/prompt name or resource URI (pattern); absent for target-less methods
    wildcard: Bool,        // target contains "*"
    server: String,        // the resource (MCP server) URI the token is for
    in_catalogue?: Bool,   // present when the server's catalogue is known: it lists a matching entry
    destructive?: Bool,    // tools/call only, when the catalogue knows the tool(s)
    read_only?: Bool,      // tools/call only, when the catalogue knows the tool(s)
    title?: String,        // tools/call of one catalogued tool
  };
  action grant appliesTo {
    principal: [User, Client],
    resource: [Capability],
    context: {
      client_id: String,
      client_name: String,
      client_reviewed: Bool,
      client_registered_by: String,
      resource: String,
    },
  };
}
"""

#: The policy used when no ``policy_dir`` is configured.
DEFAULT_POLICY = """\
@id("default-permit-all")
permit (principal, action == CBST::Action::"grant", resource);
"""

_MAX_FILE_BYTES = 1024 * 1024
_MAX_FILES = 256
_MAX_CLAIM = 512  # longest claim string passed to Cedar
_MAX_GROUPS = 256
_CACHE_SIZE = 4096
_RECORD_TTL = 1.0  # seconds a resource record (its catalogue version) is reused by decide
_ACTION = {"type": "CBST::Action", "id": "grant"}


class PolicyError(IdPError):
    """A policy folder that cannot be used; ``problems`` say where (file:line) and why."""

    def __init__(self, message: str, problems: Iterable[PolicyProblem] = ()) -> None:
        self.problems = tuple(problems)
        super().__init__(message + "".join(f"\n  {p}" for p in self.problems[:20]))


@dataclass(frozen=True)
class PolicyProblem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "message": self.message}


@dataclass(frozen=True)
class Decision:
    allowed: CapabilitySet  # what may be granted (consent may still narrow it)
    denied: tuple[Capability, ...]  # requested but refused by policy


@dataclass(frozen=True)
class PolicyStatement:
    file: str
    line: int
    text: str
    id: str | None  # its @id annotation


@dataclass(frozen=True)
class PolicySource:
    """A parsed, validated policy set and where each of its policies came from."""

    policies: cedarpy.PolicySet
    statements: tuple[PolicyStatement, ...]
    origin: str  # the folder, or "built-in"
    fingerprint: tuple[tuple[str, int, int], ...] = ()

    def describe(self, policy_id: str) -> str:
        """``file:line (@id)`` for a Cedar policy id (``policy3``)."""
        if policy_id.startswith("policy") and policy_id[6:].isdigit() and int(policy_id[6:]) < len(self.statements):
            st = self.statements[int(policy_id[6:])]
            return f"{st.file}:{st.line}" + (f" ({st.id})" if st.id else "")
        return policy_id


# --------------------------------------------------------------------------------------------
# Loading and checking a folder
# --------------------------------------------------------------------------------------------


def split_statements(text: str) -> list[tuple[int, str]]:
    """Split Cedar policy text into statements at top-level ``;``, with the line each starts on.

    Strings and ``//`` comments are skipped, so a ``;`` inside them does not split. Parsing each
    statement on its own is what lets a parse error name its file and line (Cedar's message
    carries no position)."""
    out: list[tuple[int, str]] = []
    start, line, start_line, i, n = 0, 1, None, 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        elif c == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif c == '"':
            if start_line is None:
                start_line = line
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                elif text[i] == "\n":
                    line += 1
                i += 1
        elif c == ";":
            out.append((start_line or line, text[start:i + 1]))
            start, start_line = i + 1, None
        elif not c.isspace() and start_line is None:
            start_line = line
        i += 1
    if start_line is not None:  # trailing text without ";": a statement Cedar will refuse
        out.append((start_line, text[start:]))
    return out


def _annotation_id(text: str) -> str | None:
    found = re.search(r'@id\s*\(\s*"((?:[^"\\]|\\.)*)"\s*\)', text)
    return found.group(1) if found else None


def _ours(name: str) -> bool:
    """A policy or schema file; hidden files (editor locks, ``.#x.cedar``) are not."""
    return name.endswith((".cedar", ".cedarschema")) and not name.startswith(".")


def _fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, mtime_ns, size) of every policy and schema file: what a reload compares."""
    entries = []
    with os.scandir(folder) as it:
        for entry in it:
            if _ours(entry.name) and entry.is_file():
                st = entry.stat()
                entries.append((entry.name, st.st_mtime_ns, st.st_size))
    return tuple(sorted(entries))


def _read(path: Path) -> str:
    if path.stat().st_size > _MAX_FILE_BYTES:
        raise PolicyError(f"{path}: larger than {_MAX_FILE_BYTES} bytes")
    return path.read_text(encoding="utf-8")


def _schema_of(folder: Path, problems: list[PolicyProblem]) -> tuple[str, str]:
    """The schema text and its name: the folder's one ``*.cedarschema``, else the built-in one."""
    files = sorted(p for p in folder.glob("*.cedarschema") if _ours(p.name))
    if len(files) > 1:
        problems.append(PolicyProblem(str(files[1]), 1, "more than one *.cedarschema file in the folder"))
    if not files:
        return SCHEMA, "built-in schema"
    try:
        text = _read(files[0])
        cedarpy.Schema.from_str(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problems.append(PolicyProblem(str(files[0]), 1, f"invalid schema: {exc}"))
        return SCHEMA, "built-in schema"
    return text, str(files[0])


def check_statements(file: str, text: str, schema: str, problems: list[PolicyProblem]) -> list[PolicyStatement]:
    """Parse and validate each statement of one file; problems get file:line."""
    good: list[PolicyStatement] = []
    for line, statement in split_statements(text):
        try:
            parsed = cedarpy.PolicySet.from_str(statement)
        except ValueError as exc:
            problems.append(PolicyProblem(file, line, f"syntax error: {exc}"))
            continue
        if parsed.templates():
            problems.append(PolicyProblem(file, line, "templates (?principal/?resource slots) are not supported"))
            continue
        if len(parsed) != 1:
            problems.append(PolicyProblem(file, line, "expected one policy statement"))
            continue
        result = cedarpy.validate_policies(statement, schema)
        if not result.validation_passed:
            for error in result.errors:  # each statement is "policy0" in its own check: say nothing of it
                problems.append(PolicyProblem(file, line, re.sub(r"^for policy `policy0`, ", "", error.error)))
            continue
        good.append(PolicyStatement(file, line, statement.strip(), _annotation_id(statement)))
    return good


def check_folder(folder: Path) -> tuple[list[PolicyStatement], list[PolicyProblem]]:
    """Every policy statement of a folder and every problem found (parse, schema validation)."""
    problems: list[PolicyProblem] = []
    if not folder.is_dir():
        return [], [PolicyProblem(str(folder), 0, "not a directory")]
    schema, _ = _schema_of(folder, problems)
    files = sorted(p for p in folder.glob("*.cedar") if _ours(p.name))
    if not files:
        problems.append(PolicyProblem(str(folder), 0, "no *.cedar policy files (an empty folder would deny "
                                      "everything; leave policy_dir unset to permit all)"))
    if len(files) > _MAX_FILES:
        problems.append(PolicyProblem(str(folder), 0, f"more than {_MAX_FILES} policy files"))
        files = files[:_MAX_FILES]
    statements: list[PolicyStatement] = []
    for path in files:
        try:
            text = _read(path)
        except PolicyError as exc:
            problems.append(PolicyProblem(str(path), 0, str(exc)))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(PolicyProblem(str(path), 0, f"cannot read: {exc}"))
            continue
        statements.extend(check_statements(str(path), text, schema, problems))
    return statements, problems


def load_folder(folder: Path) -> PolicySource:
    """The folder's policies, or :class:`PolicyError` listing every problem."""
    try:
        fingerprint = _fingerprint(folder)
    except OSError as exc:
        raise PolicyError(f"cannot read the policy folder {folder}: {exc.strerror or exc}") from None
    statements, problems = check_folder(folder)
    if problems:
        raise PolicyError(f"the policy folder {folder} has {len(problems)} problem(s)", problems)
    return _source(statements, str(folder), fingerprint)


def _source(statements: list[PolicyStatement], origin: str,
            fingerprint: tuple[tuple[str, int, int], ...] = ()) -> PolicySource:
    # One text in statement order: Cedar numbers the policies policy0, policy1... the same way.
    policies = cedarpy.PolicySet.from_str("\n".join(s.text for s in statements))
    return PolicySource(policies, tuple(statements), origin, fingerprint)


def builtin_source() -> PolicySource:
    return _source([PolicyStatement("built-in", 1, DEFAULT_POLICY, "default-permit-all")], "built-in")


# --------------------------------------------------------------------------------------------
# Requests: entities and context
# --------------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= _MAX_CLAIM and value.isprintable() else None


def principal_entity(subject: Subject, client: ClientRecord) -> dict[str, Any]:
    """The principal: CBST::Client for client credentials, else CBST::User from the subject's claims.

    Only well-formed claims pass (bounded printable strings, a list of strings for groups); a
    malformed claim is left out, so a policy's ``has`` test sees it missing."""
    if subject.kind == CLIENT:
        return {"uid": {"type": "CBST::Client", "id": subject.id}, "parents": [], "attrs": {
            "name": client.name, "kind": client.kind, "registered_by": client.registered_by,
            "reviewed": client.reviewed}}
    claims = subject.claims
    attrs: dict[str, Any] = {}
    for name, keys in (("username", ("username", "preferred_username")), ("email", ("email",)),
                       ("name", ("name",)), ("upstream", ("upstream",))):
        for key in keys:
            value = _text(claims.get(key))
            if value is not None:
                attrs[name] = value
                break
    if isinstance(claims.get("email_verified"), bool):
        attrs["email_verified"] = claims["email_verified"]
    groups = claims.get("groups")
    attrs["groups"] = sorted({g for g in groups if _text(g) is not None})[:_MAX_GROUPS] \
        if isinstance(groups, (list, tuple, set, frozenset)) else []
    attrs["issuer"] = _text(claims.get("issuer")) or _text(claims.get("iss")) or "local"
    return {"uid": {"type": "CBST::User", "id": subject.id}, "parents": [], "attrs": attrs}


def capability_entity(cap: Capability, server: str, catalogue: Mapping[str, Any] | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {"method": cap.method, "server": server, "wildcard": False}
    target = cap.pattern
    if target is not None:
        attrs["target"] = target
        attrs["wildcard"] = "*" in target
    if catalogue is not None and target is not None:
        if cap.method in NAME_METHODS:
            kind = "tools" if cap.method == TOOLS_CALL else "prompts"
            entries = [e for e in catalogue.get(kind) or () if isinstance(e, Mapping)
                       and isinstance(e.get("name"), str) and cap.matches(cap.method, e["name"])]
            attrs["in_catalogue"] = bool(entries)
            if kind == "tools" and entries:
                flags = [tool_flags(e) for e in entries]
                attrs["destructive"] = any(d for d, _ in flags)
                attrs["read_only"] = all(r for _, r in flags)
                if len(entries) == 1 and not attrs["wildcard"]:
                    title = _text(entries[0].get("title")) or _text((entries[0].get("annotations") or {}).get(
                        "title") if isinstance(entries[0].get("annotations"), Mapping) else None)
                    if title:
                        attrs["title"] = title
        elif cap.method in URI_METHODS:
            attrs["in_catalogue"] = any(isinstance(e, Mapping) and isinstance(e.get("uri"), str)
                                        and cap.matches(cap.method, e["uri"]) for e in catalogue.get("resources") or ())
    return {"uid": {"type": "CBST::Capability", "id": str(cap)}, "parents": [], "attrs": attrs}


def context_for(client: ClientRecord, resource: str) -> dict[str, Any]:
    return {"client_id": client.client_id, "client_name": client.display_name[:_MAX_CLAIM],
            "client_reviewed": client.reviewed, "client_registered_by": client.registered_by, "resource": resource}


def entities_for(subject: Subject, client: ClientRecord, resource: str, requested: CapabilitySet,
                 catalogue: Mapping[str, Any] | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The principal entity and one entity per capability (what :meth:`Policy.decide` sends)."""
    return principal_entity(subject, client), [capability_entity(c, resource, catalogue) for c in requested]


@dataclass(frozen=True)
class Evaluation:
    capability: Capability
    allowed: bool
    reasons: tuple[str, ...]  # the policies that decided (file:line (@id))
    errors: tuple[str, ...]


def evaluate(source: PolicySource, principal: dict[str, Any], capabilities: list[dict[str, Any]],
             requested: CapabilitySet, context: dict[str, Any]) -> list[Evaluation]:
    """One Cedar request per capability, in one batch. Allowed only on Allow with no errors."""
    if not capabilities:
        return []
    requests = [{"principal": principal["uid"], "action": _ACTION, "resource": c["uid"], "context": context}
                for c in capabilities]
    results = cedarpy.is_authorized_batch(requests, source.policies, json.dumps([principal, *capabilities]))
    out = []
    for cap, result in zip(requested, results, strict=True):
        errors = tuple(result.diagnostics.errors)
        reasons = tuple(source.describe(r) for r in result.diagnostics.reasons)
        out.append(Evaluation(cap, result.allowed and not errors, reasons, errors))
    return out


# --------------------------------------------------------------------------------------------
# The decision point
# --------------------------------------------------------------------------------------------


@dataclass
class Policy:
    """Cedar-backed :class:`~idp.oauth2.stores.PolicyDecider`.

    ``decide`` caches its decisions by everything they depend on (the policy set in force, the
    subject and its claims, the client's version, the resource's catalogue version, the request),
    so the client credentials grant pays for Cedar once per distinct request, not per token."""

    folder: Path | None = None
    resources: ResourceStore | None = None
    reload_interval: float = 2.0
    _source: PolicySource = field(init=False, repr=False)
    _checked: float = field(default=0.0, init=False, repr=False)
    _failed: tuple[tuple[str, int, int], ...] | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _cache: dict[tuple[Any, ...], Decision] = field(default_factory=dict, init=False, repr=False)
    _records: dict[str, tuple[float, ResourceRecord | None]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        # A broken folder at start-up is an error for the operator, raised here (PolicyError).
        self._source = load_folder(self.folder) if self.folder is not None else builtin_source()
        self._checked = time.monotonic()

    @property
    def source(self) -> PolicySource:
        return self._source

    def reload_if_changed(self, *, force: bool = False) -> bool:
        """Re-read the folder if a file changed (at most every ``reload_interval``); True if a new
        set is in force. A broken change is logged once and the last good set stays."""
        if self.folder is None:
            return False
        now = time.monotonic()
        if not force and (self.reload_interval <= 0 or now - self._checked < self.reload_interval):
            return False
        if not self._lock.acquire(blocking=False):
            return False  # another thread is checking
        try:
            self._checked = now
            try:
                fingerprint = _fingerprint(self.folder)
            except OSError as exc:
                log.error("policy folder unreadable; keeping the last good policies",
                          extra={"fields": {"folder": str(self.folder), "error": str(exc)}})
                return False
            if fingerprint == self._source.fingerprint or fingerprint == self._failed:
                return False
            try:
                source = load_folder(self.folder)
            except PolicyError as exc:
                self._failed = fingerprint
                log.error("policy reload failed; keeping the last good policies",
                          extra={"fields": {"folder": str(self.folder), "problems": [str(p) for p in exc.problems]
                                            or [str(exc)]}})
                return False
            self._failed = None
            self._source = source
            self._cache = {}
            log.info("policies reloaded", extra={"fields": {"folder": str(self.folder),
                                                            "policies": len(source.statements)}})
            return True
        finally:
            self._lock.release()

    def _resource(self, uri: str) -> ResourceRecord | None:
        """The resource's record, re-read at most once a second: the grant has just checked it is
        registered, and a new catalogue may take a second to reach decisions."""
        if self.resources is None:
            return None
        now = time.monotonic()
        held = self._records.get(uri)
        if held is not None and now - held[0] < _RECORD_TTL:
            return held[1]
        record = self.resources.get(uri)
        if len(self._records) > 1024:
            self._records = {}
        self._records[uri] = (now, record)
        return record

    def decide(self, subject: Subject, client: ClientRecord, resource: str, requested: CapabilitySet) -> Decision:
        self.reload_if_changed()
        source = self._source
        record = self._resource(resource)
        try:
            claims_key = json.dumps(subject.claims, sort_keys=True, default=str) if subject.claims else ""
        except (TypeError, ValueError):
            claims_key = repr(sorted(subject.claims.items(), key=str))
        key = (id(source), subject.kind, subject.id, claims_key, client.client_id, client.updated_at,
               client.registered_by, client.name, resource,
               (record.created_at, record.catalogue_updated_at) if record else None, requested.to_scope())
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        decision = self._decide(source, subject, client, resource, requested, record)
        if len(self._cache) >= _CACHE_SIZE:
            self._cache = {}
        self._cache[key] = decision
        return decision

    def _decide(self, source: PolicySource, subject: Subject, client: ClientRecord, resource: str,
                requested: CapabilitySet, record: ResourceRecord | None) -> Decision:
        catalogue = record.catalogue if record is not None and record.catalogue_updated_at is not None else None
        try:
            principal, capabilities = entities_for(subject, client, resource, requested, catalogue)
            results = evaluate(source, principal, capabilities, requested, context_for(client, resource))
        except Exception:  # fail closed: a policy engine failure grants nothing
            log.exception("policy evaluation failed; denying", extra={"fields": {"subject": subject.id,
                                                                                "client_id": client.client_id}})
            return Decision(allowed=CapabilitySet(), denied=tuple(requested))
        for r in results:
            if r.errors:
                log.warning("policy error; capability denied", extra={"fields": {
                    "capability": str(r.capability), "subject": subject.id, "errors": list(r.errors)}})
        allowed = [r.capability for r in results if r.allowed]
        return Decision(allowed=CapabilitySet(allowed), denied=tuple(r.capability for r in results if not r.allowed))

