"""One client-side rate limit for Neon's consumption endpoints, shared by every Lambda.

Neon throttles its consumption history API per account; the consumption sync of many projects would
run into that limit and draw 429s. ``ConsumptionRateLimiter.acquire()`` is called before every request
the sync sends to Neon (retries included) and blocks until the shared window has room for one more.

Windows are fixed: ``[k·60, (k+1)·60)`` seconds since the epoch for the default 60-second window, and
at most ``limit_per_minute`` requests are let through in each, counted in the control plane
(``RateLimitStore``) so every container draws on the same budget. Without a store (local stack, unit
tests) the count lives in this process.

Fixed windows match a server that counts the same way (as the Neon double does). A server that counts
over a sliding minute could see up to twice the limit across a window boundary; against one, set
``NEON_CONSUMPTION_REQUESTS_PER_MINUTE`` to half its limit. A 429 that still happens is retried by
NeonClient after ``Retry-After``.

``clock`` and ``sleep`` are injected so a simulated clock can drive a 30,000-project sync in seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from agentdb.errors import UpstreamUnavailable
from agentdb.store.rate_limits import RateLimitStore, window_bounds

logger = logging.getLogger("agentdb.billing.ratelimit")

DEFAULT_KEY = "neon:consumption"
# Sleep a hair past the window's end, so float rounding cannot land the next attempt in the old window.
_EDGE = 0.001


class RateLimitWaitExceeded(UpstreamUnavailable):
    """No slot opened within ``max_wait_seconds``: give up and let the caller try again later."""

    code = "rate_limit_wait_exceeded"


class _LocalCounters:
    """The in-process equivalent of RateLimitStore.take (same fixed windows)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, float], int] = {}

    def take(self, key: str, limit: int, window_seconds: float, now: float) -> tuple[bool, float]:
        start, end = window_bounds(now, window_seconds)
        with self._lock:
            count = self._counts.get((key, start), 0)
            if count >= limit:
                return False, max(end - now, 0.0)
            if count == 0:  # a new window: forget the old ones
                self._counts = {k: v for k, v in self._counts.items() if k[1] >= start}
            self._counts[(key, start)] = count + 1
            return True, 0.0


class ConsumptionRateLimiter:
    """Blocks until one more request fits in the shared fixed window (``limit_per_minute`` per window)."""

    def __init__(
        self,
        store: RateLimitStore | None,
        limit_per_minute: int = 50,
        *,
        key: str = DEFAULT_KEY,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        max_wait_seconds: float | None = None,
    ) -> None:
        if limit_per_minute < 1:
            raise ValueError("limit_per_minute must be at least 1")
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.store = store
        self.limit = int(limit_per_minute)
        self.key = key
        self.window_seconds = float(window_seconds)
        self.max_wait_seconds = max_wait_seconds
        self._clock = clock
        self._sleep = sleep
        self._local = _LocalCounters() if store is None else None
        # Statistics, for logs and benchmarks.
        self.acquired = 0
        self.waits = 0
        self.waited_seconds = 0.0

    def __repr__(self) -> str:
        where = "shared" if self.store is not None else "in-process"
        return f"ConsumptionRateLimiter({self.limit}/{self.window_seconds:g}s, {where}, key={self.key!r})"

    def _take(self, now: float) -> tuple[bool, float]:
        if self._local is not None:
            return self._local.take(self.key, self.limit, self.window_seconds, now)
        assert self.store is not None
        return self.store.take(self.key, self.limit, self.window_seconds, now)

    def try_acquire(self) -> tuple[bool, float]:
        """Take a slot if one is free now: ``(True, 0.0)``, else ``(False, seconds until the next window)``."""
        allowed, retry_after = self._take(self._clock())
        if allowed:
            self.acquired += 1
        return allowed, retry_after

    def acquire(self) -> float:
        """Block (sleep) until the shared window allows one more request; returns the seconds waited."""
        waited = 0.0
        while True:
            allowed, retry_after = self.try_acquire()
            if allowed:
                if waited:
                    self.waits += 1
                    self.waited_seconds += waited
                return waited
            delay = retry_after + _EDGE
            if self.max_wait_seconds is not None and waited + delay > self.max_wait_seconds:
                raise RateLimitWaitExceeded(
                    f"no Neon consumption request slot within {self.max_wait_seconds:g}s "
                    f"({self.limit} per {self.window_seconds:g}s, shared)"
                )
            logger.debug("consumption rate limit reached; waiting %.3fs for the next window", delay)
            self._sleep(delay)
            waited += delay

    # Lets a limiter be passed where a plain callable is expected (NeonClient's before_send hook).
    __call__ = acquire
