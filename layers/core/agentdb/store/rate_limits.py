"""Fixed-window rate-limit counters in the control plane, shared by every Lambda container.

A window is ``[k·w, (k+1)·w)`` seconds since the Unix epoch for a window length ``w``, so every caller
agrees on the windows without coordinating. ``take`` counts one request in ONE atomic statement:

    INSERT ... ON CONFLICT (key, window_start) DO UPDATE SET count = count + 1 WHERE count < limit
    RETURNING count

A row comes back only when the request fits (the first of a window inserts 1; a later one increments
a count still below the limit), so concurrent callers can never together exceed the limit, and a full
window's count stays at the limit. ``now`` is passed in (not read from the server) so a simulated clock
drives the windows in tests and benchmarks.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from agentdb.store.db import Database

_TAKE = (
    "INSERT INTO rate_limit_counters AS c (key, window_start, count) VALUES (:key, :window_start, 1)"
    " ON CONFLICT (key, window_start) DO UPDATE SET count = c.count + 1 WHERE c.count < :limit"
    " RETURNING c.count"
)
_CLEANUP = "DELETE FROM rate_limit_counters WHERE window_start < :cutoff"
_COUNT = "SELECT count FROM rate_limit_counters WHERE key = :key AND window_start = :window_start"


def window_bounds(now: float, window_seconds: float) -> tuple[float, float]:
    """The fixed window holding ``now`` (epoch seconds): (start, end)."""
    start = math.floor(now / window_seconds) * window_seconds
    return start, start + window_seconds


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class RateLimitStore:
    """Shared fixed-window counters (table ``rate_limit_counters``, migration 0004)."""

    def __init__(self, db: Database, *, keep_windows_seconds: float = 3600.0) -> None:
        self.db = db
        self.keep_windows_seconds = keep_windows_seconds

    def take(self, key: str, limit: int, window_seconds: float, now: float) -> tuple[bool, float]:
        """Count one request for ``key`` in the window holding ``now`` (epoch seconds).

        Returns ``(allowed, retry_after_seconds)``: ``(True, 0.0)`` when the request fits under
        ``limit``, else ``(False, seconds until the window ends)``.
        """
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        start, end = window_bounds(now, window_seconds)
        if limit <= 0:
            return False, max(end - now, 0.0)
        rows = self.db.run(_TAKE, key=key, window_start=_ts(start), limit=int(limit))
        if not rows:
            return False, max(end - now, 0.0)
        if int(rows[0][0]) == 1:
            # The first request of a new window: a good moment to drop windows nobody reads any more.
            self.cleanup(now)
        return True, 0.0

    def count(self, key: str, window_seconds: float, now: float) -> int:
        """Requests counted so far in the window holding ``now`` (0 when none)."""
        start, _ = window_bounds(now, window_seconds)
        rows = self.db.run(_COUNT, key=key, window_start=_ts(start))
        return int(rows[0][0]) if rows else 0

    def cleanup(self, now: float, older_than_seconds: float | None = None) -> int:
        """Delete windows that started more than ``older_than_seconds`` (default: an hour) before ``now``."""
        keep = self.keep_windows_seconds if older_than_seconds is None else older_than_seconds
        rows = self.db.run(_CLEANUP + " RETURNING 1", cutoff=_ts(now - keep))
        return len(rows)
