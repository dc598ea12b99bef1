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

With a remote online store the groups are scored on the worker's engine thread
(`serving.engine_thread`), so the loop keeps reading requests while a group waits on Redis;
the requests read meanwhile form the next group.
"""

from __future__ import annotations

import asyncio
from typing import Any

from serving.answers import Scored
from serving.engine_thread import EngineThread
from serving.schemas import Transaction

# A cap keeps one turn of the loop short; wider bursts form the following batches.
MAX_COALESCED = 64


class PredictQueue:
    """Concurrent /predict requests of one worker, scored together (see module doc).

    With an `EngineThread`, groups are scored on that thread, one group at a time: the
    requests that arrive while a group is being scored form the next group, handed over
    when it finishes. A lone payment is still scored on the loop when the thread is idle.
    """

    def __init__(
        self, engine: Any, max_batch: int = MAX_COALESCED, thread: EngineThread | None = None
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.thread = thread
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
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled and self._waiting:
            self._scheduled = True
            loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        thread = self.thread
        if thread is not None and thread.busy:
            # The waiting requests go to the thread when the call in flight ends.
            self._scheduled = True
            thread.when_idle(self._resume)
            return
        waiting, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
        if not waiting:
            return
        self.batches += 1
        self.payments += len(waiting)
        if thread is not None and len(waiting) > 1:
            try:
                scoring = thread.submit(self._score, waiting)
            except Exception as exc:  # the thread is shut down: the service is stopping
                self._fail(waiting, exc)
                return
            scoring.add_done_callback(lambda done: self._settle(waiting, done))
            return
        self._schedule(asyncio.get_running_loop())
        try:
            results = self._score(waiting)
        except Exception as exc:
            self._fail(waiting, exc)
            return
        self._answer(waiting, results)

    def _resume(self) -> None:
        self._scheduled = False
        self._schedule(asyncio.get_running_loop())

    def _score(self, waiting: list[tuple[Transaction, str | None, float, Any]]) -> list[Scored]:
        if len(waiting) == 1:
            txn, key, _, _ = waiting[0]
            return [self.engine.predict(txn, key)]
        return self.engine.predict_many(  # type: ignore[no-any-return]
            [w[0] for w in waiting], [w[1] for w in waiting], [w[2] for w in waiting]
        )

    def _settle(self, waiting: list[Any], done: asyncio.Future[list[Scored]]) -> None:
        try:
            if done.cancelled():
                self._fail(waiting, asyncio.CancelledError("scoring was cancelled"))
            elif (exc := done.exception()) is not None:
                self._fail(waiting, exc)
            else:
                self._answer(waiting, done.result())
        finally:
            self._schedule(asyncio.get_running_loop())

    @staticmethod
    def _fail(waiting: list[Any], exc: BaseException) -> None:
        # Every waiting request gets the error (e.g. no model).
        for *_, future in waiting:
            if not future.done():
                future.set_exception(exc)

    @staticmethod
    def _answer(waiting: list[Any], results: list[Scored]) -> None:
        for (*_, future), result in zip(waiting, results, strict=True):
            if not future.done():
                future.set_result(result)
