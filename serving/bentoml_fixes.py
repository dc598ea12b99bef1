"""Fixes to BentoML 1.4.39 that the scoring service applies when it is imported.

`TimeoutMiddleware` (installed on every BentoML service for `traffic.timeout`) schedules a
timer with `loop.call_later(timeout, ...)` for each request and never cancels it. The timer
keeps the request's waiter future, a bound method and a context alive until the timeout
expires, even though the request finished long before: at 3,000 requests/s and a 300 s
timeout that is ~900,000 live timers, about 700 bytes each, so a worker's memory climbed by
~100 MB a minute for the first five minutes of load before levelling off (measured with
`benchmarks/load_test.py`, docs/reliability.md). The fix cancels the timer as soon as the
request is done; everything else about the middleware is unchanged.

`in_front` puts an ASGI app in front of a service's whole app. `add_asgi_middleware`
places a middleware inside BentoML's own stack (Starlette's error handler, request metrics,
OpenTelemetry, the timeout), which every request then crosses first: about a fifth of a
worker's time per scoring request under load. The scoring gateway answers the API routes
itself, with its own error format and metrics, so it goes in front and hands every other
request (and the lifespan) to BentoML's app unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from _bentoml_sdk.service.factory import Service
from bentoml._internal.server.http.traffic import TimeoutMiddleware
from starlette.responses import JSONResponse

_PATCHED = "_fraud_platform_cancels_timer"
ORIGINAL_CALL = TimeoutMiddleware.__call__
ORIGINAL_TO_ASGI = Service.to_asgi
# Service name -> the app to put in front of its ASGI app (`in_front`).
_IN_FRONT: dict[str, Callable[[Any], Any]] = {}


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


def _to_asgi(self: Service[Any], is_main: bool = True) -> Any:
    """`Service.to_asgi`, wrapped in the app registered with `in_front`, if any."""
    app = ORIGINAL_TO_ASGI(self, is_main)
    wrap = _IN_FRONT.get(self.name)
    return app if wrap is None else wrap(app)


def in_front(service: Service[Any], wrap: Callable[[Any], Any]) -> None:
    """Serve `service` as `wrap(app)`, where app is BentoML's whole ASGI app for it; this is
    what `bentoml serve` and `to_asgi()` then run."""
    _IN_FRONT[service.name] = wrap


def apply() -> None:
    """Install the fixes (idempotent)."""
    if not getattr(TimeoutMiddleware, _PATCHED, False):
        TimeoutMiddleware.__call__ = _call  # type: ignore[method-assign]
        setattr(TimeoutMiddleware, _PATCHED, True)
    if Service.to_asgi is not _to_asgi:
        Service.to_asgi = _to_asgi  # type: ignore[method-assign]
