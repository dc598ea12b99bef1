"""BentoML's TimeoutMiddleware leaves one live timer per request for `timeout` seconds; the
service's fix cancels it when the request ends and keeps the 504 on a real timeout."""

import asyncio
import gc
from typing import Any

from bentoml._internal.server.http.traffic import TimeoutMiddleware

from serving import bentoml_fixes


async def _fast_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _slow_app(scope: Any, receive: Any, send: Any) -> None:
    await asyncio.sleep(5)


def _live_timers() -> int:
    return sum(
        1 for o in gc.get_objects() if isinstance(o, asyncio.TimerHandle) and not o.cancelled()
    )


async def _requests(call: Any, middleware: TimeoutMiddleware, n: int) -> list[int]:
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    for _ in range(n):
        await call(middleware, {"type": "http", "path": "/predict"}, receive, send)
    return statuses


def test_original_middleware_keeps_a_timer_per_request() -> None:
    async def run() -> int:
        before = _live_timers()
        await _requests(bentoml_fixes.ORIGINAL_CALL, TimeoutMiddleware(_fast_app, 300), 200)
        return _live_timers() - before

    assert asyncio.run(run()) >= 200


def test_fixed_middleware_leaves_no_timer_and_still_times_out() -> None:
    bentoml_fixes.apply()
    assert TimeoutMiddleware.__call__ is not bentoml_fixes.ORIGINAL_CALL

    async def run() -> tuple[list[int], int, list[int]]:
        before = _live_timers()
        fast = await _requests(TimeoutMiddleware.__call__, TimeoutMiddleware(_fast_app, 300), 200)
        left = _live_timers() - before
        slow = await _requests(TimeoutMiddleware.__call__, TimeoutMiddleware(_slow_app, 0.05), 1)
        return fast, left, slow

    fast, left, slow = asyncio.run(run())
    assert fast == [200] * 200
    assert left == 0
    assert slow == [504]


def test_the_gateway_is_in_front_of_bentomls_app(clean_env: Any) -> None:
    """`to_asgi()` (what `bentoml serve` runs) is the gateway wrapping BentoML's whole app,
    middleware stack included, so the API routes skip that stack and the rest reach it."""
    from starlette.applications import Starlette

    from serving.gateway import Gateway
    from serving.service import FraudScorer

    app = FraudScorer.to_asgi()
    assert isinstance(app, Gateway)
    assert isinstance(app.app, Starlette)
    middleware = {m.cls.__name__ for m in app.app.user_middleware}
    assert {"TimeoutMiddleware", "ContextMiddleware"} <= middleware
    assert "Gateway" not in middleware
