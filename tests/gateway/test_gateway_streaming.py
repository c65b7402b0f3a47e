"""Streamed answers pass through a real ``cbst-gateway`` process as they come.

A spec-conforming 2026-07-28 ``subscriptions/listen`` stream (SEP-2575): the upstream sends the
acknowledgement, waits until the client has *received* it (at most 5 s), then sends a second
event and the result. A gateway that held events back until the stream ended would make the
upstream wait out its 5 s, and the client would get the first event after the second was sent.
A listen stream is long-lived: a silence longer than ``--timeout`` is not a failure.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from gateway_support import HERE, IdP, ThreadedServer, free_port

pytestmark = pytest.mark.slow  # real cbst-gateway and idp processes

LISTEN = {"jsonrpc": "2.0", "id": "listen-1", "method": "subscriptions/listen",
          "params": {"notifications": {"toolsListChanged": True},
                     "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                               "io.modelcontextprotocol/clientCapabilities": {}}}}
SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"


def _listen(url: str, token: str, on_first: Any) -> list[tuple[float, dict[str, Any]]]:
    """POST subscriptions/listen; every SSE event's JSON with the time it arrived."""
    headers = {"authorization": f"Bearer {token}", "accept": "application/json, text/event-stream",
               "content-type": "application/json", "mcp-protocol-version": "2026-07-28",
               "mcp-method": "subscriptions/listen"}
    events: list[tuple[float, dict[str, Any]]] = []
    with httpx.stream("POST", url, json=LISTEN, headers=headers, timeout=20) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append((time.monotonic(), json.loads(line[5:])))
                if len(events) == 1:
                    on_first()
    return events


def _check(events: list[tuple[float, dict[str, Any]]], second_sent: float) -> None:
    methods = [e.get("method", "result" if "result" in e else "error") for _, e in events]
    assert methods == ["notifications/subscriptions/acknowledged", "notifications/tools/list_changed",
                       "result"], events
    assert events[0][0] < second_sent, "the first event arrived only after the second was sent"
    assert events[2][1]["id"] == "listen-1"
    assert all(e["params"]["_meta"][SUBSCRIPTION_ID] == "listen-1" for _, e in events[:2])


class _ListenUpstream:
    """A streamable-HTTP upstream serving one 2026-07-28 listen stream, event by event."""

    def __init__(self, pause: float, eol: bytes) -> None:
        self.pause, self.eol = pause, eol
        self.first_seen = threading.Event()
        self.second_sent: float | None = None
        self.waited_out = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)
        meta = {SUBSCRIPTION_ID: request["id"]}

        def event(obj: dict[str, Any]) -> dict[str, Any]:
            eol = self.eol  # SSE lines end with CRLF, LF or CR (WHATWG HTML, server-sent events)
            data = b"event: message" + eol + b"data: " + json.dumps(obj).encode() + eol + eol
            return {"type": "http.response.body", "body": data, "more_body": True}

        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        await send(event({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                          "params": {"notifications": {"toolsListChanged": True}, "_meta": meta}}))
        deadline = time.monotonic() + 5
        while not self.first_seen.is_set() and time.monotonic() < deadline:
            await anyio.sleep(0.01)
        self.waited_out = not self.first_seen.is_set()
        await anyio.sleep(self.pause)
        self.second_sent = time.monotonic()
        await send(event({"jsonrpc": "2.0", "method": "notifications/tools/list_changed",
                          "params": {"_meta": meta}}))
        await send(event({"jsonrpc": "2.0", "id": request["id"], "result": {"_meta": meta}}))
        await send({"type": "http.response.body", "body": b""})


def _gateway(gateway_process: Any, idp: IdP, *args: str, **kw: Any) -> tuple[str, str]:
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    gateway_process("--issuer", idp.url, "--resource", resource, "--timeout", "1", "--log-level", "warning",
                    *args, port=port, **kw)
    return resource, idp.token("subscriptions/listen", resource)


@pytest.mark.parametrize(("pause", "eol"), [(0.0, b"\r\n"), (0.0, b"\r"), (1.5, b"\n")],
                         ids=["back-to-back-crlf", "back-to-back-cr", "silent-longer-than-timeout"])
def test_http_mode_relays_a_listen_stream_event_by_event(idp: IdP, gateway_process: Any, pause: float,
                                                         eol: bytes) -> None:
    upstream = _ListenUpstream(pause, eol)
    with ThreadedServer(upstream) as up:
        url, token = _gateway(gateway_process, idp, "--upstream", up.url + "/mcp")
        events = _listen(url, token, upstream.first_seen.set)
    assert not upstream.waited_out, "the upstream never learned that its first event had been received"
    assert upstream.second_sent is not None
    _check(events, upstream.second_sent)


@pytest.mark.parametrize("pause", [0.0, 1.5], ids=["back-to-back", "silent-longer-than-timeout"])
def test_stdio_mode_relays_a_listen_stream_event_by_event(idp: IdP, gateway_process: Any, tmp_path: Path,
                                                          pause: float) -> None:
    go = tmp_path / "go"
    command = f"{sys.executable} {HERE / 'fake_stdio_server.py'}"
    url, token = _gateway(gateway_process, idp, "--upstream-stdio", command,
                          env={"FAKE_MCP_GO": str(go), "FAKE_MCP_PAUSE": str(pause)})
    events = _listen(url, token, go.touch)
    sent = Path(f"{go}.sent")
    assert sent.exists()
    _check(events, float(sent.read_text()))


def test_a_listen_request_that_does_not_accept_sse_is_refused_not_left_hanging(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A listen answer *is* an event stream (the official server answers 406 without the SSE
    accept); as JSON it would never be complete, so the POST would hang forever."""
    from gateway import StdioBridge

    monkeypatch.setenv("FAKE_MCP_GO", str(tmp_path / "go"))
    bridge = StdioBridge([sys.executable, str(HERE / "fake_stdio_server.py")], request_timeout=10)
    with ThreadedServer(bridge, lifespan="on") as srv:
        headers = {"accept": "application/json", "content-type": "application/json",
                   "mcp-protocol-version": "2026-07-28", "mcp-method": "subscriptions/listen"}
        response = httpx.post(srv.url + "/mcp", json=LISTEN, headers=headers, timeout=10)
    assert response.status_code == 406
    body = response.json()
    assert body["id"] == "listen-1" and body["error"]["code"] == -32600
    assert "text/event-stream" in body["error"]["message"]
