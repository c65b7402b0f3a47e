#!/usr/bin/env python3
"""Stand-in for the `idp` CLI, used by the benchmark's *stub* mode.

It mimics exactly the two commands the benchmark calls on the real server, so the "ours"
code path of the runner (register the client, start the server, poll metadata, run wrk,
stop everything) can be exercised before `idp serve` exists:

    stub_idp.py clients add NAME --capabilities "..." --audience AUD --json
    stub_idp.py serve --host 127.0.0.1 --port P --workers N

Configuration comes from the same environment as the real one (IDP_ISSUER,
IDP_DATABASE_URL=sqlite:///PATH, IDP_KEYS_DIR). The client is stored in a JSON file next
to the sqlite path; the signing key (ES256 via `cryptography` if importable, otherwise
HS256) is made per process. It is a plain stdlib HTTP server: its numbers say nothing
about the real IdP and the reports label it "stub".
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import signal
import socket
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _store_path() -> Path:
    url = os.environ.get("IDP_DATABASE_URL", "sqlite:///./stub-idp.db")
    if not url.startswith("sqlite:///"):
        raise SystemExit("stub_idp: IDP_DATABASE_URL must be sqlite:///PATH")
    return Path(url[len("sqlite:///"):]).with_suffix(".stub-clients.json")


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def cmd_clients_add(args: argparse.Namespace) -> int:
    path = _store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    clients = json.loads(path.read_text()) if path.exists() else {}
    client_id = "cl_" + secrets.token_urlsafe(12)
    client_secret = secrets.token_urlsafe(32)
    clients[client_id] = {
        "name": args.name,
        "secret_sha256": _hash_secret(client_secret),
        "capabilities": args.capabilities.split(),
        "audience": args.audience,
    }
    path.write_text(json.dumps(clients))
    out = {"client_id": client_id, "client_secret": client_secret, "name": args.name,
           "capabilities": args.capabilities.split(), "audience": args.audience}
    print(json.dumps(out) if args.json else f"client_id={client_id}\nclient_secret={client_secret}")
    return 0


class _Signer:
    def __init__(self) -> None:
        self.kid = secrets.token_hex(8)
        try:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
        except ImportError:
            self.alg = "HS256"
            self._key = secrets.token_bytes(32)
            self.sign = lambda data: hmac.new(self._key, data, hashlib.sha256).digest()
            return
        self.alg = "ES256"
        priv = ec.generate_private_key(ec.SECP256R1())
        algo = ec.ECDSA(hashes.SHA256())

        def sign(data: bytes) -> bytes:
            r, s = decode_dss_signature(priv.sign(data, algo))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")

        self.sign = sign

    def jwt(self, claims: dict) -> str:
        header = _b64url(json.dumps({"alg": self.alg, "typ": "at+jwt", "kid": self.kid},
                                    separators=(",", ":")).encode())
        payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{payload}".encode()
        return f"{header}.{payload}.{_b64url(self.sign(signing_input))}"


def _make_handler(issuer: str, clients: dict, signer: _Signer):
    metadata = json.dumps({
        "issuer": issuer,
        "token_endpoint": issuer + "/token",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "stub": True,
    }).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else header/body writes meet delayed ACKs (40 ms)
        server_version = "cbst-bench-stub"

        def log_message(self, *a):  # quiet
            pass

        def _send(self, status: int, body: bytes, extra: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, code: str, extra: dict | None = None) -> None:
            self._send(status, json.dumps({"error": code}).encode(), extra)

        def do_GET(self):
            if self.path in ("/.well-known/oauth-authorization-server",
                             "/.well-known/openid-configuration"):
                self._send(200, metadata)
            else:
                self._error(404, "not_found")

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.path != "/token":
                return self._error(404, "not_found")
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Basic "):
                return self._error(401, "invalid_client", {"WWW-Authenticate": "Basic"})
            try:
                cid, _, csecret = base64.b64decode(auth[6:]).decode().partition(":")
            except Exception:
                return self._error(401, "invalid_client")
            client = clients.get(cid)
            if client is None or not hmac.compare_digest(client["secret_sha256"],
                                                         _hash_secret(csecret)):
                return self._error(401, "invalid_client")
            form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            if form.get("grant_type") != "client_credentials":
                return self._error(400, "unsupported_grant_type")
            if form.get("resource", client["audience"]) != client["audience"]:
                return self._error(400, "invalid_target")
            scope = form.get("scope", " ".join(client["capabilities"]))
            now = int(time.time())
            claims = {"iss": issuer, "sub": cid, "aud": client["audience"], "client_id": cid,
                      "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex, "scope": scope}
            body = json.dumps({"access_token": signer.jwt(claims), "token_type": "Bearer",
                               "expires_in": 300, "scope": scope}).encode()
            self._send(200, body)

    return Handler


def _serve_one(host: str, port: int, issuer: str) -> None:
    clients = json.loads(_store_path().read_text()) if _store_path().exists() else {}

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

        def server_bind(self):
            if hasattr(socket, "SO_REUSEPORT"):
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            super().server_bind()

    httpd = Server((host, port), _make_handler(issuer, clients, _Signer()))
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    try:
        httpd.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        httpd.server_close()


def cmd_serve(args: argparse.Namespace) -> int:
    issuer = os.environ.get("IDP_ISSUER", f"http://{args.host}:{args.port}")
    children: list[int] = []
    for _ in range(max(1, args.workers)):
        pid = os.fork()
        if pid == 0:
            _serve_one(args.host, args.port, issuer)
            os._exit(0)
        children.append(pid)

    def stop(*_a):
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, lambda *a: stop())
    signal.signal(signal.SIGINT, lambda *a: stop())
    for pid in children:
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except ChildProcessError:
                break
            except InterruptedError:
                continue
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="stub_idp")
    sub = p.add_subparsers(dest="cmd", required=True)
    clients = sub.add_parser("clients").add_subparsers(dest="clients_cmd", required=True)
    add = clients.add_parser("add")
    add.add_argument("name")
    add.add_argument("--capabilities", required=True)
    add.add_argument("--audience", required=True)
    add.add_argument("--json", action="store_true")
    add.set_defaults(func=cmd_clients_add)
    serve = sub.add_parser("serve")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
