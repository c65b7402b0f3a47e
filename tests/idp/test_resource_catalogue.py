"""Catalogues pulled from real MCP servers (idp/catalogue.py): the official MCP client against the
interop server (official SDK + CBST middleware) behind a real IdP, and hostile servers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from idp import catalogue
from idp.catalogue import CatalogueError, Limits
from idp.config import Settings
from idp.provider import Provider
from idp_testing import ROOT, ServerProcess, env_for, free_port, random_kek, run_cli

SERVER_APP = ROOT / "tests" / "interop" / "server_app.py"


class Stack:
    def __init__(self, provider: Provider, env: dict[str, str], mcp_url: str) -> None:
        self.provider, self.env, self.mcp_url = provider, env, mcp_url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A real IdP process and the interop MCP server (verifying its tokens against that IdP)."""
    base = tmp_path_factory.mktemp("catalogue")
    port = free_port()
    settings = Settings(issuer=f"http://127.0.0.1:{port}", database_url=f"sqlite:///{base / 'idp.db'}",
                        keys_dir=base / "keys", keystore_kek=random_kek())
    provider = Provider.open(settings)
    env = env_for(settings)
    idp = ServerProcess(env, port)
    mcp_port = free_port()
    log = base / "mcp.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, str(SERVER_APP), "--issuer", idp.url, "--port", str(mcp_port)],
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{mcp_port}/.well-known/oauth-protected-resource/mcp",
                             timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield Stack(provider, env, f"http://127.0.0.1:{mcp_port}/mcp")
    finally:
        proc.terminate()
        proc.wait(10)
        idp.stop()
        provider.close()


def test_sync_pulls_tools_resources_and_prompts_with_a_client_token(stack: Stack) -> None:
    prov = stack.provider
    client, _ = prov.clients.add("catalogue-reader", capabilities="tools/call:** resources/read:** prompts/get:**",
                                 audiences=[stack.mcp_url])
    assert prov.resources.get(stack.mcp_url) is not None  # registered with the client's audience
    res = run_cli("resources", "update", stack.mcp_url, "--name", "interop", "--client", "catalogue-reader",
                  "--json", env=stack.env)
    assert res.returncode == 0, res.stderr
    res = run_cli("resources", "sync", stack.mcp_url, "--json", env=stack.env)
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads(res.stdout)
    assert (summary["tools"], summary["resources"], summary["prompts"]) == (3, 3, 2)

    stored = prov.resources.get(stack.mcp_url)
    assert stored is not None and stored.catalogue_updated_at is not None
    tools = {t["name"]: t for t in stored.catalogue["tools"]}
    assert tools["echo"] == {"name": "echo", "description": "Echo the text back.",
                             "annotations": {"readOnlyHint": True}}
    assert tools["delete-file"]["annotations"] == {"destructiveHint": True}
    assert "annotations" not in tools["add"]  # no annotations: destructive by the MCP default
    assert {r["uri"] for r in stored.catalogue["resources"]} == {
        "file:///docs/a.md", "file:///docs/b.md", "file:///private/secret.txt"}
    assert {p["name"] for p in stored.catalogue["prompts"]} == {"summarize", "internal"}
    shown = json.loads(run_cli("resources", "show", stack.mcp_url, "--json", env=stack.env).stdout)
    assert shown["catalogue"] == stored.catalogue
    # The token it used was minted and audited as issued to that client.
    from sqlalchemy import text
    with prov.engine.connect() as conn:
        rows = conn.execute(text("select data from audit_events where event = 'token.issued' and client_id = :c"),
                            {"c": client.client_id}).all()
    assert any(json.loads(r.data)["grant_type"] == "catalogue_sync" for r in rows)


def test_the_catalogue_is_what_the_client_may_see(stack: Stack) -> None:
    """The middleware filters list results by the token: a narrow client sees a narrow catalogue."""
    prov = stack.provider
    uri = stack.mcp_url
    client, _ = prov.clients.add("narrow-reader", capabilities="tools/call:echo", audiences=[uri])
    prov.resources.update(uri, client_id=client.client_id)
    stored = catalogue.sync(prov, uri)
    assert [t["name"] for t in stored.catalogue["tools"]] == ["echo"]
    assert stored.catalogue["resources"] == [] and stored.catalogue["prompts"] == []


def test_a_disabled_or_missing_client_cannot_sync(stack: Stack) -> None:
    prov = stack.provider
    client, _ = prov.clients.add("soon-disabled", capabilities="tools/call:**", audiences=[stack.mcp_url])
    prov.resources.update(stack.mcp_url, client_id=client.client_id)
    prov.clients.set_enabled(client.client_id, False)
    before = prov.resources.get(stack.mcp_url)
    res = run_cli("resources", "sync", stack.mcp_url, "--json", env=stack.env)
    assert res.returncode == 1 and "disabled" in json.loads(res.stdout)["error"]
    assert prov.resources.get(stack.mcp_url) == before


def test_a_resource_uri_the_server_does_not_serve_is_a_clean_error(stack: Stack) -> None:
    """The MCP server answers 404 for a URI it does not serve: an error, nothing stored."""
    prov = stack.provider
    other = "https://elsewhere.example/mcp"
    client, _ = prov.clients.add("wrong-audience", capabilities="tools/call:**", audiences=[other])
    prov.resources.add(stack.mcp_url + "-alias", name="alias", client_id=client.client_id)
    with pytest.raises(CatalogueError):
        catalogue.sync(prov, stack.mcp_url + "-alias", limits=Limits(timeout=10))
    assert prov.resources.get(stack.mcp_url + "-alias").catalogue_updated_at is None  # type: ignore[union-attr]


