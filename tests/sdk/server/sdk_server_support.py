"""Helpers for the server-side SDK tests: a real IdP process and real protected MCP servers.

* ``idp`` (session): ``idp serve`` on a free loopback port over a temporary SQLite database,
  plus an in-process :class:`~idp.provider.Provider` on the same database to register clients,
  revoke tokens and rotate keys the way the admin CLI does.
* ``serve(app)``: runs an ASGI app under uvicorn on a free loopback port in a thread.
* ``mcp_server`` (session): the example MCP server (official ``mcp`` SDK, streamable HTTP,
  sessions, SSE responses) wrapped by ``CBSTMiddleware``; its audit events are collected.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from idp.config import Settings
from idp.provider import Provider
from sdk.server import AuditEvent, CBSTMiddleware, ProtectionConfig

# The suite's root conftest, loaded by path under its own name: ``from conftest import ...`` is
# ambiguous once subdirectories have conftest files of their own.
_root_spec = importlib.util.spec_from_file_location(
    "cbst_root_conftest", Path(__file__).resolve().parent.parent.parent / "conftest.py")
assert _root_spec and _root_spec.loader
root_conftest = importlib.util.module_from_spec(_root_spec)
_root_spec.loader.exec_module(root_conftest)
ROOT = root_conftest.ROOT
ServerProcess = root_conftest.ServerProcess
env_for = root_conftest.env_for
free_port = root_conftest.free_port
random_kek = root_conftest.random_kek

_spec = importlib.util.spec_from_file_location("cbst_example_server", ROOT / "examples" / "server.py")
assert _spec and _spec.loader
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)




@dataclass
class IdP:
    url: str
    settings: Settings
    provider: Provider
    process: ServerProcess
    _n: int = 0

    def client(self, capabilities: str, audience: str | list[str]) -> tuple[str, str]:
        """Register a client (client_secret_basic); (client_id, secret)."""
        self._n += 1
        audiences = [audience] if isinstance(audience, str) else audience
        record, secret = self.provider.clients.add(f"t{self._n}-{time.monotonic_ns()}", capabilities=capabilities,
                                                   audiences=audiences, auth_method="client_secret_basic")
        assert secret is not None
        return record.client_id, secret

    def token(self, client: tuple[str, str], *, scope: str | None = None, resource: str | None = None) -> str:
        form = {"grant_type": "client_credentials"}
        if scope is not None:
            form["scope"] = scope
        if resource is not None:
            form["resource"] = resource
        resp = httpx.post(self.url + "/token", data=form, auth=client, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.json()["access_token"]

    def new_token(self, capabilities: str, audience: str, **kw: Any) -> str:
        return self.token(self.client(capabilities, audience), resource=audience, **kw)




class Served:
    def __init__(self, app: Any, port: int) -> None:
        self.app = app
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    lifespan="on", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@contextlib.contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[Served]:
    served = Served(app, port or free_port()).start()
    try:
        yield served
    finally:
        served.stop()


@dataclass
class MCPUnderTest:
    url: str  # the MCP endpoint
    base: str
    resource: str
    config: ProtectionConfig
    middleware: CBSTMiddleware
    events: list[AuditEvent] = field(default_factory=list)

    def events_for(self, client_id: str) -> list[AuditEvent]:
        return [e for e in self.events if e.client_id == client_id]


@contextlib.contextmanager
def protected_example(idp: IdP, *, stateless: bool = False, json_response: bool = False,
                      **options: Any) -> Iterator[MCPUnderTest]:
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    events: list[AuditEvent] = []
    options.setdefault("audit", events.append)
    config = ProtectionConfig(issuer=idp.url, resource=resource, **options)
    app = example.create_app(config, stateless=stateless, json_response=json_response)
    with serve(app, port) as served:
        yield MCPUnderTest(resource, served.url, resource, config, app, events)




@contextlib.asynccontextmanager
async def mcp_client(url: str, token: str | None, *, mode: str = "auto") -> AsyncIterator[Any]:
    """The official MCP Python client (mcp 2.3) over streamable HTTP with a bearer token."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode, cache=None) as client:
            yield client


