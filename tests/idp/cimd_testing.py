"""A real HTTPS server on loopback for Client ID Metadata Document tests (trustme certificates).

Each path answers as its :class:`Route` says (status, headers, body, delays); every request is
counted per path, so a test can tell that a refused URL was never fetched.
"""

from __future__ import annotations

import http.server
import json
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay: float = 0.0  # before the status line
    dribble: float = 0.0  # between body bytes (a slow-loris body)
    content_length: bool = True


class DocumentServer:
    def __init__(self, ca: trustme.CA, tmp: Path) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.if_none_match: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.hits[self.path] += 1
                server.if_none_match.append(self.headers.get("If-None-Match"))
                route = server.routes.get(self.path, Route(404, b"{}"))
                if route.delay:
                    time.sleep(route.delay)
                etag = route.headers.get("ETag")
                status = route.status
                if etag and self.headers.get("If-None-Match") == etag and status == 200:
                    status = 304
                self.send_response(status)
                for k, v in route.headers.items():
                    self.send_header(k, v)
                body = b"" if status == 304 else route.body
                if route.content_length:
                    self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    if route.dribble:
                        for i in range(len(body)):
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                            time.sleep(route.dribble)
                    else:
                        self.wfile.write(body)
                except OSError:
                    pass
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        cert = ca.issue_cert("localhost", "127.0.0.1", "::1")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url(self, path: str, host: str = "localhost") -> str:
        return f"https://{host}:{self.port}{path}"

    def document(self, path: str, *, host: str = "localhost", headers: dict[str, str] | None = None,
                 **members: Any) -> str:
        """Serve a valid document at ``path``; returns its URL (the client_id)."""
        url = self.url(path, host)
        doc = {"client_id": url, "client_name": "Example MCP Client",
               "redirect_uris": ["http://127.0.0.1:3000/callback"], "grant_types": ["authorization_code"],
               "response_types": ["code"], "token_endpoint_auth_method": "none", **members}
        self.routes[path] = Route(body=json.dumps(doc).encode(),
                                  headers={"Content-Type": "application/json", **(headers or {})})
        return url

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve(ca: trustme.CA, tmp: Path) -> Iterator[DocumentServer]:
    srv = DocumentServer(ca, tmp)
    try:
        yield srv
    finally:
        srv.close()
