"""Federation test parts: a real upstream (node-oidc-provider), an attacker upstream, a real IdP.

- :class:`NodeUpstream`: ``tests/idp/upstream_oidc/server.js`` on a free loopback port, killed on
  teardown, and with the test process (PR_SET_PDEATHSIG, and end-of-file on its stdin pipe).
- :class:`AttackerUpstream`: the only fake — a small Python OpenID provider on loopback whose
  discovery, JWKS and token endpoint are real HTTP, issuing whatever forged ID token a test asks.
- :func:`drive_upstream_login`: what a person does at node-oidc-provider's login and consent forms,
  done by an HTTP client that follows redirects and posts the forms.
"""

from __future__ import annotations

import contextlib
import ctypes
import html
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import sqlalchemy as sa
from idp_testing import AUDIENCE, PG_URL, ROOT, ServerProcess, _pg_admin_url, env_for, free_port, random_kek
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from idp.config import Settings
from idp.provider import Provider

UPSTREAM_DIR = ROOT / "tests" / "idp" / "upstream_oidc"
USERS = {
    "alice": {"email": "alice@example.test", "name": "Alice Example", "groups": ["ops", "staff"]},
    "bob": {"email": "bob@example.test", "name": "Bob Example", "groups": ["staff"]},
}
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def node_available() -> bool:
    return shutil.which("node") is not None and (UPSTREAM_DIR / "node_modules" / "oidc-provider").is_dir()


