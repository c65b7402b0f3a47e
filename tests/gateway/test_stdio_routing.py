"""How the stdio bridge multiplexes many HTTP sessions onto one child: ids and progress tokens
rewritten, cancellations translated, resource updates only to the sessions that subscribed,
list changes to everyone, server-to-client requests answered by the gateway.

Uses ``fake_stdio_server.py`` (standard library only), which logs every message it receives.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway import StdioBridge

from gateway_support import HERE, ThreadedServer

HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    log = tmp_path / "child.jsonl"
    monkeypatch.setenv("FAKE_MCP_LOG", str(log))
    bridge = StdioBridge([sys.executable, str(HERE / "fake_stdio_server.py")], request_timeout=10)
    with ThreadedServer(bridge, lifespan="on") as srv:
        yield srv.url + "/mcp", log


def received(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


class Session:
    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http, self.url, self.sid = http, url, ""
        self.events: list[dict[str, Any]] = []
        self._n = 0

    async def open(self) -> Session:
        r = await self.http.post(self.url, headers=HEADERS, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}})
        assert r.status_code == 200, r.text
        self.sid = r.headers["mcp-session-id"]
        return self

    async def call(self, method: str, params: dict[str, Any], id_: Any = None) -> dict[str, Any]:
        self._n += 1
        r = await self.http.post(self.url, headers={**HEADERS, "accept": "application/json", "mcp-session-id": self.sid},
                                 json={"jsonrpc": "2.0", "id": id_ if id_ is not None else self._n, "method": method,
                                       "params": params})
        assert r.status_code == 200, r.text
        return r.json()

    async def listen(self, ready: asyncio.Event) -> None:
        async with self.http.stream("GET", self.url, headers={**HEADERS, "mcp-session-id": self.sid}) as r:
            assert r.status_code == 200
            ready.set()
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    self.events.append(json.loads(line[6:]))


async def _until(predicate: Any, timeout: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.02)


def test_updates_go_to_subscribers_list_changes_to_all(fake: tuple[str, Path]) -> None:
    url, log = fake

    async def run() -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            a, b, c = [await Session(http, url).open() for _ in range(3)]
            tasks = []
            for s in (a, b):
                ready = asyncio.Event()
                tasks.append(asyncio.create_task(s.listen(ready)))
                await ready.wait()
            assert (await a.call("resources/subscribe", {"uri": "file:///a"}))["result"] == {}
            await c.call("tools/call", {"name": "touch", "arguments": {"uri": "file:///a"}})
            await c.call("tools/call", {"name": "changed", "arguments": {}})
            await _until(lambda: len(a.events) == 2 and len(b.events) == 1)
            assert [e["method"] for e in a.events] == ["notifications/resources/updated", "notifications/tools/list_changed"]
            assert [e["method"] for e in b.events] == ["notifications/tools/list_changed"]
            # b subscribes too; a's unsubscribe must not cancel b's subscription in the child
            await b.call("resources/subscribe", {"uri": "file:///a"})
            await a.call("resources/unsubscribe", {"uri": "file:///a"})
            assert not [m for m in received(log) if m.get("method") == "resources/unsubscribe"]
            await c.call("tools/call", {"name": "touch", "arguments": {"uri": "file:///a"}})
            await _until(lambda: len(b.events) == 2)
            await asyncio.sleep(0.1)
            assert len(a.events) == 2
            # the last subscriber leaving (session deleted) unsubscribes the child
            assert (await http.delete(url, headers={"mcp-session-id": b.sid})).status_code == 200
            await _until(lambda: any(m.get("method") == "resources/unsubscribe" for m in received(log)))
            for t in tasks:
                t.cancel()

    asyncio.run(run())


def test_ids_are_rewritten_and_cancellation_is_translated(fake: tuple[str, Path]) -> None:
    url, log = fake

    async def run() -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            a, b = await Session(http, url).open(), await Session(http, url).open()
            # Both sessions use id 7 at once; each gets its own answer back under id 7.
            ra, rb = await asyncio.gather(a.call("tools/call", {"name": "sleep", "arguments": {"seconds": 0.3}}, 7),
                                          b.call("tools/list", {}, 7))
            assert ra["id"] == 7 and ra["result"]["content"][0]["text"] == "slept"
            assert rb["id"] == 7 and rb["result"]["tools"]
            call = asyncio.create_task(a.call("tools/call", {"name": "sleep", "arguments": {"seconds": 3}}, "slow-1"))
            await _until(lambda: any(m.get("params", {}).get("arguments", {}).get("seconds") == 3 for m in received(log)))
            r = await http.post(url, headers={**HEADERS, "mcp-session-id": a.sid}, json={
                "jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "slow-1"}})
            assert r.status_code == 202
            await _until(lambda: any(m.get("method") == "notifications/cancelled" for m in received(log)))
            call.cancel()

    asyncio.run(run())
    messages = received(log)
    ids = [m["id"] for m in messages if "id" in m and m.get("method") != "initialize"]
    assert ids and all(isinstance(i, str) and i.startswith("cbst-") for i in ids), ids
    assert len(set(ids)) == len(ids)
    sleeper = next(m for m in messages if m.get("params", {}).get("arguments", {}).get("seconds") == 3)
    cancelled = next(m for m in messages if m.get("method") == "notifications/cancelled")
    assert cancelled["params"]["requestId"] == sleeper["id"]
    assert sum(m.get("method") == "initialize" for m in messages) == 1  # one child handshake for all sessions
    assert not [m for m in messages if m.get("method") == "notifications/initialized"][1:]


def test_server_to_client_requests_are_answered_by_the_gateway(fake: tuple[str, Path]) -> None:
    url, _ = fake

    async def run() -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as http:
            a = await Session(http, url).open()
            return await a.call("tools/call", {"name": "ask", "arguments": {}})

    answer = json.loads(asyncio.run(run())["result"]["content"][0]["text"])
    assert answer["id"] == "srv-1" and answer["error"]["code"] == -32601


def test_a_request_the_child_does_not_answer_in_time_fails_and_is_cancelled(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "child.jsonl"
    monkeypatch.setenv("FAKE_MCP_LOG", str(log))
    bridge = StdioBridge([sys.executable, str(HERE / "fake_stdio_server.py")], request_timeout=0.5)
    with ThreadedServer(bridge, lifespan="on") as srv:
        async def run() -> dict[str, Any]:
            async with httpx.AsyncClient(timeout=10) as http:
                a = await Session(http, srv.url + "/mcp").open()
                return await a.call("tools/call", {"name": "sleep", "arguments": {"seconds": 2}}, "late")

        answer = asyncio.run(run())
    assert answer["id"] == "late" and answer["error"]["code"] == -32603
    assert "did not answer within 0.5s" in answer["error"]["message"]
    cancels = [m for m in received(log) if m.get("method") == "notifications/cancelled"]
    assert len(cancels) == 1 and cancels[0]["params"]["requestId"].startswith("cbst-")
