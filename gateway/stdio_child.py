"""A supervised stdio MCP server: one child process speaking newline-delimited JSON-RPC.

MCP spec, Transports → stdio: messages are single-line JSON on the child's stdin/stdout; its
stderr is a log (relayed to the ``cbst.gateway.child`` logger). The gateway is the child's only
client and speaks one protocol generation to it: ``handshake`` (it performs ``initialize`` once
per process) or ``modern`` (2026-07-28: it checks ``server/discover`` lists that version; every
request then carries its own ``_meta`` envelope). It multiplexes every HTTP client's requests
onto the child, rewriting request ids (and progress tokens) to values of its own so that
concurrent clients cannot collide, and restoring them on the way back.

If the child exits, every request in flight fails with a JSON-RPC error and the child is
restarted with exponential backoff; more than ``max_restarts`` crashes inside
``restart_window`` seconds is fatal (``on_fatal`` is called; the CLI then exits non-zero).
"""

from __future__ import annotations

import asyncio
import collections
import copy
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sdk import mcp_protocol as protocol

from . import _jsonrpc as rpc
from .errors import GatewayConfigError, GatewayError, StdioStartError

log = logging.getLogger("cbst.gateway.stdio")
child_log = logging.getLogger("cbst.gateway.child")

EventSink = Callable[[rpc.Message], Awaitable[None]]

STDOUT_LINE_LIMIT = 64 * 1024 * 1024
CLIENT_INFO = {"name": "cbst-gateway", "version": "0.1.0"}  # how the gateway introduces itself


@dataclass
class _Pending:
    original_id: Any
    future: asyncio.Future[rpc.Message]
    on_event: EventSink | None
    progress_token: Any = None
    gw_token: str | None = None


@dataclass
class _Process:
    proc: asyncio.subprocess.Process
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    ready: bool = False  # initialised; before that an exit is the starter's to report
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    stderr_tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=20))