class NodeUpstream:
    """node-oidc-provider with one confidential client and the test users."""

    def __init__(self, *, client_id: str, client_secret: str, redirect_uris: list[str], log_dir: Path,
                 id_token_ttl: int = 300) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.client_id, self.client_secret = client_id, client_secret
        self.log = log_dir / f"upstream-{self.port}.log"
        self._logfh = open(self.log, "wb")  # noqa: SIM115 (closed by stop())
        env = {**os.environ, "UPSTREAM_CLIENT_ID": client_id, "UPSTREAM_CLIENT_SECRET": client_secret,
               "UPSTREAM_REDIRECT_URIS": " ".join(redirect_uris), "UPSTREAM_USERS": json.dumps(USERS),
               "UPSTREAM_TTL_ID_TOKEN": str(id_token_ttl)}
        self.proc = subprocess.Popen(["node", "server.js", str(self.port)], cwd=UPSTREAM_DIR, env=env,
                                     stdin=subprocess.PIPE, stdout=self._logfh, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node-oidc-provider exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(self.issuer + "/.well-known/openid-configuration", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"node-oidc-provider did not become ready:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdin:
            self.proc.stdin.close()
        self._logfh.close()


_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*method="post"[^>]*>(.*?)</form>', re.S | re.I)
_INPUT = re.compile(r'<input[^>]*name="([^"]+)"(?:[^>]*value="([^"]*)")?[^>]*>', re.I)


def form_of(page: httpx.Response) -> tuple[str, dict[str, str]]:
    found = _FORM.search(page.text)
    assert found, f"no form at {page.url}: {page.status_code} {page.text[:500]}"
    fields = {name: html.unescape(value or "") for name, value in _INPUT.findall(found.group(2))}
    return html.unescape(found.group(1)), fields


def drive_upstream_login(http: httpx.Client, start: httpx.Response, *, login: str = "alice",
                         upstream_origin: str) -> httpx.Response:
    """From the upstream's login page: submit its login form (and its consent form, the first
    time), following redirects, and return the first answer that is not the upstream's (our
    callback's answer, or what the IdP redirected on to; a redirect to the MCP client is not followed)."""
    response = start
    for _ in range(6):
        if not str(response.url).startswith(upstream_origin):
            return response
        action, fields = form_of(response)
        if fields.get("prompt") == "login":
            fields.update(login=login, password="any")
        url = httpx.URL(str(response.url)).join(action)
        response = follow(http, http.post(url, data=fields), until=lambda u: str(u).startswith(REDIRECT))
    raise AssertionError(f"the upstream login did not finish: {response.url}")


def follow(http: httpx.Client, response: httpx.Response, *, until: Callable[[httpx.URL], bool],
           limit: int = 15) -> httpx.Response:
    """Follow redirects by hand until ``until(location)``; that last redirect is returned unfollowed."""
    for _ in range(limit):
        if response.status_code not in (301, 302, 303, 307, 308):
            return response
        location = response.url.join(response.headers["location"])
        if until(location):
            return response
        response = http.get(location)
    raise AssertionError("too many redirects")


# --- the IdP under test ----------------------------------------------------------------------

REDIRECT = "http://127.0.0.1:33419/callback"  # the MCP client's loopback redirect URI (never followed)
CATALOGUE = {"tools": [{"name": "git-status", "title": "Git status", "annotations": {"readOnlyHint": True}},
                       {"name": "deploy", "description": "Deploy to production"}]}


def add_interactive_client(provider: Provider, name: str = "mcp-app") -> tuple[str, str]:
    """An operator-registered client of the code flow (client_id, secret)."""
    client, secret = provider.clients.add(name, capabilities="tools/call:*", audiences=[AUDIENCE])
    table = sa.table("clients", sa.column("client_id"), sa.column("redirect_uris"), sa.column("grant_types"))
    with provider.engine.begin() as conn:
        conn.execute(table.update().where(table.c.client_id == client.client_id).values(
            redirect_uris=json.dumps([REDIRECT]), grant_types=json.dumps(["authorization_code", "refresh_token"])))
    return str(client.client_id), secret or ""


@dataclass
class IdP:
    settings: Settings
    provider: Provider
    server: ServerProcess
    tmp: Path
    client_id: str = ""
    client_secret: str = ""

    @property
    def url(self) -> str:
        return self.server.url

    def callback(self, name: str) -> str:
        return f"{self.url}/federation/callback/{name}"

    def new_interaction(self, data: dict[str, Any] | None = None) -> str:
        """An interaction as /authorize leaves it before the person logs in (made here directly in
        the table; not bound to a browser session, as the pages' /interaction/{id} would)."""
        iid = secrets.token_urlsafe(16)
        request = {"client_id": self.client_id, "redirect_uri": REDIRECT, "state": "client-state",
                   "scope": "tools/call:git-status", "other_scopes": ["email", "openid"], "resource": AUDIENCE,
                   "code_challenge": "E9Melhoa2OwvFWfxeKJu_rQx-GwYldqWkcQPqBbd-aA", "nonce": None, "prompt": [],
                   "max_age": None}
        now = int(time.time())
        with self.provider.engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO interactions (id, request, data, created_at, expires_at) "
                                 "VALUES (:id, :r, :d, :c, :e)"),
                         {"id": iid, "r": json.dumps(request), "d": json.dumps(data or {}),
                          "c": now, "e": now + 600})
        return iid

    def interaction_data(self, iid: str) -> dict[str, Any] | None:
        with self.provider.engine.connect() as conn:
            raw = conn.execute(sa.text("SELECT data FROM interactions WHERE id = :id"), {"id": iid}).scalar()
        return None if raw is None else json.loads(raw)

    def interaction_ids(self) -> list[str]:
        with self.provider.engine.connect() as conn:
            return [r.id for r in conn.execute(sa.text("SELECT id FROM interactions ORDER BY created_at"))]

    def audit(self, event: str) -> list[dict[str, Any]]:
        with self.provider.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT actor, data FROM audit_events WHERE event = :e ORDER BY id"),
                                {"e": event}).all()
        return [{"actor": r.actor, **json.loads(r.data)} for r in rows]

    def identities(self, *issuers: str) -> list[dict[str, Any]]:
        """The federated identities (of these upstream issuers only, if named)."""
        with self.provider.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT issuer, upstream_subject, subject, claims FROM federated_identities "
                                        "ORDER BY created_at, upstream_subject")).all()
        return [{"issuer": r.issuer, "upstream_subject": r.upstream_subject, "subject": r.subject,
                 "claims": json.loads(r.claims)} for r in rows if not issuers or r.issuer in issuers]


