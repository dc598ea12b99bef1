"""Fixes to BentoML 1.4.39 that the scoring service applies when it is imported.

`TimeoutMiddleware` (installed on every BentoML service for `traffic.timeout`) schedules a
timer with `loop.call_later(timeout, ...)` for each request and never cancels it. The timer
keeps the request's waiter future, a bound method and a context alive until the timeout
expires, even though the request finished long before: at 3,000 requests/s and a 300 s
timeout that is ~900,000 live timers, about 700 bytes each, so a worker's memory climbed by
~100 MB a minute for the first five minutes of load before levelling off (measured with
`benchmarks/load_test.py`, docs/reliability.md). The fix cancels the timer as soon as the
request is done; everything else about the middleware is unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bentoml._internal.server.http.traffic import TimeoutMiddleware
from starlette.responses import JSONResponse

_PATCHED = "_fraud_platform_cancels_timer"
ORIGINAL_CALL = TimeoutMiddleware.__call__


async def _call(self: TimeoutMiddleware, scope: Any, receive: Any, send: Any) -> None:
    """`TimeoutMiddleware.__call__` of BentoML 1.4.39, with the timer cancelled at the end."""
    if scope["type"] not in ("http", "websocket"):
        return await self.app(scope, receive, send)
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def _send(message: Any) -> None:
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
    try:
        try:
            await waiter
        except TimeoutError:
            if fut.cancel():
                resp = JSONResponse(
                    {"error": f"Not able to process the request in {self.timeout} seconds"},
                    status_code=504,
                )
                await resp(scope, receive, send)
        else:
            await fut
    finally:
        timer.cancel()
    return None


def apply() -> None:
    """Install the fixes (idempotent)."""
    if not getattr(TimeoutMiddleware, _PATCHED, False):
        TimeoutMiddleware.__call__ = _call  # type: ignore[method-assign]
        setattr(TimeoutMiddleware, _PATCHED, True)
