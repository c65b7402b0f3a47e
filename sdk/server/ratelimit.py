"""Token-bucket rate limiting of tool calls per client (design.md § Recommended defaults:
3 tool executions per second per client).

Each client has one bucket for tools without an override and one bucket per overridden tool.
Buckets refill continuously at ``rate`` tokens/s up to ``burst``. The number of tracked clients
is bounded (least recently seen evicted — an evicted client starts with a full bucket, which
can only make the limiter more lenient, never wrongly refuse).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

__all__ = ["ToolRateLimiter"]

_DEFAULT = "\x00default"


class ToolRateLimiter:
    def __init__(
        self,
        rate: float | None = 3.0,
        *,
        burst: float | None = None,
        overrides: Mapping[str, float | None] | None = None,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.overrides = dict(overrides or {})
        self.max_clients = max_clients
        self._clock = clock
        # (client, bucket) -> [tokens, last refill time]
        self._buckets: OrderedDict[tuple[str, str], list[float]] = OrderedDict()

    def _params(self, tool: str) -> tuple[str, float | None, float]:
        if tool in self.overrides:
            rate = self.overrides[tool]
            return tool, rate, max(1.0, rate or 0.0)
        rate = self.rate
        burst = self.burst if self.burst is not None else max(1.0, rate or 0.0)
        return _DEFAULT, rate, burst

    def acquire(self, client: str, tool: str) -> float:
        """Take one token for ``client`` calling ``tool``: 0.0 if allowed, else seconds to wait."""
        name, rate, burst = self._params(tool)
        if rate is None:
            return 0.0
        now = self._clock()
        key = (client, name)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = [burst, now]
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket[0] = min(burst, bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
        if bucket[0] >= 1.0 - 1e-9:  # float rounding of the refill
            bucket[0] = max(0.0, bucket[0] - 1.0)
            return 0.0
        return (1.0 - bucket[0]) / rate

    @staticmethod
    def retry_after_header(wait: float) -> str:
        """RFC 9110 §10.2.3 ``Retry-After`` (whole seconds, at least 1)."""
        return str(max(1, math.ceil(wait)))
