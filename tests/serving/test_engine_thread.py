"""The engine's own thread: concurrent payments coalesce, engine calls never overlap."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from serving.coalesce import PredictQueue
from serving.engine_thread import EngineThread


class SlowEngine:
    """Stands in for ScoringEngine: each call waits as a remote store round trip would, and
    records which thread ran it and when, so overlaps can be checked."""

    def __init__(self, wait_s: float = 0.02, fail: bool = False) -> None:
        self.wait_s = wait_s
        self.fail = fail
        self.calls: list[tuple[str, str, int, float, float]] = []
        self._running = 0
        self.overlapped = False

    def _enter(self, kind: str, size: int) -> float:
        self._running += 1
        self.overlapped |= self._running > 1
        began = time.perf_counter()
        time.sleep(self.wait_s)
        if self.fail:
            self._running -= 1
            raise RuntimeError("no model is loaded")
        return began

    def _leave(self, kind: str, size: int, began: float) -> None:
        self._running -= 1
        name = threading.current_thread().name
        self.calls.append((kind, name, size, began, time.perf_counter()))

    def predict(self, txn: str, key: str | None) -> str:
        began = self._enter("predict", 1)
        self._leave("predict", 1, began)
        return f"scored {txn}"

    def predict_many(self, txns: list[str], keys: list[Any], started: list[float]) -> list[str]:
        began = self._enter("predict_many", len(txns))
        self._leave("predict_many", len(txns), began)
        return [f"scored {t}" for t in txns]

    def predict_batch(self, txns: list[str]) -> list[str]:
        began = self._enter("batch", len(txns))
        self._leave("batch", len(txns), began)
        return [f"batch {t}" for t in txns]


async def _arrivals(queue: PredictQueue, names: list[str], gap_s: float) -> list[Any]:
    async def one(i: int, name: str) -> Any:
        await asyncio.sleep(i * gap_s)
        return await queue.score(name, None, time.perf_counter())  # type: ignore[arg-type]

    return await asyncio.gather(*(one(i, n) for i, n in enumerate(names)))


def test_a_lone_payment_is_scored_on_the_loop() -> None:
    engine, thread = SlowEngine(0.001), EngineThread()
    queue = PredictQueue(engine, thread=thread)
    assert asyncio.run(_arrivals(queue, ["a"], 0.0)) == ["scored a"]
    thread.close()
    assert [(kind, name) for kind, name, *_ in engine.calls] == [("predict", "MainThread")]


def test_groups_form_while_one_is_scored_on_the_thread() -> None:
    """Payments arriving every 2 ms against a 20 ms engine: the first group goes to the
    thread, and those arriving meanwhile wait and go together as the next group."""
    engine, thread = SlowEngine(0.02), EngineThread()
    queue = PredictQueue(engine, thread=thread)
    names = [f"p{i}" for i in range(30)]
    answers = asyncio.run(_arrivals(queue, names, 0.002))
    thread.close()
    assert answers == [f"scored {n}" for n in names]
    assert not engine.overlapped
    assert sum(size for _, _, size, *_ in engine.calls) == len(names)
    groups = [c for c in engine.calls if c[0] == "predict_many"]
    assert groups and all(name.startswith("engine") for _, name, *_ in groups)
    # Far fewer engine calls than payments: the waits were shared.
    assert len(engine.calls) <= len(names) // 3
    # One call at a time, in order.
    for earlier, later in zip(engine.calls, engine.calls[1:], strict=False):
        assert earlier[4] <= later[3]


def test_other_engine_calls_wait_their_turn() -> None:
    """A batch handed to the thread never runs beside a group of single payments, and a
    payment arriving while the thread is busy is not scored on the loop meanwhile."""
    engine, thread = SlowEngine(0.02), EngineThread()
    queue = PredictQueue(engine, thread=thread)

    async def mixed() -> tuple[list[Any], list[str]]:
        batch = asyncio.ensure_future(thread.call(engine.predict_batch, ["b1", "b2"]))
        await asyncio.sleep(0.005)  # the batch is in flight: this lone payment must wait
        singles = await _arrivals(queue, ["s1"], 0.0)
        return singles, await batch

    singles, batch = asyncio.run(mixed())
    thread.close()
    assert singles == ["scored s1"] and batch == ["batch b1", "batch b2"]
    assert not engine.overlapped
    assert [kind for kind, *_ in engine.calls] == ["batch", "predict"]


def test_an_engine_error_reaches_every_waiting_request() -> None:
    engine, thread = SlowEngine(0.005, fail=True), EngineThread()
    queue = PredictQueue(engine, thread=thread)

    async def burst() -> list[Any]:
        return await asyncio.gather(
            *(queue.score(f"p{i}", None, 0.0) for i in range(5)),  # type: ignore[arg-type]
            return_exceptions=True,
        )

    results = asyncio.run(burst())
    thread.close()
    assert len(results) == 5
    assert all(isinstance(r, RuntimeError) for r in results)
    assert thread.busy == 0


@pytest.mark.parametrize(
    ("value", "store", "expected"),
    [
        ("auto", "redis://127.0.0.1:6379/0", True),
        ("auto", "/tmp/online.db", False),
        ("1", "/tmp/online.db", True),
        ("0", "redis://127.0.0.1:6379/0", False),
    ],
)
def test_the_setting(value: str, store: str, expected: bool) -> None:
    from serving.config import ServingSettings

    settings = ServingSettings.from_env(
        {"FRAUD_ENGINE_THREAD": value, "FRAUD_ONLINE_STORE_URL": store, "FRAUD_HOME": "/tmp/x"}
    )
    assert settings.engine_thread is expected
    with pytest.raises(ValueError, match="FRAUD_ENGINE_THREAD"):
        ServingSettings.from_env({"FRAUD_ENGINE_THREAD": "sometimes", "FRAUD_HOME": "/tmp/x"})


def test_a_cancelled_caller_does_not_free_the_thread_early() -> None:
    """The thread stays busy until its call has finished, even when whoever awaited the
    call is cancelled (a started call cannot be stopped): a payment arriving meanwhile
    waits instead of being scored on the loop beside it."""
    engine, thread = SlowEngine(0.05), EngineThread()
    queue = PredictQueue(engine, thread=thread)

    async def scenario() -> list[Any]:
        batch = asyncio.ensure_future(thread.call(engine.predict_batch, ["b1"]))
        await asyncio.sleep(0.01)
        batch.cancel()
        await asyncio.sleep(0)
        assert thread.busy == 1
        return await _arrivals(queue, ["s1"], 0.0)

    assert asyncio.run(scenario()) == ["scored s1"]
    thread.close()
    assert not engine.overlapped
    assert [kind for kind, *_ in engine.calls] == ["batch", "predict"]
