"""Bounds on failed client authentications, per claimed ``client_id`` and per remote address.

Client secrets are not guessable (256 bits), but nothing should let anyone try ~400 per second,
and a forged-assertion or secret-guessing run should leave a trace. Each key (a client id, an
address) has a token bucket of ``limit`` failures refilled over ``window`` seconds: a failed
authentication takes one; a request whose client or address has none left is refused with 429
before its secret or assertion is looked at. Successes take nothing, so other clients and
other addresses are unaffected. Memory is bounded: at most ``MAX_KEYS`` buckets per kind, the
least recently failing evicted first (a key under attack keeps failing, so it stays).

The audit records of failures are bounded the same way: at most ``audit_limit`` per window for
the whole process; the next record written says how many were left out.

In-process state: with several workers each enforces its own bounds (the design puts shared
counters in Redis later). Thread-safe, since handlers may run off the event loop.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from .errors import OAuthError

MAX_KEYS = 10_000


class TooManyFailures(OAuthError):
    # RFC 6749 defines no throttling error for the token endpoint. "temporarily_unavailable"
    # (RFC 6749 §4.1.2.1, registered in the OAuth Extensions Error Registry) says "try again
    # later", which with 429 and Retry-After is exactly this; "invalid_client" would tell a
    # legitimate client its credentials are wrong, and "slow_down" (RFC 8628) is about polling.
    error = "temporarily_unavailable"
    status = 429


class _Buckets:
    """Token buckets by key; a missing key is a full bucket."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.rate = limit / window  # tokens per second
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # key -> [tokens, when]

    def __contains__(self, key: object) -> bool:
        return key in self._buckets

    def _level(self, key: str, now: float) -> list[float] | None:
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket[0] = min(self.limit, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
            if bucket[0] >= self.limit:  # full again: forget it
                del self._buckets[key]
                return None
        return bucket

    def retry_after(self, key: str, now: float) -> int:
        """0 if ``key`` may try now, else the seconds until it may."""
        bucket = self._level(key, now)
        if bucket is None or bucket[0] >= 1:
            return 0
        return max(1, math.ceil((1 - bucket[0]) / self.rate))

    def take(self, key: str, now: float) -> bool:
        """Take one token; True if that emptied the bucket (the key is throttled from now on)."""
        bucket = self._level(key, now)
        if bucket is None:
            bucket = self._buckets[key] = [float(self.limit), now]
            if len(self._buckets) > MAX_KEYS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        bucket[0] -= 1
        return bucket[0] < 1


class AuthThrottle:
    def __init__(self, *, per_client: int, per_address: int, window: int, audit_limit: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clients = _Buckets(per_client, window) if per_client else None
        self._addresses = _Buckets(per_address, window) if per_address else None
        self._audit = _Buckets(audit_limit, window) if audit_limit else None  # None: no failure records
        self._suppressed = 0
        self._lock = threading.Lock()
        self.clock = clock

    def check(self, *, client_id: str | None = None, address: str | None = None) -> None:
        """Raise :class:`TooManyFailures` (with Retry-After) if the client or address has no failures left."""
        clients, addresses = self._clients, self._addresses
        # Fast path, without the lock (a dict lookup is atomic): no recent failures, nothing to do.
        if (clients is None or client_id not in clients) and (addresses is None or address not in addresses):
            return
        with self._lock:
            now = self.clock()
            wait = max(clients.retry_after(client_id, now) if clients and client_id is not None else 0,
                       addresses.retry_after(address, now) if addresses and address is not None else 0)
        if wait:
            raise TooManyFailures("too many failed client authentications; retry later",
                                  headers={"Retry-After": str(wait)})

    def failed(self, *, client_id: str | None, address: str | None) -> tuple[bool, int | None]:
        """Count a failed authentication. Returns (whether it made the client or address throttled,
        None if its audit record is to be left out, else how many were left out before it)."""
        with self._lock:
            now = self.clock()
            throttled = False
            if self._clients and client_id is not None:
                throttled |= self._clients.take(client_id, now)
            if self._addresses and address is not None:
                throttled |= self._addresses.take(address, now)
            if self._audit is None:
                return throttled, None
            if self._audit.retry_after("audit", now):
                self._suppressed += 1
                return throttled, None
            self._audit.take("audit", now)
            suppressed, self._suppressed = self._suppressed, 0
            return throttled, suppressed
