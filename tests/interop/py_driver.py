"""Drive a protected MCP server with the official Python client, 2.x or 1.x, through a list of ops.

Used in-process for ``mcp`` 2.x (:func:`run`) and as a subprocess in the 1.x virtualenv
(``.venv-mcp1/bin/python tests/interop/py_driver.py`` with ``PYTHONPATH`` naming the checkout),
since the two lines cannot share an environment. The same protocol as ``ts/driver.mjs``:

stdin, first line — one JSON object::

    {"url": "http://127.0.0.1:P/mcp", "mode": "auto" | "legacy",
     "auth": {"issuer": ..., "client_id": ..., "client_secret": ..., "scope": ..., "resource": ...}
           | {"token": "<access token>"},
     "ops": [{"id": "t", "op": "list_tools"}, {"id": "e", "op": "call_tool", "name": "echo",
             "arguments": {...}}, {"op": "pause"}, ...]}

stdout — JSON lines: ``{"id": ..., "ok": <value>}`` or ``{"id": ..., "error": "<text>"}`` per op
(``"connect"`` first), ``{"event": "paused"}`` when a ``pause`` op waits for a line on stdin,
``{"event": "done"}`` at the end. Values: ``list_*`` give sorted names/URIs, ``call_tool``
``{"text": ..., "is_error": ...}``, ``read_resource`` the text, ``get_prompt`` the first message text.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

Emit = Callable[[dict[str, Any]], None]
Pause = Callable[[], Awaitable[None]]


def describe(exc: BaseException) -> str:
    """Flatten an exception (and exception groups, causes) into one line of text."""
    parts = [f"{type(exc).__name__}: {exc}"]
    for sub in getattr(exc, "exceptions", ()):
        parts.append(describe(sub))
    if exc.__cause__ is not None:
        parts.append(describe(exc.__cause__))
    return " | ".join(parts)


def _text(contents: Any) -> str:
    return "".join(getattr(c, "text", "") or "" for c in contents)


async def _op(session: Any, op: dict[str, Any]) -> Any:
    kind = op["op"]
    if kind == "list_tools":
        return sorted(t.name for t in (await session.list_tools()).tools)
    if kind == "call_tool":
        result = await session.call_tool(op["name"], op.get("arguments") or {})
        is_error = getattr(result, "is_error", None) if hasattr(result, "is_error") else result.isError  # 2.x / 1.x
        return {"text": _text(result.content), "is_error": bool(is_error)}
    if kind == "list_resources":
        return sorted(str(r.uri) for r in (await session.list_resources()).resources)
    if kind == "read_resource":
        result = await session.read_resource(op["uri"])
        return "".join(getattr(c, "text", "") or "" for c in result.contents)
    if kind == "list_prompts":
        return sorted(p.name for p in (await session.list_prompts()).prompts)
    if kind == "get_prompt":
        result = await session.get_prompt(op["name"], op.get("arguments") or {})
        return result.messages[0].content.text if result.messages else ""
    raise ValueError(f"unknown op {kind!r}")


def _credentials(auth: dict[str, Any]) -> Any:
    from sdk.client import ClientCredentials

    return ClientCredentials(auth["issuer"], auth["client_id"], client_secret=auth.get("client_secret"),
                             scope=auth.get("scope"), resource=auth.get("resource"))


async def run(config: dict[str, Any], emit: Emit, pause: Pause, *, credentials: Any = None) -> None:
    """Run ``config["ops"]`` with the installed ``mcp`` (2.x or 1.x).

    A ``reconnect`` op closes the session and opens a new one (its connect result is reported
    under the op's id). When a session dies under an op (the 1.x client ends its transport on any
    HTTP error status), that op gets the error, ``"session_ended": true``, and the ops after it,
    up to the next ``reconnect``, get ``"not run: the session ended"``.
    """
    auth = config["auth"]
    if credentials is None and "token" not in auth:
        credentials = _credentials(auth)
    groups: list[tuple[str, list[dict[str, Any]]]] = [("connect", [])]
    for op in config["ops"]:
        if op["op"] == "reconnect":
            groups.append((op["id"], []))
        else:
            groups[-1][1].append(op)
    try:
        for connect_id, ops in groups:
            await _session(config, credentials, connect_id, ops, emit, pause)
    finally:
        emit({"event": "done"})


async def _session(config: dict[str, Any], credentials: Any, connect_id: str, ops: list[dict[str, Any]],
                   emit: Emit, pause: Pause) -> None:
    connect = _connect_v2 if _major() >= 2 else _connect_v1
    current: str | None = connect_id
    done: set[str] = set()
    try:
        async with AsyncExitStack() as stack:
            try:
                session, version = await connect(stack, config, credentials)
            except Exception as exc:  # noqa: BLE001 - reported to the test, which decides
                emit({"id": connect_id, "error": describe(exc)})
                return
            emit({"id": connect_id, "ok": {"protocol_version": version}})
            done.add(connect_id)
            for op in ops:
                if op["op"] == "pause":
                    emit({"event": "paused"})
                    await pause()
                    continue
                current = op["id"]
                try:
                    emit({"id": op["id"], "ok": await _op(session, op)})
                except Exception as exc:  # noqa: BLE001
                    emit({"id": op["id"], "error": describe(exc)})
                done.add(op["id"])
            current = None
    except Exception as exc:  # noqa: BLE001 - the session's transport died
        if current is not None and current not in done:
            emit({"id": current, "error": describe(exc), "session_ended": True})
            done.add(current)
        else:
            emit({"event": "close_error", "error": describe(exc)})
        for op in ops:
            if "id" in op and op["id"] not in done:
                emit({"id": op["id"], "error": "not run: the session ended"})


def _major() -> int:
    from importlib.metadata import version

    return int(version("mcp").split(".")[0])


async def _connect_v2(stack: AsyncExitStack, config: dict[str, Any], credentials: Any) -> Any:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    if credentials is not None:
        transport = credentials.mcp_transport(config["url"])
    else:
        http = await stack.enter_async_context(
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {config['auth']['token']}"}, timeout=30))
        transport = streamable_http_client(config["url"], http_client=http)
    client = await stack.enter_async_context(Client(transport, mode=config.get("mode", "auto")))
    return client, client.protocol_version


async def _connect_v1(stack: AsyncExitStack, config: dict[str, Any], credentials: Any) -> Any:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    if credentials is not None:
        streams = streamablehttp_client(config["url"], auth=credentials.httpx_auth())
    else:
        streams = streamablehttp_client(config["url"], headers={"Authorization": f"Bearer {config['auth']['token']}"})
    read, write, _ = await stack.enter_async_context(streams)
    session = await stack.enter_async_context(ClientSession(read, write))
    result = await session.initialize()
    return session, str(result.protocolVersion)


def main() -> None:
    config = json.loads(sys.stdin.readline())

    def emit(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    async def pause() -> None:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    asyncio.run(run(config, emit, pause))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, for ``sdk``
    main()
