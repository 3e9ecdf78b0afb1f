"""A bounded, thread-safe LRU cache of unwrapped data keys with a TTL."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

# (key id, wrapped data key, canonical context)
CacheKey = tuple[str, bytes, bytes]


class DataKeyCache:
    """LRU by entry count, each entry expiring ``ttl_seconds`` after it was stored.

    ``max_size == 0`` or ``ttl_seconds <= 0`` disables caching. Values are raw data keys: the cache
    never exposes them in its repr.
    """

    def __init__(self, max_size: int, ttl_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if max_size < 0:
            raise ValueError("max_size must be >= 0")
        self.max_size = max_size
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[CacheKey, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_size > 0 and self.ttl_seconds > 0

    def get(self, key: CacheKey) -> bytes | None:
        """The cached data key, or None when absent or expired (an expired entry is dropped)."""
        if not self.enabled:
            return None
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] <= now:
                if entry is not None:
                    del self._entries[key]
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: CacheKey, data_key: bytes) -> None:
        if not self.enabled:
            return
        expires = self._clock() + self.ttl_seconds
        with self._lock:
            self._entries[key] = (expires, data_key)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __repr__(self) -> str:
        return f"DataKeyCache(max_size={self.max_size}, ttl_seconds={self.ttl_seconds}, entries={len(self)})"
