"""Run a worker's engine calls on one thread of their own, beside the event loop.

With a remote online store (Redis), every group of payments waits on two network round
trips, and on the server running its scripts for the whole group. Called on the event loop,
those waits stop the worker: no request is read, validated or answered meanwhile, and the
process sits idle. On its own thread the engine releases the interpreter lock while it
waits, and the loop goes on reading and answering requests; the next group forms while the
current one is in Redis.

One thread, so engine calls never overlap one another: they run in the order they were
handed over, as they would on the loop. A call costs a thread handoff (tens of
microseconds), so `coalesce.PredictQueue` still scores a lone payment on the loop when the
thread is idle: at one connection there is nothing else to do while it waits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class EngineThread:
    """One thread that runs engine calls in order; `busy` counts the calls handed over."""

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="engine")
        self.busy = 0
        self._when_idle: list[Callable[[], None]] = []

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Hand `fn(*args)` to the thread; the returned future resolves on the running loop."""
        loop = asyncio.get_running_loop()
        work = self._pool.submit(fn, *args)
        self.busy += 1
        # The call counts as busy until the thread has finished it, even if whoever awaits
        # it is cancelled meanwhile (a started call cannot be stopped).
        work.add_done_callback(lambda _: loop.call_soon_threadsafe(self._done))
        return asyncio.wrap_future(work, loop=loop)

    def _done(self) -> None:
        self.busy -= 1
        if not self.busy and self._when_idle:
            waiting, self._when_idle = self._when_idle, []
            for callback in waiting:
                callback()

    def when_idle(self, callback: Callable[[], None]) -> None:
        """Call `callback` on the loop once no call is in flight (at once if none is)."""
        if self.busy:
            self._when_idle.append(callback)
        else:
            callback()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the engine thread, awaited."""
        return await self.submit(fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
