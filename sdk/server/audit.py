"""Structured audit events: one per MCP call (JSON-RPC message) the middleware decides on.

An event records when, which session, which client and subject, which method and target, the
decision (allowed or denied, and why), the HTTP status and the duration. Tool and prompt
arguments are included only when ``ProtectionConfig.log_tool_arguments`` is on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["AuditEvent", "AuditSink", "LoggerSink"]


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
