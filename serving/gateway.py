"""The ASGI app in front of the service: keys, limits, readiness and error format.

It wraps BentoML's whole app (`serving.bentoml_fixes.in_front`), so the API routes it
answers never cross BentoML's middleware stack; everything else goes on to BentoML.

For the scoring routes it checks the `X-API-Key` header (401), the per-key rate limit
(429 with Retry-After), the content type (415) and body size (413), and answers 503 while
no verified model is loaded. Every error response that leaves the service, whether it
comes from here, from a handler (`serving.errors.fail`) or from BentoML's own request
validation, is rewritten into the one error format with field-level details. It also
serves /readyz with the reason behind the answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import msgspec
from pydantic import BaseModel, ValidationError

from serving.answers import encode
from serving.coalesce import PredictQueue
from serving.config import MAX_BODY_BYTES, access_log_enabled, direct_answers_enabled
from serving.engine_thread import EngineThread
from serving.errors import REQUEST, ApiError, ApiErrorInfo, RequestSlot, from_validation, rewrite
from serving.keys import KeyStoreUnavailable
from serving.openapi import service_document
from serving.schemas import BatchRequest, Feedback, Transaction

logger = logging.getLogger("serving.gateway")
# BentoML's access log; the API routes answered here are written to it in its format.
access_logger = logging.getLogger("bentoml.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCORING_ROUTES = frozenset({"/predict", "/predict/batch", "/predict/explain"})
API_ROUTES = SCORING_ROUTES | {"/feedback"}
# Also answered here (readiness and the API document); everything else goes to BentoML.
OWN_ROUTES = frozenset({"/readyz", "/docs.json", "/docs"})
JSON_HEADERS = [(b"content-type", b"application/json")]
BODY_TIMEOUT_SECONDS = 10.0


class _BodyTimeout(Exception):
    """The request body did not arrive in time."""


@dataclass(frozen=True)
class DirectRoute:
    """An API route the gateway answers itself: its request model and engine method."""

    request: type[BaseModel]
    method: str
    with_key: bool


DIRECT_ROUTES = {
    "/predict": DirectRoute(Transaction, "predict", True),
    "/predict/batch": DirectRoute(BatchRequest, "predict_batch", True),
    "/predict/explain": DirectRoute(Transaction, "explain", False),
    "/feedback": DirectRoute(Feedback, "feedback", True),
}


class EngineSlot:
    """Where the service instance publishes its engine for the gateway to pick up."""

    engine: Any = None


ENGINES = EngineSlot()


async def _send_json(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *JSON_HEADERS,
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_error(
    send: Send, info: ApiErrorInfo, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await _send_json(send, info.status, info.body(), headers)


class _Answer:
    """The `send` of a request the gateway takes: remembers the response status, and whether
    the request was handed on to BentoML (which then logs it itself)."""

    __slots__ = ("handed_over", "send", "started", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = time.perf_counter()
        self.status = 0
        self.handed_over = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


class Gateway:
    """Pure ASGI middleware (no BaseHTTPMiddleware: it would add a task per request)."""

    def __init__(
        self,
        app: ASGIApp,
        engines: EngineSlot = ENGINES,
        direct: bool | None = None,
        access_log: bool | None = None,
    ) -> None:
        self.app = app
        self.engines = engines
        self.engine: Any = None
        self.direct = direct_answers_enabled() if direct is None else direct
        self.access_log = access_log_enabled() if access_log is None else access_log
        self.queue: PredictQueue | None = None
        self.thread: EngineThread | None = None

    def _queue(self, engine: Any) -> PredictQueue:
        if self.queue is None or self.queue.engine is not engine:
            if engine.settings.engine_thread and self.thread is None:
                self.thread = EngineThread()
            self.queue = PredictQueue(engine, thread=self.thread)
        return self.queue

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), self._lifespan_send(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path not in API_ROUTES and path not in OWN_ROUTES:
            await self.app(scope, receive, _ErrorRewriter(send, None))
            return
        answer = _Answer(send)
        if path == "/readyz":
            await self._readyz(answer)
        elif path == "/docs.json":
            await _send_json(answer, 200, service_document())
        elif path == "/docs":
            await answer(
                {"type": "http.response.start", "status": 307, "headers": [(b"location", b"/")]}
            )
            await answer({"type": "http.response.body", "body": b""})
        else:
            await self._api(scope, receive, answer, path)
            engine = self.engine or self.engines.engine
            if engine is not None and answer.status:
                engine.metrics.observe_request(
                    path, answer.status, time.perf_counter() - answer.started
                )
        if self.access_log and not answer.handed_over:
            self._log_access(scope, answer)

    @staticmethod
    def _log_access(scope: Scope, answer: _Answer) -> None:
        """The request's line in BentoML's access log format, for the requests answered here
        (no headers, no body: neither the API key nor the payment reaches the log)."""
        client = scope.get("client")
        access_logger.info(
            "%s (scheme=%s,method=%s,path=%s) (status=%d) %.3fms",
            f"{client[0]}:{client[1]}" if client else "_",
            scope.get("scheme", "http"),
            scope.get("method", ""),
            scope["path"],
            answer.status,
            (time.perf_counter() - answer.started) * 1000,
        )

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.shutdown" and self.thread is not None:
                # Let the engine's last call finish before the service's shutdown hook
                # closes the engine (the prediction log's final flush included).
                await asyncio.to_thread(self.thread.close)
            return message

        return wrapped

    def _lifespan_send(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            # The service instance is created during startup; bind to the one of this app.
            if message.get("type") == "lifespan.startup.complete":
                self.engine = self.engines.engine
            await send(message)

        return wrapped

    async def _readyz(self, send: Send) -> None:
        engine = self.engine or self.engines.engine
        if engine is None:
            body = {"ready": False, "reason": "starting: the service is not initialized yet"}
            await _send_json(send, 503, json.dumps(body).encode())
            return
        ready, body = engine.readiness()
        await _send_json(send, 200 if ready else 503, json.dumps(body).encode())

    async def _api(self, scope: Scope, receive: Receive, send: _Answer, path: str) -> None:
        engine = self.engine or self.engines.engine
        if scope["method"] != "POST":
            await _send_error(
                send,
                ApiErrorInfo(405, "method_not_allowed", f"{path} accepts POST only"),
                [(b"allow", b"POST")],
            )
            return
        if engine is None:
            await _send_error(send, ApiErrorInfo(503, "unavailable", "the service is starting"))
            return
        headers = dict(scope.get("headers") or [])
        slot = RequestSlot()
        if engine.keys is not None:
            raw = headers.get(b"x-api-key")
            if not raw:
                engine.metrics.rejected.labels("missing_api_key").inc()
                await _send_error(
                    send,
                    ApiErrorInfo(
                        401,
                        "missing_api_key",
                        "send your API key in the X-API-Key header",
                        (("X-API-Key", "header is missing"),),
                    ),
                )
                return
            try:
                name = engine.keys.verify(raw.decode("latin-1"))
            except KeyStoreUnavailable as exc:
                logger.error("cannot check an API key: %s", exc)
                await _send_error(
                    send,
                    ApiErrorInfo(503, "unavailable", "API keys cannot be checked right now"),
                    [(b"retry-after", b"5")],
                )
                return
            if name is None:
                engine.metrics.rejected.labels("invalid_api_key").inc()
                await _send_error(
                    send,
                    ApiErrorInfo(
                        401,
                        "invalid_api_key",
                        "the API key is unknown or revoked",
                        (("X-API-Key", "not a valid key"),),
                    ),
                )
                return
            slot.api_key = name
            allowed, retry_after = engine.limiter.hit(name)
            if not allowed:
                engine.metrics.rejected.labels("rate_limited").inc()
                await _send_error(
                    send,
                    ApiErrorInfo(
                        429,
                        "rate_limited",
                        f"more than {engine.limiter.limit} requests per minute for this key; "
                        f"retry after {retry_after} s",
                    ),
                    [(b"retry-after", str(retry_after).encode())],
                )
                return
        content_type = headers.get(b"content-type", b"application/json").split(b";")[0].strip()
        if content_type not in (b"application/json", b""):
            await _send_error(
                send,
                ApiErrorInfo(
                    415,
                    "unsupported_media_type",
                    "send the request body as JSON (Content-Type: application/json)",
                    (("Content-Type", f"{content_type.decode('latin-1')[:60]} is not accepted"),),
                ),
            )
            return
        try:
            body = await self._read_body(receive)
        except _BodyTimeout:
            await _send_error(
                send,
                ApiErrorInfo(
                    408,
                    "request_timeout",
                    f"the request body did not arrive within {BODY_TIMEOUT_SECONDS:.0f} s",
                ),
                [(b"connection", b"close")],
            )
            return
        if body is None:
            await _send_error(
                send,
                ApiErrorInfo(
                    413,
                    "payload_too_large",
                    f"the request body exceeds {MAX_BODY_BYTES // (1024 * 1024)} MiB",
                ),
            )
            return
        if path in SCORING_ROUTES and engine.champion.current is None:
            await _send_error(
                send, ApiErrorInfo(503, "model_unavailable", engine.champion.status.reason)
            )
            return
        if self.direct:
            await self._answer(send, engine, path, body, slot)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        send.handed_over = True
        token = REQUEST.set(slot)
        try:
            await self.app(scope, replay, _ErrorRewriter(send, slot))
        finally:
            REQUEST.reset(token)

    async def _answer(
        self, send: Send, engine: Any, path: str, body: bytes, slot: RequestSlot
    ) -> None:
        """Validate, call the engine and serialize, exactly as the API method would."""
        route = DIRECT_ROUTES[path]
        started = time.perf_counter()
        try:
            # An empty body is an empty object: the answer lists every missing field.
            request = route.request.model_validate_json(body if body.strip() else b"{}")
            queue = self._queue(engine)
            if path == "/predict":
                result = await queue.score(request, slot.api_key, started)
            else:
                method = getattr(engine, route.method)
                args = (request, slot.api_key) if route.with_key else (request,)
                # On the engine thread when there is one, so engine calls never overlap.
                result = await queue.thread.call(method, *args) if queue.thread else method(*args)
            payload = (
                encode(result)
                if isinstance(result, msgspec.Struct)
                else result.__pydantic_serializer__.to_json(result)
            )
        except ValidationError as exc:
            info = from_validation(exc.errors(include_url=False, include_context=False))
            engine.metrics.rejected.labels(info.code).inc()
            await _send_error(send, info)
        except ApiError as exc:
            await _send_error(send, exc.info)
        except Exception:
            logger.exception("%s failed", path)
            await _send_error(
                send,
                ApiErrorInfo(500, "internal_error", "an unexpected error occurred; it is logged"),
            )
        else:
            await _send_json(send, 200, payload)

    @staticmethod
    async def _read_body(receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        # A client trickling its body (slow loris) would otherwise hold the request forever.
        try:
            async with asyncio.timeout(BODY_TIMEOUT_SECONDS):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        break
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        return None
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise _BodyTimeout from None
        return b"".join(chunks)


class _ErrorRewriter:
    """A `send` that passes successes through and rewrites every error body."""

    def __init__(self, send: Send, slot: RequestSlot | None) -> None:
        self.send = send
        self.slot = slot
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if message["status"] < 400:
                await self.send(message)
                return
            self.start = message
            return
        if kind == "http.response.body" and self.start is not None:
            self.chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            status = int(self.start["status"])
            parked = self.slot.error if self.slot is not None else None
            info = parked if parked is not None else rewrite(status, b"".join(self.chunks))
            body = info.body()
            kept = [
                (k, v)
                for k, v in self.start.get("headers", [])
                if k.lower() not in (b"content-length", b"content-type")
            ]
            await self.send(
                {
                    "type": "http.response.start",
                    "status": info.status,
                    "headers": [
                        *kept,
                        *JSON_HEADERS,
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await self.send({"type": "http.response.body", "body": body, "more_body": False})
            self.start = None
            return
        await self.send(message)