@contextlib.contextmanager
def temporary_pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database (for fixtures wider than one test); dropped afterwards."""
    from sqlalchemy.engine import make_url

    name = "cbst_fed_" + secrets.token_hex(6)
    admin = sa.create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def start_idp(db_url: str, tmp: Path, **extra: str) -> Iterator[IdP]:
    port = free_port()
    settings = Settings(issuer=f"http://127.0.0.1:{port}", database_url=db_url, keys_dir=tmp / "keys",
                        keystore_kek=random_kek())
    provider = Provider.open(settings)
    provider.resources.add(AUDIENCE, name="Example MCP server")
    provider.resources.set_catalogue(AUDIENCE, CATALOGUE, actor="test")
    client_id, secret = add_interactive_client(provider)
    server = ServerProcess({**env_for(settings), **extra}, port)
    try:
        yield IdP(settings, provider, server, tmp, client_id, secret)
    finally:
        server.stop()
        provider.close()


# --- the attacker upstream -------------------------------------------------------------------

@dataclass
class AttackerUpstream:
    """A forging OpenID provider: ``forge(claims, header)`` may change the ID token it issues."""

    client_id: str = "idp-at-attacker"
    issuer: str = ""
    discovery_issuer: str | None = None  # the issuer its discovery document names (default: its own)
    forge: Callable[[dict[str, Any], dict[str, Any]], str | None] | None = None
    iss_param: str | None = None  # what the callback's iss parameter says (default: the issuer)
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "good"}))
    token_delay: float = 0.0  # seconds the token endpoint stalls (an upstream timeout)
    token_answer: tuple[int, bytes] | None = None  # a raw answer of the token endpoint instead of tokens
    userinfo_sub: str = "mallory"
    discovery_delay: float = 0.0
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    token_requests: list[dict[str, list[str]]] = field(default_factory=list)
    jwks_fetches: int = 0

    def __post_init__(self) -> None:
        attacker = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, body: Any, status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the IdP gave up waiting
                    self.wfile.write(data)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path == "/.well-known/openid-configuration":
                    time.sleep(attacker.discovery_delay)
                    self._json(attacker.discovery())
                elif parts.path == "/jwks":
                    attacker.jwks_fetches += 1
                    self._json({"keys": [attacker.key.as_dict(private=False)]})
                elif parts.path == "/auth":
                    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
                    code = secrets.token_urlsafe(16)
                    attacker.codes[code] = q
                    back = {"code": code, "state": q.get("state", ""),
                            "iss": attacker.iss_param if attacker.iss_param is not None else attacker.issuer}
                    self.send_response(303)
                    self.send_header("Location", q["redirect_uri"] + "?" + urlencode(back))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif parts.path == "/userinfo":
                    self._json({"sub": attacker.userinfo_sub, "email": "mallory@attacker.test", "groups": ["admins"]})
                else:
                    self._json({"error": "not_found"}, 404)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(length).decode())
                attacker.token_requests.append(form)
                if attacker.token_delay:
                    time.sleep(attacker.token_delay)
                if attacker.token_answer is not None:
                    status, raw = attacker.token_answer
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                    return
                request = attacker.codes.pop(form.get("code", [""])[0], None)
                if request is None:
                    self._json({"error": "invalid_grant"}, 400)
                    return
                now = int(time.time())
                claims = {"iss": attacker.issuer, "sub": "mallory", "aud": attacker.client_id, "iat": now,
                          "exp": now + 300, "nonce": request.get("nonce"), "email": "mallory@attacker.test"}
                header = {"alg": "RS256", "kid": "good"}
                token = attacker.forge(claims, header) if attacker.forge else None
                if token is None:
                    token = jwt.encode(header, claims, attacker.key)
                self._json({"access_token": "at-" + secrets.token_hex(8), "token_type": "Bearer", "expires_in": 300,
                            "id_token": token})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def discovery(self) -> dict[str, Any]:
        base = self.issuer
        return {"issuer": self.discovery_issuer or base, "authorization_endpoint": base + "/auth",
                "token_endpoint": base + "/token", "jwks_uri": base + "/jwks", "userinfo_endpoint": base + "/userinfo",
                "response_types_supported": ["code"], "code_challenge_methods_supported": ["S256"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                "authorization_response_iss_parameter_supported": True}

    def sign(self, claims: dict[str, Any], header: dict[str, Any] | None = None, key: Any = None) -> str:
        return jwt.encode(header or {"alg": "RS256", "kid": "good"}, claims, key or self.key)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


__all__ = ["AttackerUpstream", "ECKey", "IdP", "NodeUpstream", "RSAKey", "drive_upstream_login", "follow", "form_of",
           "node_available", "start_idp"]