class StdioChild:
    """Spawn ``argv`` (no shell), initialise it, and route JSON-RPC to and from it."""

    def __init__(self, argv: list[str], *, start_timeout: float = 30.0, request_timeout: float = 300.0,
                 max_restarts: int = 5, restart_window: float = 60.0, backoff: float = 0.25,
                 generation: str = "handshake",
                 on_notification: Callable[[rpc.Message], None] | None = None,
                 on_fatal: Callable[[str], None] | None = None) -> None:
        if not argv:
            raise GatewayConfigError("empty stdio command")
        if generation not in ("handshake", "modern"):
            raise GatewayConfigError(f"generation must be 'handshake' or 'modern', got {generation!r}")
        self.generation = generation
        if start_timeout <= 0 or request_timeout <= 0 or max_restarts < 0 or backoff < 0:
            raise GatewayConfigError("timeouts must be positive and max_restarts/backoff non-negative")
        self.argv = list(argv)
        self.command = " ".join(argv)
        self.start_timeout = start_timeout
        self.request_timeout = request_timeout
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.backoff = backoff
        self.on_notification = on_notification
        self.on_fatal = on_fatal
        self.initialize_result: dict[str, Any] | None = None
        self.failed: str | None = None
        self.restarts = 0
        self._ids = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._progress: dict[str, str] = {}  # gateway progress token -> gateway request id
        self._ready = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._current: _Process | None = None
        self._crashes: collections.deque[float] = collections.deque()
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- public --------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._current.proc.pid if self._current else None

    @property
    def ready(self) -> bool:
        """Up and initialised: requests go to the child now."""
        return self.failed is None and self._ready.is_set() and self._current is not None

    @property
    def protocol_version(self) -> str:
        if self.generation == "modern":
            return protocol.LATEST_MODERN_VERSION
        if self.initialize_result is None:
            raise GatewayError("the stdio server has not been initialised yet")
        return str(self.initialize_result.get("protocolVersion", protocol.LATEST_HANDSHAKE_VERSION))

    async def start(self) -> None:
        """First start: spawn and initialise, or raise StdioStartError with the reason."""
        await self._spawn_and_initialize()

    async def aclose(self) -> None:
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
        await self._terminate()
        self._fail_pending("the gateway is shutting down")

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    def next_id(self) -> str:
        return f"cbst-{next(self._ids)}"

    async def request(self, message: rpc.Message, gw_id: str | None = None,
                      on_event: EventSink | None = None) -> rpc.Message:
        """Send one request; return its response with the caller's id restored.

        Never raises for upstream trouble: failures come back as JSON-RPC error responses.
        Progress notifications for this request go to ``on_event`` (token restored).
        """
        original_id = message.get("id")
        if not await self.wait_ready():
            return rpc.error(original_id, rpc.INTERNAL_ERROR, self.unavailable_reason())
        gw_id = gw_id or self.next_id()
        out = dict(message, id=gw_id)
        pending = _Pending(original_id, asyncio.get_running_loop().create_future(), on_event)
        params = out.get("params")
        if isinstance(params, dict) and isinstance(params.get("_meta"), dict) and "progressToken" in params["_meta"]:
            out["params"] = params = copy.copy(params)
            params["_meta"] = dict(params["_meta"])
            pending.progress_token = params["_meta"]["progressToken"]
            pending.gw_token = params["_meta"]["progressToken"] = f"{gw_id}-progress"
            self._progress[pending.gw_token] = gw_id
        self._pending[gw_id] = pending
        try:
            if not await self._write(out):
                return rpc.error(original_id, rpc.INTERNAL_ERROR, self.unavailable_reason())
            timeout = None if out.get("method") in rpc.LONG_LIVED_METHODS else self.request_timeout
            try:
                return await asyncio.wait_for(asyncio.shield(pending.future), timeout)
            except TimeoutError:
                pending.future.cancel()
                await self._write({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                   "params": {"requestId": gw_id, "reason": "gateway request timeout"}})
                return rpc.error(original_id, rpc.INTERNAL_ERROR,
                                 f"upstream stdio server `{self.command}` did not answer within {self.request_timeout:g}s")
        finally:
            self._forget(gw_id)
            if not pending.future.done():  # the caller went away: tell the child
                pending.future.cancel()
                self._background(self._write({
                    "jsonrpc": "2.0", "method": "notifications/cancelled",
                    "params": {"requestId": gw_id, "reason": "client disconnected"}}))

    async def notify(self, message: rpc.Message) -> None:
        """Forward a client notification (best effort: dropped while the child is down)."""
        if self._ready.is_set():
            await self._write(message)

    # -- process management ----------------------------------------------------------------
    async def _spawn_and_initialize(self) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, limit=STDOUT_LINE_LIMIT, start_new_session=True)
        except OSError as exc:
            raise StdioStartError(f"cannot start stdio MCP server `{self.command}`: {exc.strerror or exc}") from exc
        current = _Process(proc)
        self._current = current
        current.tasks.append(asyncio.create_task(self._pump_stderr(current)))
        current.tasks.append(asyncio.create_task(self._read_stdout(current)))
        init_id = f"cbst-init-{next(self._ids)}"
        future: asyncio.Future[rpc.Message] = asyncio.get_running_loop().create_future()
        self._pending[init_id] = _Pending(init_id, future, None)
        try:
            if self.generation == "handshake":
                method = "initialize"
                params: dict[str, Any] = {"protocolVersion": protocol.LATEST_HANDSHAKE_VERSION, "capabilities": {},
                                          "clientInfo": CLIENT_INFO}
            else:
                method = "server/discover"
                params = {"_meta": {protocol.META_PROTOCOL_VERSION: protocol.LATEST_MODERN_VERSION,
                                    protocol.META_CLIENT_CAPABILITIES: {}, protocol.META_CLIENT_INFO: CLIENT_INFO}}
            await self._write_raw(current, {"jsonrpc": "2.0", "id": init_id, "method": method, "params": params})
            exit_wait: asyncio.Future[Any] = asyncio.ensure_future(current.exited.wait())
            try:
                waiters: set[asyncio.Future[Any]] = {future, exit_wait}
                done, _ = await asyncio.wait(waiters, timeout=self.start_timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                exit_wait.cancel()
            if future not in done:
                if current.exited.is_set():
                    await asyncio.sleep(0.05)  # let stderr drain
                    raise StdioStartError(f"stdio MCP server `{self.command}` exited with code {proc.returncode} "
                                          f"before answering {method}{self._stderr_hint(current)}")
                raise StdioStartError(f"stdio MCP server `{self.command}` did not answer {method} within "
                                      f"{self.start_timeout:g}s{self._stderr_hint(current)}")
            response = future.result()
            result = response.get("result")
            if "error" in response or not isinstance(result, dict):
                raise StdioStartError(f"stdio MCP server `{self.command}` refused {method}: "
                                      f"{json.dumps(response.get('error'))}")
            versions = result.get("supportedVersions") or []
            if self.generation == "modern" and protocol.LATEST_MODERN_VERSION not in versions:
                raise StdioStartError(f"stdio MCP server `{self.command}` does not support "
                                      f"{protocol.LATEST_MODERN_VERSION} (server/discover: {versions})")
            self.initialize_result = result
            if self.generation == "handshake":
                await self._write_raw(current, {"jsonrpc": "2.0", "method": "notifications/initialized"})
            if current.exited.is_set():
                raise StdioStartError(f"stdio MCP server `{self.command}` exited with code {proc.returncode} "
                                      f"right after {method}{self._stderr_hint(current)}")
            current.ready = True  # no await between the check above and here: _on_exit sees one or the other
        except BaseException:
            self._pending.pop(init_id, None)
            await self._terminate()
            raise
        self._pending.pop(init_id, None)
        log.info("stdio MCP server `%s` ready (pid %s, protocol %s)", self.command, proc.pid, self.protocol_version)
        self._ready.set()

    def _stderr_hint(self, current: _Process) -> str:
        tail = "\n".join(current.stderr_tail).strip()
        return f"; its stderr ends with:\n{tail}" if tail else ""

    async def _terminate(self) -> None:
        current, self._current = self._current, None
        self._ready.clear()
        if current is None:
            return
        proc = current.proc
        if proc.returncode is None:
            try:
                if proc.stdin:
                    proc.stdin.close()
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 3)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            except ProcessLookupError:
                pass
        for task in current.tasks:
            if task is not asyncio.current_task():
                task.cancel()

    async def _on_exit(self, current: _Process) -> None:
        """The child's stdout closed: fail what is in flight, then restart with backoff."""
        rc = await current.proc.wait()
        current.exited.set()
        if self._current is not current or self._closing or not current.ready:
            return
        self._current = None
        self._ready.clear()
        log.error("stdio MCP server `%s` (pid %s) exited with code %s", self.command, current.proc.pid, rc)
        self._fail_pending(f"upstream stdio server `{self.command}` exited (code {rc}) while handling this "
                           "request; the gateway is restarting it")
        now = time.monotonic()
        self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > self.restart_window:
            self._crashes.popleft()
        self._supervisor = asyncio.create_task(self._restart())

    async def _restart(self) -> None:
        if len(self._crashes) > self.max_restarts:
            self._fatal(f"stdio MCP server `{self.command}` crashed {len(self._crashes)} times within "
                        f"{self.restart_window:g}s; giving up")
            return
        last = ""
        for attempt in range(self.max_restarts):
            await asyncio.sleep(self.backoff * (2 ** attempt))
            if self._closing:
                return
            try:
                await self._spawn_and_initialize()
                self.restarts += 1
                log.info("stdio MCP server `%s` restarted (%d restarts so far)", self.command, self.restarts)
                return
            except StdioStartError as exc:
                last = str(exc)
                log.error("restart %d/%d failed: %s", attempt + 1, self.max_restarts, last)
        self._fatal(f"stdio MCP server `{self.command}` could not be restarted after {self.max_restarts} "
                    f"attempts: {last}")

    def _fatal(self, reason: str) -> None:
        self.failed = reason
        log.critical("%s", reason)
        self._ready.set()  # wake waiters: they will see `failed`
        if self.on_fatal is not None:
            self.on_fatal(reason)

    def _fail_pending(self, reason: str) -> None:
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_result(rpc.error(pending.original_id, rpc.INTERNAL_ERROR, reason))
        self._pending.clear()
        self._progress.clear()

    async def wait_ready(self) -> bool:
        """Wait (up to twice the start timeout) for a restarting child; whether it is ready."""
        if self.failed is None and not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), self.start_timeout * 2)
            except TimeoutError:
                return False
        return self.ready

    def unavailable_reason(self) -> str:
        """Why requests cannot be served (for JSON-RPC errors to authenticated clients)."""
        if self.failed:
            return f"upstream stdio server unavailable: {self.failed}"
        return f"upstream stdio server `{self.command}` is not running (restarting)"

    def _forget(self, gw_id: str) -> None:
        pending = self._pending.pop(gw_id, None)
        if pending is not None and pending.gw_token is not None:
            self._progress.pop(pending.gw_token, None)

    # -- I/O -------------------------------------------------------------------------------
    async def _write(self, message: rpc.Message) -> bool:
        current = self._current
        if current is None:
            return False
        return await self._write_raw(current, message)

    async def _write_raw(self, current: _Process, message: rpc.Message) -> bool:
        stdin = current.proc.stdin
        if stdin is None or stdin.is_closing():
            return False
        async with self._write_lock:
            try:
                stdin.write(rpc.dumps(message) + b"\n")
                await stdin.drain()
            except (BrokenPipeError, ConnectionResetError, RuntimeError):
                return False
        return True

    async def _pump_stderr(self, current: _Process) -> None:
        stderr = current.proc.stderr
        if stderr is None:
            raise GatewayError("the stdio server was spawned without a stderr pipe")
        while True:
            try:
                line = await stderr.readline()
            except ValueError:
                continue
            if not line:
                return
            text = line.decode(errors="replace").rstrip()
            current.stderr_tail.append(text)
            child_log.info("[%s] %s", current.proc.pid, text)

    async def _read_stdout(self, current: _Process) -> None:
        stdout = current.proc.stdout
        if stdout is None:
            raise GatewayError("the stdio server was spawned without a stdout pipe")
        try:
            while True:
                try:
                    line = await stdout.readline()
                except ValueError:
                    log.error("stdio MCP server sent a line over %d bytes; killing it", STDOUT_LINE_LIMIT)
                    current.proc.kill()
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except ValueError:
                    log.warning("stdio MCP server wrote non-JSON to stdout (ignored): %.200r", line)
                    continue
                for item in message if isinstance(message, list) else [message]:
                    if isinstance(item, dict):
                        await self._dispatch(current, item)
        finally:
            if not self._closing:
                self._background(self._on_exit(current))

    async def _dispatch(self, current: _Process, message: rpc.Message) -> None:
        if rpc.is_response(message):
            pending = self._pending.get(str(message.get("id")))
            if pending is not None and not pending.future.done():
                pending.future.set_result(dict(message, id=pending.original_id))
            return
        if rpc.is_request(message):
            # Server-to-client requests: the gateway declared no client capabilities (no roots,
            # sampling or elicitation), so only ping is answered.
            if message["method"] == "ping":
                reply = {"jsonrpc": "2.0", "id": message["id"], "result": {}}
            else:
                reply = rpc.error(message["id"], rpc.METHOD_NOT_FOUND,
                                  f"{message['method']} is not supported through the CBST gateway")
            await self._write_raw(current, reply)
            return
        if not rpc.is_notification(message):
            return
        params = rpc.member(message, "params")
        if message["method"] == "notifications/progress" and str(params.get("progressToken")) in self._progress:
            gw_id = self._progress[str(params["progressToken"])]
            pending = self._pending.get(gw_id)
            if pending is not None and pending.on_event is not None:
                event = dict(message, params=dict(params, progressToken=pending.progress_token))
                try:
                    await pending.on_event(event)
                except Exception:
                    log.debug("progress delivery failed", exc_info=True)
            return
        meta = rpc.member(params, "_meta")
        listen_id = meta.get(protocol.META_SUBSCRIPTION_ID)
        if listen_id is not None and str(listen_id) in self._pending:
            # 2026-07-28 subscriptions/listen: events tagged with the listen request's id
            pending = self._pending[str(listen_id)]
            if pending.on_event is not None:
                event = dict(message, params=dict(params, _meta=dict(meta, **{
                    protocol.META_SUBSCRIPTION_ID: pending.original_id})))
                try:
                    await pending.on_event(event)
                except Exception:
                    log.debug("subscription event delivery failed", exc_info=True)
            return
        if message["method"] == "notifications/cancelled":
            return  # the child cancelling its own request to us: nothing in flight to stop
        if self.on_notification is not None:
            self.on_notification(message)
        else:
            log.debug("notification from the stdio server with no one to deliver it to: %.200s", message)

