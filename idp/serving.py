"""What ``idp serve`` adds around uvicorn: the listening socket bound before anything is
announced, and workers that do not outlive their supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time

log = logging.getLogger("cbst.idp")


class ListenError(OSError):
    """The address cannot be listened on (in use, not ours, bad host)."""


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use fails before anything is
    announced (uvicorn would start the application first, then fail to bind)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or str(exc)).lower()
        raise ListenError(exc.errno, f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)  # passed to the worker processes
    return sock


_PR_SET_PDEATHSIG = 1


def exit_with_supervisor() -> None:
    """In a worker of ``idp serve --workers N``: shut down (SIGTERM, graceful) when the supervisor
    dies, even by SIGKILL — otherwise the workers go on serving, unsupervised, holding the port.

    Linux: the kernel signals us (``PR_SET_PDEATHSIG``); elsewhere a thread polls the parent pid.
    """
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:  # a single process: no supervisor to follow
        return
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0:
                if os.getppid() != parent.pid:  # it died before prctl took effect
                    os.kill(os.getpid(), signal.SIGTERM)
                return
    threading.Thread(target=_watch_parent, args=(parent.pid,), name="idp-supervisor-watch", daemon=True).start()


def _watch_parent(pid: int) -> None:
    while os.getppid() == pid:
        time.sleep(1.0)
    log.warning("supervisor process gone: shutting down", extra={"fields": {"supervisor_pid": pid}})
    os.kill(os.getpid(), signal.SIGTERM)


# --- slow and idle clients ------------------------------------------------------------------

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpProtocol
except ImportError:  # pragma: no cover - uvicorn without httptools uses h11
    from uvicorn.protocols.http.h11_impl import H11Protocol as _HttpProtocol  # type: ignore[assignment]


def _plain_response(status: bytes, error: str, description: str) -> bytes:
    body = json.dumps({"error": error, "error_description": description}, separators=(",", ":")).encode()
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncache-control: no-store\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class GuardedHttpProtocol(_HttpProtocol):
    """uvicorn's HTTP/1.1 protocol with two bounds it lacks (uvicorn times out only idle
    keep-alive connections, never a request that is being sent):

    * a request (headers and body) must arrive within ``read_timeout`` seconds of the connection
      opening or of the previous response, else 408 and the connection is closed — half-sent
      requests cannot pile up;
    * at most ``max_per_client`` connections per client address and process (0: no limit);
      beyond it a new connection gets 503 and is closed, so one address cannot take every file
      descriptor. Behind a reverse proxy every client has the proxy's address: raise it there.

    Limits are class attributes set by :func:`configure` in each worker (from its settings).
    """

    read_timeout: float = 10.0
    max_per_client: int = 64
    _per_client: dict[str, int] = {}  # noqa: RUF012 - one count per process, shared on purpose

    _deadline: asyncio.TimerHandle | None = None
    _counted: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        host = self.client[0] if self.client else None
        if host is not None and self.max_per_client:
            if self._per_client.get(host, 0) >= self.max_per_client:
                transport.write(_plain_response(b"503 Service Unavailable", "temporarily_unavailable",
                                                "too many connections from this address"))
                transport.close()
                return
            self._per_client[host] = self._per_client.get(host, 0) + 1
            self._counted = host
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted is not None:
            left = self._per_client.get(self._counted, 1) - 1
            if left > 0:
                self._per_client[self._counted] = left
            else:
                self._per_client.pop(self._counted, None)
            self._counted = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        cycle = self.cycle
        if cycle is not None and not cycle.more_body and not cycle.response_complete:
            self._disarm()  # the request is in: the application has it

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request, if any, gets the same time

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(_plain_response(b"408 Request Timeout", "invalid_request",
                                                 f"request not received within {self.read_timeout:g} s"))
        self.transport.close()


def configure(read_timeout: float, max_per_client: int) -> None:
    GuardedHttpProtocol.read_timeout = read_timeout
    GuardedHttpProtocol.max_per_client = max_per_client
