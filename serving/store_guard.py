"""Keep scoring while the online store is down, and catch its state up when it is back.

The documented fallback: while the store (Redis, or the SQLite file) cannot be reached, a
payment is scored with an empty history (no velocity, no "seen before" knowledge) and its
response says `degraded: true`. After the first failure the store is not tried again on
the request path for `retry_after_s`: a background thread pings it instead, so requests
never wait on a dead connection more than once. The state updates the degraded payments
would have made are queued in memory, in arrival order, and written when the store answers
again; only then does the store take requests again. So velocity counts include the
payments scored during the outage as soon as it ends.

Queued updates past `max_pending` are dropped oldest-first and counted: that only happens
after an outage of hours at full traffic, and the prediction log still has every payment.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from serving.online_store import (
    Commit,
    OnlineStore,
    Prepared,
    PreparedBatch,
    StoredResult,
    StoreTxn,
    StoreUnavailable,
)

logger = logging.getLogger("serving.store_guard")


class GuardedStore:
    """An online store with a circuit breaker and a catch-up queue (see module docstring)."""

    def __init__(
        self,
        store: OnlineStore,
        retry_after_s: float = 1.0,
        max_pending: int = 200_000,
        on_change: Callable[[bool, str | None], None] | None = None,
    ) -> None:
        self.store = store
        self.retry_after_s = retry_after_s
        self.max_pending = max_pending
        self.on_change = on_change
        self.pending: collections.deque[Commit] = collections.deque()
        self.dropped = 0
        self.caught_up = 0
        self._down_since: float | None = None
        self._error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return self._down_since is None

    @property
    def error(self) -> str | None:
        return self._error

    def _check(self) -> None:
        if self._down_since is not None:
            raise StoreUnavailable(self._error or "online store unavailable")

    def _trip(self, exc: StoreUnavailable) -> None:
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
            self._error = str(exc)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._recover, name="online-store-recovery", daemon=True
                )
                self._thread.start()
        logger.error("online store unavailable, scoring degraded: %s", exc)
        if self.on_change is not None:
            self.on_change(False, str(exc))

    def _call(self, fn: Callable[[], object]) -> object:
        self._check()
        try:
            return fn()
        except StoreUnavailable as exc:
            self._trip(exc)
            raise

    def prepare(self, txn: StoreTxn) -> Prepared:
        return self._call(lambda: self.store.prepare(txn))  # type: ignore[return-value]

    def commit(
        self,
        txn: StoreTxn,
        features: np.ndarray,
        prediction_id: str,
        model_version: str,
        response: str | None,
    ) -> StoredResult | None:
        return self._call(  # type: ignore[return-value]
            lambda: self.store.commit(txn, features, prediction_id, model_version, response)
        )

    def prepare_many(self, txns: Sequence[StoreTxn]) -> PreparedBatch:
        return self._call(lambda: self.store.prepare_many(txns))  # type: ignore[return-value]

    def commit_many(self, commits: Sequence[Commit]) -> dict[str, StoredResult]:
        return self._call(lambda: self.store.commit_many(commits))  # type: ignore[return-value]

    def lookup(self, transaction_id: str) -> StoredResult | None:
        return self._call(lambda: self.store.lookup(transaction_id))  # type: ignore[return-value]

    def find_prediction(self, prediction_id: str) -> StoredResult | None:
        return self._call(lambda: self.store.find_prediction(prediction_id))  # type: ignore[return-value]

    def save_responses(self, responses: Sequence[tuple[str, str]]) -> None:
        if responses:
            self._call(lambda: self.store.save_responses(responses))

    def record_label(self, transaction_id: str, is_fraud: bool, label_ts_ms: int) -> None:
        self._call(lambda: self.store.record_label(transaction_id, is_fraud, label_ts_ms))

    def defer(self, item: Commit) -> None:
        """Queue the history update of a payment scored while the store was down."""
        with self._lock:
            self.pending.append(item)
            while len(self.pending) > self.max_pending:
                self.pending.popleft()
                self.dropped += 1

    def _recover(self) -> None:
        while not self._stop.wait(self.retry_after_s):
            try:
                self.store.ping()
                self._drain()
            except StoreUnavailable as exc:
                self._error = str(exc)
                continue
            with self._lock:
                if self.pending:  # arrived while draining; go round once more
                    continue
                outage = time.monotonic() - (self._down_since or time.monotonic())
                self._down_since = None
                self._error = None
            logger.info(
                "online store back after %.1f s; %d deferred payments written",
                outage,
                self.caught_up,
            )
            if self.on_change is not None:
                self.on_change(True, None)
            return

    def _drain(self, chunk: int = 500) -> None:
        while True:
            with self._lock:
                if not self.pending:
                    return
                items = list(itertools.islice(self.pending, chunk))
            # A payment retried during the outage may already be there; commits are idempotent.
            self.store.commit_many(items)
            with self._lock:
                for item in items:
                    # Unless the queue overflowed meanwhile and dropped it already.
                    if self.pending and self.pending[0] is item:
                        self.pending.popleft()
                self.caught_up += len(items)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.pending:
            logger.warning(
                "%d deferred history updates not written: the online store stayed down",
                len(self.pending),
            )
        self.store.close()

    def __getattr__(self, name: str) -> object:
        # Everything else (lookup, feedback, save_responses, ping, ...) goes straight through.
        return getattr(self.store, name)
