"""Score the single payments that arrive together in one go, without waiting for any.

A worker answers requests one at a time on its event loop. Under concurrent load several
/predict requests are ready at the same moment; scoring them one by one would pay the
per-call costs (a store read and a write transaction, numpy and model-call overheads) once
per payment. `PredictQueue` collects the requests that become ready in the same turn of the
event loop and scores them with one `ScoringEngine.predict_many` call: one store read, one
feature computation, one model call and one store write for all of them, each answered as
if alone (its own prediction id, reason codes and latency; the batch path gives the same
features as one-by-one scoring, proven by tests/serving/test_parity.py).

Nothing waits for a batch to fill: a lone request is scored on the next turn of the loop by
the single-payment path, so at one connection the latency is that of one payment. The
batch size adapts to the load by itself: while a batch is being scored, the next requests
queue up in the kernel and form the next batch.
"""

from __future__ import annotations

import asyncio
from typing import Any

from serving.answers import Scored
from serving.schemas import Transaction

# A cap keeps one turn of the loop short; wider bursts form the following batches.
MAX_COALESCED = 64


class PredictQueue:
    """Concurrent /predict requests of one worker, scored together (see module doc)."""

    def __init__(self, engine: Any, max_batch: int = MAX_COALESCED) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._waiting: list[tuple[Transaction, str | None, float, asyncio.Future[Scored]]]
        self._waiting = []
        self._scheduled = False
        self.batches = 0
        self.payments = 0

    async def score(self, txn: Transaction, api_key: str | None, started: float) -> Scored:
        """The answer to one payment, scored with the others ready on this turn."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Scored] = loop.create_future()
        self._waiting.append((txn, api_key, started, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._run)
        return await future

    def _run(self) -> None:
        waiting, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
        self._scheduled = bool(self._waiting)
        if self._scheduled:
            asyncio.get_running_loop().call_soon(self._run)
        self.batches += 1
        self.payments += len(waiting)
        try:
            if len(waiting) == 1:
                txn, key, _, _ = waiting[0]
                results = [self.engine.predict(txn, key)]
            else:
                results = self.engine.predict_many(
                    [w[0] for w in waiting], [w[1] for w in waiting], [w[2] for w in waiting]
                )
        except Exception as exc:  # every waiting request gets the error (e.g. no model)
            for *_, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), result in zip(waiting, results, strict=True):
            if not future.done():
                future.set_result(result)