def rpc(method: str, params: dict[str, Any] | None = None, id: Any = 1) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


MODERN = "2026-07-28"


def modern_meta() -> dict[str, Any]:
    return {"io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {}}


def modern_headers(method: str, name: str | None = None, token: str | None = None) -> dict[str, str]:
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
         "MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if name is not None:
        h["Mcp-Name"] = name
    if token:
        h["Authorization"] = f"Bearer {token}"
    return h


def legacy_headers(token: str | None = None, session: str | None = None) -> dict[str, str]:
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if token:
        h["Authorization"] = f"Bearer {token}"
    if session:
        h["Mcp-Session-Id"] = session
    return h




# --- forging tokens for attack tests -----------------------------------------------------------

def sign_raw(key: Any, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A compact JWS with exactly ``header``, signed by ``key`` (an sdk.jws.PrivateKey)."""
    import json

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    from sdk.jws import b64url_encode

    def enc(obj: Any) -> str:
        return b64url_encode(json.dumps(obj, separators=(",", ":")).encode())

    signing_input = (enc(header) + "." + enc(claims)).encode()
    if key.alg == "ES256":
        r, s = decode_dss_signature(key.key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        sig = key.key.sign(signing_input)
    return signing_input.decode() + "." + b64url_encode(sig)


def claims_for(idp: IdP, audience: str, *, scope: str = "tools/call:echo", ttl: int = 300,
               **extra: Any) -> dict[str, Any]:
    import secrets

    now = int(time.time())
    claims = {"iss": idp.url, "sub": "forger", "aud": audience, "client_id": "forger", "iat": now,
              "exp": now + ttl, "jti": secrets.token_urlsafe(12), "scope": scope}
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


# --- a tiny JSON-RPC app that supports batches, for middleware tests where the official server
# --- adds nothing (it refuses batches) --------------------------------------------------------

class RecordingApp:
    """Answers every JSON-RPC request; ``*/list`` with a fixed catalogue. Records what it saw."""

    TOOLS = ["echo", "delete-file", "git-log", "git-push"]
    RESOURCES = ["file:///docs/a.md", "file:///docs/sub/b.md", "file:///etc/passwd"]

    def __init__(self, *, sse: bool = False) -> None:
        self.sse = sse
        self.seen: list[dict[str, Any]] = []

    def _answer(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        if "id" not in msg:
            return None
        method = msg.get("method")
        if method == "tools/list":
            result: dict[str, Any] = {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in self.TOOLS],
                                      "cacheScope": "public"}
        elif method == "resources/list":
            result = {"resources": [{"uri": u, "name": u} for u in self.RESOURCES]}
        elif method == "resources/templates/list":
            result = {"resourceTemplates": [{"uriTemplate": "file:///docs/{name}", "name": "d"},
                                            {"uriTemplate": "file:///etc/{name}", "name": "e"}]}
        elif method == "prompts/list":
            result = {"prompts": [{"name": "summarize"}, {"name": "secret"}]}
        else:
            result = {"echo": method}
        return {"jsonrpc": "2.0", "id": msg["id"], "result": result}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        import json

        if scope["type"] != "http":
            return
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        self.seen.append({"scope": scope, "body": body})
        data = json.loads(body) if body else None
        if isinstance(data, list):
            answer: Any = [a for a in (self._answer(x) for x in data) if a is not None]
        elif isinstance(data, dict):
            answer = self._answer(data)
        else:
            answer = {"ok": True}
        if answer is None or answer == []:
            await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        payload = json.dumps(answer).encode()
        if self.sse:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            # a notification first, then the answer split across chunks at awkward places
            note = b'event: message\r\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{}}\r\n\r\n'
            event = b"event: message\r\nid: 7\r\ndata: " + payload + b"\r\n\r\n"
            stream = note + event
            for i in range(0, len(stream), 37):
                await send({"type": "http.response.body", "body": stream[i:i + 37], "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
