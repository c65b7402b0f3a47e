"""Drives :meth:`Core.request_flow` for the ``httpx`` and ``httpx2`` ``Auth`` adapters.

The two libraries have the same API, so one mixin serves both; each adapter only names its
module. Locks: a ``threading.Lock`` for synchronous clients, an ``anyio.Lock`` for asynchronous
ones, each held only while a token is checked or fetched — never while the caller's request is
in flight.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Generator
from types import ModuleType
from typing import Any

import anyio

from ._core import LOCK, MAX_RESPONSE_BYTES, UNLOCK, Authorize, Core, HttpRequest, HttpResponse, Send


class FlowMixin:
    """Mixed into ``httpx.Auth`` / ``httpx2.Auth`` subclasses that set ``_http`` to their module."""

    _http: ModuleType
    requires_request_body = True  # the request may be sent twice (step-up, 401 retry)
    requires_response_body = False  # MCP responses may be SSE streams: never buffer them

    def __init__(self, core: Core) -> None:
        self._core = core
        self._thread_lock = threading.Lock()
        self._async_lock = anyio.Lock()

    @property
    def core(self) -> Core:
        return self._core

    def _to_http(self, req: HttpRequest) -> Any:
        return self._http.Request(req.method, req.url, headers=dict(req.headers), content=req.body or None,
                                  extensions={"timeout": self._http.Timeout(req.timeout).as_dict()})

    @staticmethod
    def _to_neutral(response: Any, body: bytes) -> HttpResponse:
        headers = {k.lower(): v for k, v in response.headers.items()}
        return HttpResponse(response.status_code, headers, body[:MAX_RESPONSE_BYTES])

    @staticmethod
    def _outcome(response: Any) -> tuple[int, list[str]]:
        return response.status_code, list(response.headers.get_list("www-authenticate"))

    def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        flow = self._core.request_flow()
        held = False
        try:
            step = next(flow)
            while True:
                reply: Any = None
                if step == LOCK:
                    self._thread_lock.acquire()
                    held = True
                elif step == UNLOCK:
                    self._thread_lock.release()
                    held = False
                elif isinstance(step, Send):
                    response = yield self._to_http(step.request)
                    reply = self._to_neutral(response, response.read())
                else:
                    assert isinstance(step, Authorize)
                    request.headers["Authorization"] = f"Bearer {step.token.value}"
                    reply = self._outcome((yield request))
                step = flow.send(reply)
        except StopIteration:
            return
        finally:
            if held:
                self._thread_lock.release()

    async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
        flow = self._core.request_flow()
        held = False
        try:
            step = next(flow)
            while True:
                reply: Any = None
                if step == LOCK:
                    await self._async_lock.acquire()
                    held = True
                elif step == UNLOCK:
                    self._async_lock.release()
                    held = False
                elif isinstance(step, Send):
                    response = yield self._to_http(step.request)
                    reply = self._to_neutral(response, await response.aread())
                else:
                    assert isinstance(step, Authorize)
                    request.headers["Authorization"] = f"Bearer {step.token.value}"
                    reply = self._outcome((yield request))
                step = flow.send(reply)
        except StopIteration:
            return
        finally:
            if held:
                self._async_lock.release()