# --- hostile servers ------------------------------------------------------------------------------


class Threaded:
    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Threaded:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive()
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _mcp_app(tools: int = 3, description: str = "d", name: str = "t{}") -> Any:
    from mcp.server.mcpserver import MCPServer

    mcp = MCPServer("hostile")
    for i in range(tools):
        mcp.add_tool(lambda: "x", name=name.format(i), description=description)
    return mcp.streamable_http_app()


def _raw_app(answer: Any) -> Any:
    """Answers initialize correctly and every other request with ``answer`` (bytes or a JSON value)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        request = json.loads(body) if body else {}
        if scope["method"] != "POST" or "id" not in request:
            await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        if request["method"] == "initialize":
            out = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": {
                "protocolVersion": request["params"]["protocolVersion"], "capabilities": {"tools": {}},
                "serverInfo": {"name": "raw", "version": "1"}}}).encode()
        elif request["method"] == "server/discover":
            out = json.dumps({"jsonrpc": "2.0", "id": request["id"],
                              "error": {"code": -32601, "message": "nope"}}).encode()
        elif answer == "redirect":
            await send({"type": "http.response.start", "status": 307,
                        "headers": [(b"location", b"http://169.254.169.254/latest/meta-data")]})
            await send({"type": "http.response.body", "body": b""})
            return
        elif answer == "hang":
            await asyncio.sleep(60)
            out = b""
        else:
            out = answer if isinstance(answer, bytes) else json.dumps(
                {"jsonrpc": "2.0", "id": request["id"], "result": answer}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out})

    return app


@pytest.fixture
def hostile(stack: Stack) -> Any:
    prov = stack.provider
    client, _ = prov.clients.add(f"hostile-{time.monotonic_ns()}", capabilities="tools/call:**", audiences=[])

    def register(url: str) -> str:
        prov.resources.add(url, name="hostile", client_id=client.client_id)
        return url

    return register


@pytest.mark.parametrize("case", ["too-many", "too-big", "bad-name", "malformed", "not-json", "hang", "dupes",
                                  "endless", "redirect"])
def test_hostile_servers_are_refused_and_nothing_is_stored(stack: Stack, hostile: Any, case: str) -> None:
    limits = Limits(max_entries=20, max_bytes=64 * 1024, timeout=3)
    app, expected = {
        "too-many": (_mcp_app(tools=21), "more than 20 tools"),
        "too-big": (_mcp_app(tools=2, description="x" * 100_000), "more than 65536 bytes"),
        "bad-name": (_raw_app({"tools": [{"name": "x" * 200, "inputSchema": {"type": "object"}}]}),
                     "longer than 128"),
        "malformed": (_raw_app({"tools": "not a list"}), "cannot list the catalogue"),
        "not-json": (_raw_app(b"{\"jsonrpc\": \"2.0\", \"id\": "), "cannot list the catalogue"),
        "hang": (_raw_app("hang"), "did not answer within 3 s"),
        "dupes": (_raw_app({"tools": [{"name": "a", "inputSchema": {"type": "object"}}] * 2}), "listed twice"),
        "endless": (_raw_app({"tools": [], "nextCursor": "again"}), "more than 50 pages"),
        "redirect": (_raw_app("redirect"), "cannot list the catalogue"),
    }[case]
    with Threaded(app) as server:
        uri = hostile(server.url)
        started = time.monotonic()
        with pytest.raises(CatalogueError, match=expected):
            catalogue.sync(stack.provider, uri, limits=limits)
        assert time.monotonic() - started < 15
    record = stack.provider.resources.get(uri)
    assert record is not None and record.catalogue == {} and record.catalogue_updated_at is None


def test_long_descriptions_are_cut_not_refused() -> None:
    raw = {"tools": [{"name": "t", "description": "x" * 5000, "title": "y" * 300,
                      "annotations": {"title": "z", "readOnlyHint": True, "openWorldHint": True}, "inputSchema": {}}],
           "resources": [{"uri": "file:///a", "name": "a", "mimeType": "text/plain"}], "prompts": []}
    out = catalogue.normalise(raw)
    tool = out["tools"][0]
    assert len(tool["description"]) == 2048 and len(tool["title"]) == 256
    assert tool["annotations"] == {"title": "z", "readOnlyHint": True}  # only what consent and policy use
    assert out["resources"] == [{"uri": "file:///a", "name": "a"}]
    for bad in ({"tools": [{"name": "a b"}]}, {"tools": [{"name": ""}]}, {"tools": [{"name": "a", "annotations": {
            "readOnlyHint": "yes"}}]}, {"resources": [{"uri": 3}]}, {"prompts": [7]}, {"tools": {"name": "a"}}):
        with pytest.raises(CatalogueError):
            catalogue.normalise(bad)


def test_maintenance_refreshes_stale_catalogues(stack: Stack) -> None:
    prov = stack.provider
    client, _ = prov.clients.add("refresher", capabilities="tools/call:** prompts/get:**", audiences=[stack.mcp_url])
    prov.resources.update(stack.mcp_url, client_id=client.client_id)
    prov.resources.set_catalogue(stack.mcp_url, {"tools": [], "resources": [], "prompts": []}, actor="test")
    assert catalogue.refresh_stale(prov, 3600) == []  # fresh: left alone
    with prov.engine.begin() as conn:
        from sqlalchemy import text
        conn.execute(text("update resources set catalogue_updated_at = 1 where uri = :u"), {"u": stack.mcp_url})
    assert catalogue.refresh_stale(prov, 3600) == [f"catalogue of {stack.mcp_url} refreshed"]
    assert len(prov.resources.get(stack.mcp_url).catalogue["tools"]) == 3  # type: ignore[union-attr]
