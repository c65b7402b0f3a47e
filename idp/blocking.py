"""Database work off the event loop, with a bounded wait.

Every call that may touch the database runs in a worker thread; the event loop only waits for
it, at most ``database_timeout`` seconds. A hung database (a paused server or a partition still
ACKs TCP, so no socket timeout fires) then costs a 503 with ``Retry-After`` instead of stalling
every endpoint, ``/healthz`` included. Work still queued when its wait ends is cancelled — a
client that was told 503 is not served behind its back later; work already running finishes or
fails on its own, bounded by the engine's timeouts once the database answers (``idp.db``).

When ``fn`` returns an awaitable (the token endpoint's wait for its audit record), it is awaited
back on the server's loop: the database part of it runs on ``audit.GroupCommitter``'s threads.
(Running it on a loop of the worker thread's own instead cost ~40% of the token endpoint's
throughput at c=64: bench/results/token_endpoint.md.)
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

from sqlalchemy import exc as sa_exc

from .oauth2.errors import ServerBusy

log = logging.getLogger("cbst.idp")
T = TypeVar("T")

#: Threads for database work. A request holds one only for its synchronous part (client read,
#: checks, signing; the audit wait is on the loop), and the GIL runs one at a time anyway: 2 and
#: 32 threads measured alike (token bench --quick, c=8/64: 0.92x/0.69x vs 0.87x/0.65x of the peer).
#: A few, so that one slow query does not stall the others; a hung database can tie them all up,
#: and then further requests wait in the queue until their bound — still a prompt 503.
THREADS = 4
_executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="idp-db")
_local = threading.local()


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [
        sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError,  # TimeoutError: pool exhausted
        sqlite3.OperationalError, sqlite3.InterfaceError,  # raw DB-API connections (idp.sql)
    ]
    try:
        import psycopg

        errors += [psycopg.OperationalError, psycopg.InterfaceError]
    except ImportError:  # pragma: no cover - PostgreSQL support not installed
        pass
    return tuple(errors)


#: Errors that mean "the database cannot answer now" (connection lost or refused, statement or
#: lock timeout, SQLite busy): a 503 to retry, not a bug worth a traceback.
UNAVAILABLE = _unavailable_errors()


class DatabaseUnavailable(ServerBusy):
    """The database did not answer in time or is unreachable: 503, retry after a moment."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("the database is unavailable; retry later",
                         headers={"Retry-After": str(max(1, math.ceil(retry_after)))})


def in_worker() -> bool:
    """True in a worker thread of this module (where blocking on the database is fine)."""
    return getattr(_local, "worker", False)


def executor() -> ThreadPoolExecutor:
    return _executor


def _run(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    _local.worker = True
    return fn(*args)


async def call(timeout: float, fn: Callable[..., T | Awaitable[T]], *args: Any) -> T:
    """``fn(*args)`` (awaited if it returns a coroutine) in a worker thread, waiting at most
    ``timeout`` seconds; :class:`DatabaseUnavailable` when that passes or the database fails."""
    future = asyncio.get_running_loop().run_in_executor(_executor, _run, fn, args)
    try:
        async with asyncio.timeout(timeout):  # on timeout: cancelled if not started yet
            result = await future
            if inspect.isawaitable(result):  # e.g. the token endpoint's wait for its audit commit
                result = await result
    except TimeoutError:
        _report(fn, f"the database did not answer within {timeout:g} s")
        raise DatabaseUnavailable(timeout) from None
    except UNAVAILABLE as exc:
        _report(fn, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300])
        raise DatabaseUnavailable(timeout) from None
    return cast(T, result)  # T, or the T its awaitable gave


#: One warning per interval, with the count of those it stands for: an outage under load must
#: not turn every request into a log line.
LOG_INTERVAL = 5.0
_last_logged = float("-inf")
_suppressed = 0


def _report(fn: Callable[..., Any], reason: str) -> None:
    global _last_logged, _suppressed
    now = time.monotonic()
    if now - _last_logged < LOG_INTERVAL:
        _suppressed += 1
        return
    fields = {"operation": getattr(fn, "__qualname__", repr(fn)), "reason": reason, "suppressed": _suppressed}
    _last_logged, _suppressed = now, 0
    log.warning("database unavailable: answering 503", extra={"fields": fields})
