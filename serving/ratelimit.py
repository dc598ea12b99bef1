"""Per-API-key request limits, shared by all worker processes.

A sliding window over the last minute, estimated from two fixed one-minute counters
(the previous minute's count weighted by how much of it still overlaps the window), so
there is no burst of twice the limit at a minute boundary.

Counting a request must not cost a database write on the request path, so each worker
decides from the shared counts it last saw plus its own requests since, and a background
thread adds its requests to the shared counters (a table in the online store's SQLite
file, or Redis keys) and reads the total back every `sync_interval_s` (0.25 s). Across
workers the limit therefore holds to within about a quarter second of traffic.
"""

from __future__ import annotations

import abc
import logging
import math
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from serving.config import is_remote_store, sqlite_store_path

logger = logging.getLogger("serving.ratelimit")

WINDOW_S = 60.0
Counts = dict[tuple[str, int], int]


def _retry_after(current: float, previous: float, elapsed: float, limit: int) -> int:
    """Seconds until one more request fits under the limit."""
    if current + 1 > limit:
        return max(1, math.ceil(WINDOW_S - elapsed))
    # The previous minute's weight shrinks linearly; wait until it leaves room for one.
    room = (limit - current - 1) / max(previous, 1.0)
    return max(1, math.ceil(WINDOW_S - elapsed - room * WINDOW_S))


class CounterBackend(abc.ABC):
    """Shared per-(key, minute) counters."""

    @abc.abstractmethod
    def add(self, increments: Mapping[tuple[str, int], int]) -> Counts:
        """Add the increments and return the new totals of every (key, minute) touched,
        plus the previous minute of each key."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends have nothing to do
        """Release connections."""


class SqliteCounters(CounterBackend):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            self.path, timeout=5.0, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        # The counters share the online store's file: an fsync on every sync would hold its
        # write lock while payments wait to be recorded. A power cut loses at most a quarter
        # second of counts.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS rate_limits(key TEXT NOT NULL, window INTEGER NOT NULL, "
            "count INTEGER NOT NULL, PRIMARY KEY(key, window)) WITHOUT ROWID"
        )

    def add(self, increments: Mapping[tuple[str, int], int]) -> Counts:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO rate_limits VALUES (?, ?, ?) ON CONFLICT(key, window) "
                "DO UPDATE SET count = count + excluded.count",
                [(k, w, n) for (k, w), n in increments.items() if n],
            )
            totals: Counts = {}
            for key, window in {(k, w) for k, w in increments}:
                for w, count in conn.execute(
                    "SELECT window, count FROM rate_limits WHERE key = ? AND window >= ? "
                    "AND window <= ?",
                    (key, window - 1, window),
                ):
                    totals[(key, int(w))] = int(count)
            oldest = min(w for _, w in increments) - 2
            conn.execute("DELETE FROM rate_limits WHERE window < ?", (oldest,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return totals

    def close(self) -> None:
        self._conn.close()


class RedisCounters(CounterBackend):
    def __init__(self, url: str, prefix: str = "fraud:rl:") -> None:
        import redis

        self.prefix = prefix
        self.client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)

    def add(self, increments: Mapping[tuple[str, int], int]) -> Counts:
        pipe = self.client.pipeline(transaction=False)
        order: list[tuple[str, int]] = []
        for (key, window), n in increments.items():
            name = f"{self.prefix}{key}:{window}"
            pipe.incrby(name, n)
            pipe.expire(name, int(3 * WINDOW_S))
            pipe.get(f"{self.prefix}{key}:{window - 1}")
            order.append((key, window))
        replies = pipe.execute()
        totals: Counts = {}
        for i, (key, window) in enumerate(order):
            totals[(key, window)] = int(replies[3 * i])
            totals[(key, window - 1)] = int(replies[3 * i + 2] or 0)
        return totals

    def close(self) -> None:
        self.client.close()


class RateLimiter:
    """Sliding-window limit per key; decisions are in memory, counts are shared."""

    def __init__(
        self,
        limit_per_min: int,
        backend: CounterBackend | None = None,
        sync_interval_s: float = 0.25,
    ) -> None:
        self.limit = limit_per_min
        self.backend = backend
        self._lock = threading.Lock()
        self._shared: Counts = {}
        self._pending: defaultdict[tuple[str, int], int] = defaultdict(int)
        # Counts being pushed: still counted by hit() until the totals that include them
        # arrive, so a slow push never opens a window where requests go uncounted.
        self._inflight: Counts = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if backend is not None:
            self._thread = threading.Thread(
                target=self._sync_loop, args=(sync_interval_s,), name="rate-limit", daemon=True
            )
            self._thread.start()

    def hit(self, key: str, now: float | None = None) -> tuple[bool, int]:
        """Count one request of `key`: (allowed, seconds to wait when not allowed)."""
        now = time.time() if now is None else now
        window = int(now // WINDOW_S)
        elapsed = now - window * WINDOW_S
        weight = (WINDOW_S - elapsed) / WINDOW_S
        current_key, previous_key = (key, window), (key, window - 1)
        with self._lock:
            current = self._count(current_key)
            previous = self._count(previous_key)
            if previous * weight + current + 1 > self.limit:
                return False, _retry_after(current, previous, elapsed, self.limit)
            self._pending[current_key] += 1
        return True, 0

    def _count(self, key: tuple[str, int]) -> int:
        return self._shared.get(key, 0) + self._inflight.get(key, 0) + self._pending.get(key, 0)

    def sync(self) -> None:
        """Push this worker's counts to the shared counters and read the totals back."""
        if self.backend is None:
            return
        with self._lock:
            pending, self._pending = self._pending, defaultdict(int)
            self._inflight = dict(pending)
            # Keys still active in the current minute are refreshed even without new hits.
            latest = max((w for _, w in self._shared), default=None)
            for key, window in list(self._shared):
                if window == latest:
                    pending.setdefault((key, window), 0)
        if not pending:
            with self._lock:
                self._inflight = {}
            return
        try:
            totals = self.backend.add(pending)
        except Exception as exc:
            logger.warning("rate-limit counters unavailable, counting locally: %s", exc)
            with self._lock:
                for k, n in pending.items():
                    self._pending[k] += n
                self._inflight = {}
            return
        horizon = max(w for _, w in pending) - 1
        with self._lock:
            # Our own pushed counts are now part of the totals.
            self._shared = {k: v for k, v in {**self._shared, **totals}.items() if k[1] >= horizon}
            self._inflight = {}

    def _sync_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.sync()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.sync()
        if self.backend is not None:
            self.backend.close()


def open_limiter(store_url: str, limit_per_min: int) -> RateLimiter:
    """A limiter whose counters live beside the online store named by `store_url`."""
    if is_remote_store(store_url):
        return RateLimiter(limit_per_min, RedisCounters(store_url))
    return RateLimiter(limit_per_min, SqliteCounters(sqlite_store_path(store_url)))
