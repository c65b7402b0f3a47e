"""Structured audit events: one per MCP call (JSON-RPC message) the middleware decides on.

An event records when, which session, which client and subject, which method and target, the
decision (allowed or denied, and why), the HTTP status and the duration. Tool and prompt
arguments are included only when ``ProtectionConfig.log_tool_arguments`` is on.
:class:`AuditRecorder` builds the events of a request and hands them to the sink; a failing
sink is logged and never breaks a request.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..access_token import AccessToken
    from .rpc import Message

__all__ = ["AuditEvent", "AuditRecorder", "AuditSink", "LoggerSink"]

log = logging.getLogger("cbst.server")


@dataclass(slots=True)
class AuditEvent:
    time: float  #: seconds since the epoch, when the request arrived
    allowed: bool
    reason: str  #: "allowed", "insufficient_scope", "rate_limited", "invalid_token", ...
    method: str | None = None
    target: str | None = None  #: tool/prompt name or resource URI (as sent)
    request_id: Any = None
    session_id: str | None = None
    client_id: str | None = None
    subject: str | None = None
    jti: str | None = None
    status: int | None = None  #: HTTP status of the answer
    duration_ms: float | None = None
    generation: str | None = None  #: "2026-07-28" style modern version, or "handshake"
    remote: str | None = None  #: peer address
    detail: str | None = None  #: human-readable detail of a denial
    arguments: Any = None  #: only with log_tool_arguments

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


AuditSink = Callable[[AuditEvent], None]


class LoggerSink:
    """The default sink: one JSON object per event on a :mod:`logging` logger at INFO."""

    def __init__(self, logger: logging.Logger | str = "cbst.audit") -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger

    def __call__(self, event: AuditEvent) -> None:
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info(json.dumps({"event": "mcp.call", **event.to_dict()}, default=str,
                                        separators=(",", ":")))


def remote_address(scope: Mapping[str, Any]) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


class AuditRecorder:
    """Builds the audit events of one request and emits them to ``sink``."""

    __slots__ = ("log_arguments", "sink")

    def __init__(self, sink: AuditSink, *, log_arguments: bool = False) -> None:
        self.sink = sink
        self.log_arguments = log_arguments

    def emit(self, event: AuditEvent) -> None:
        try:
            self.sink(event)
        except Exception:
            log.exception("cbst: audit sink failed")  # a broken sink must not break requests

    def refused_request(self, scope: Mapping[str, Any], started: float, *, reason: str, status: int,
                        detail: str | None) -> None:
        """A refused request that carried no JSON-RPC message the middleware read."""
        self.emit(AuditEvent(time=started, allowed=False, reason=reason,
                             method=f"HTTP {scope['method']} {scope['path'][:200]}", status=status,
                             detail=detail, remote=remote_address(scope)))

    def messages(self, scope: Mapping[str, Any], started: float, t0: float, messages: Sequence[Message],
                 token: AccessToken | None, sid: str | None, generation: str | None, status: int | None,
                 allowed: bool, reason: str, detail: str | None) -> None:
        """One event per JSON-RPC request or notification (the client's responses are not calls);
        one ``HTTP <method>`` event when the request had no body to read (GET, DELETE, refused)."""
        duration = round((time.perf_counter() - t0) * 1000, 3)
        remote = remote_address(scope)
        gen = generation or ("handshake" if messages else None)
        cid, sub, jti = (token.client_id, token.subject, token.jti) if token is not None else (None, None, None)
        if not messages:
            self.emit(AuditEvent(started, allowed, reason, f"HTTP {scope['method']}", None, None, sid, cid, sub,
                                 jti, status, duration, gen, remote, detail))
            return
        log_args = self.log_arguments
        for msg in messages:
            if msg.kind == "response":
                continue
            event = AuditEvent(started, allowed, reason, msg.method, msg.target, msg.id, sid, cid, sub, jti,
                               status, duration, gen, remote, detail)
            if log_args and msg.params is not None and "arguments" in msg.params:
                event.arguments = msg.params["arguments"]
            self.emit(event)
