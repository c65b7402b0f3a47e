"""``completion/complete`` is checked against its ``ref`` (issue 6, defect 4).

Completions reveal names — argument values of a prompt, variables of a resource template — so
besides ``completion/complete`` a request needs ``prompts/get:<name>`` for a ``ref/prompt``, or
``resources/read`` covering everything a ``ref/resource`` template can expand to.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sdk_server_support import IdP, MCPUnderTest, legacy_headers, modern_headers, modern_meta, rpc

from sdk.capabilities import CapabilitySet, uri_template_pattern
from sdk.server.rpc import RPCRefusal, allows, parse_messages, required_capability


def complete(ref: dict[str, Any], id: Any = 1) -> dict[str, Any]:
    return rpc("completion/complete", {"ref": ref, "argument": {"name": "name", "value": ""}}, id)


def prompt(name: str) -> dict[str, str]:
    return {"type": "ref/prompt", "name": name}


def template(uri: str) -> dict[str, str]:
    return {"type": "ref/resource", "uri": uri}


@pytest.mark.parametrize(("tmpl", "pattern"), [
    ("file:///docs/{name}", "file:///docs/*"),
    ("file:///docs/{name}.md", "file:///docs/*.md"),
    ("file:///docs/{a}{b}", "file:///docs/*"),
    ("file:///docs/{+path}", "file:///docs/**"),
    ("file:///docs{/path*}", "file:///docs**"),
    ("file:///docs/a.md{?q,r}", "file:///docs/a.md**"),
    ("FILE:///Docs/{x}", "file:///Docs/*"),
    ("https://{host}.example.com/{x}", "https://*.example.com/*"),
    ("https://{+host}/x", None),  # '**' in the host: could move it anywhere
    ("file:///docs/{x}/../../private/{y}", None),  # '..' after an expression
    ("file:///docs/*/{x}", None),  # a literal '*' cannot be written in a pattern
    ("file:///docs/{x", None),
    ("file:///docs/{}", None),
    ("docs/{x}", None),
])
def test_uri_template_pattern(tmpl: str, pattern: str | None) -> None:
    assert uri_template_pattern(tmpl) == pattern


@pytest.mark.parametrize(("scope", "tmpl", "allowed"), [
    ("resources/read:file:///docs/**", "file:///docs/{name}", True),
    ("resources/read:file:///docs/**", "file:///docs/{+path}", True),
    ("resources/read:file:///docs/*", "file:///docs/{name}", True),
    ("resources/read:file:///docs/*", "file:///docs/{+path}", False),  # could expand to a/b
    ("resources/read:file:///docs/**", "file:///private/{name}", False),
    ("resources/read:file:///docs/**", "file:///{path}", False),
    ("resources/read:file:///docs/**", "file:///docs{/path}", False),  # 'file:///docs-secret' too
    ("resources/read:file:///docs/**", "file:///docs/../private/{name}", False),
    ("resources/read:file:///docs/**", "https://{+host}/x", False),
    ("resources/read:**", "https://{+host}/x", True),
    ("resources/subscribe:**", "file:///docs/{name}", False),  # completion reveals what can be read
])
def test_allows_template(scope: str, tmpl: str, allowed: bool) -> None:
    assert CapabilitySet.parse(scope).allows_template(tmpl) is allowed


def _decide(scope: str, msg: dict[str, Any]) -> tuple[bool, str | None]:
    [m], _ = parse_messages(json.dumps(msg).encode(), max_batch=1)
    req = required_capability(m)
    return allows(CapabilitySet.parse(scope), m, req), req.scope


def test_prompt_ref_needs_the_prompt_capability() -> None:
    scope = "completion/complete prompts/get:summarize"
    assert _decide(scope, complete(prompt("summarize"))) == (True, "completion/complete prompts/get:summarize")
    assert _decide(scope, complete(prompt("secret"))) == (False, "completion/complete prompts/get:secret")
    assert _decide("prompts/get:**", complete(prompt("summarize")))[0] is False  # completion/complete too


def test_resource_ref_needs_read_on_the_whole_template() -> None:
    scope = "completion/complete resources/read:file:///docs/**"
    assert _decide(scope, complete(template("file:///docs/{name}"))) == (
        True, "completion/complete resources/read:file:///docs/*")
    assert _decide(scope, complete(template("file:///private/{name}"))) == (
        False, "completion/complete resources/read:file:///private/*")
    assert _decide(scope, complete(template("https://{+h}/x"))) == (False, None)


@pytest.mark.parametrize("params", [
    {}, {"ref": "summarize"}, {"ref": {"type": "ref/prompt"}}, {"ref": {"type": "ref/prompt", "name": 5}},
    {"ref": {"type": "ref/resource", "name": "file:///docs/{x}"}}, {"ref": {"type": "ref/tool", "name": "echo"}},
    {"ref": {"type": "ref/prompt", "name": ""}},
])
def test_malformed_refs_are_invalid_params(params: dict[str, Any]) -> None:
    with pytest.raises(RPCRefusal) as err:
        parse_messages(json.dumps(rpc("completion/complete", params, 4)).encode(), max_batch=1)
    assert (err.value.status, err.value.code, err.value.request_id) == (400, -32602, 4)


# --- end to end: the real middleware in front of the example server, tokens from the real IdP ---

SCOPE = "completion/complete prompts/get:summarize resources/read:file:///docs/**"


@pytest.mark.parametrize(("ref", "challenge"), [
    (prompt("other-prompt"), "completion/complete prompts/get:other-prompt"),
    (template("file:///private/{name}"), "completion/complete resources/read:file:///private/*"),
    (template("file:///{path}"), "completion/complete resources/read:file:///*"),
    (template("file:///docs/{x}/../../private/{name}"), None),
])
def test_completion_outside_the_token_is_refused(idp: IdP, mcp_json_server: MCPUnderTest, ref: dict[str, str],
                                                 challenge: str | None) -> None:
    token = idp.new_token(SCOPE, mcp_json_server.resource)
    rid = f"outside-{ref.get('name', ref.get('uri'))}"
    resp = httpx.post(mcp_json_server.url, json=complete(ref, rid), headers=legacy_headers(token))
    assert resp.status_code == 403, resp.text
    assert resp.json()["id"] == rid and resp.json()["error"]["code"] == -32003
    if challenge is not None:
        assert f'scope="{challenge}"' in resp.headers["www-authenticate"]
    event = [e for e in mcp_json_server.events if e.method == "completion/complete" and e.request_id == rid][-1]
    assert not event.allowed and event.reason == "insufficient_scope"
    # the same in the 2026-07-28 generation
    body = complete(ref, 22)
    body["params"]["_meta"] = modern_meta()
    resp = httpx.post(mcp_json_server.url, json=body, headers=modern_headers("completion/complete", None, token))
    assert resp.status_code == 403, resp.text


@pytest.mark.parametrize("ref", [prompt("summarize"), template("file:///docs/{name}")])
def test_completion_inside_the_token_reaches_the_server(idp: IdP, mcp_json_server: MCPUnderTest,
                                                        ref: dict[str, str]) -> None:
    token = idp.new_token(SCOPE, mcp_json_server.resource)
    rid = f"inside-{ref['type']}"  # the server (and its audit list) is shared by the whole session
    resp = httpx.post(mcp_json_server.url, json=complete(ref, rid), headers=legacy_headers(token))
    assert resp.status_code == 200 and "www-authenticate" not in resp.headers, resp.text
    event = [e for e in mcp_json_server.events if e.method == "completion/complete" and e.request_id == rid][-1]
    assert event.allowed and event.target == ref.get("name", ref.get("uri"))
