"""The scoring API over HTTP, through FraudScorer's ASGI app, against a temporary model world."""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from serving_world import MODEL_NAME, ModelWorld
from starlette.testclient import TestClient

from fraud_assets.core.registry import CHAMPION, Registry
from fraud_pipelines.process import free_port
from serving.keys import ApiKeys

READY_TIMEOUT = 120.0


def transaction(world: ModelWorld, i: int, **overrides: Any) -> dict[str, Any]:
    """A payment shaped like the world's history, a little after its end."""
    row = world.history.iloc[len(world.history) - 500 + (i % 400)]
    stamp = world.history["timestamp"].max() + pd.Timedelta(seconds=30 * (i + 1))
    body = {
        "transaction_id": f"test-{uuid.uuid4().hex[:12]}-{i}",
        "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "user_id": row["user_id"],
        "merchant_id": row["merchant_id"],
        "merchant_category": row["merchant_category"],
        "amount": float(row["amount"]),
        "currency": row["currency"],
        "device_id": row["device_id"],
        "device_type": row["device_type"],
        "channel": row["channel"],
        "country": row["country"],
    }
    body.update(overrides)
    return body


def champion_version(world: ModelWorld) -> str:
    info = Registry(world.tracking_uri, MODEL_NAME, world.platform_db_url).alias(CHAMPION)
    assert info is not None
    return info.version


def wait_for(client: TestClient, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.time() + READY_TIMEOUT
    body: dict[str, Any] = {}
    while time.time() < deadline:
        body = client.get("/readyz").json()
        if predicate(body):
            return body
        time.sleep(0.1)
    raise AssertionError(f"/readyz never satisfied the condition; last: {body}")


def registry_checked(body: dict[str, Any]) -> bool:
    return body.get("registry", {}).get("last_checked") is not None


def _forget_bentoml_metrics() -> None:
    """BentoML registers its HTTP metrics once per app; a server builds one app per process,
    these tests build several, so drop the previous app's collectors first."""
    import prometheus_client

    registry = prometheus_client.REGISTRY
    for collector, names in list(registry._collector_to_names.items()):  # noqa: SLF001
        if any(name.startswith("bentoml_") for name in names):
            registry.unregister(collector)


@contextmanager
def running(
    world: ModelWorld, home: Path, env: pytest.MonkeyPatch, **extra: str
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """A service instance with its own state under `home`, and headers with a valid key."""
    settings = world.env(home, FRAUD_PLATFORM_DB_URL=f"sqlite:///{home / 'platform.db'}", **extra)
    for name, value in settings.items():
        env.setenv(name, value)
    home.mkdir(parents=True, exist_ok=True)
    headers = {}
    if settings.get("FRAUD_AUTH_DISABLED") != "1":
        headers["X-API-Key"] = ApiKeys(settings["FRAUD_PLATFORM_DB_URL"]).create(
            f"merchant-{uuid.uuid4().hex[:6]}"
        )
    from serving.service import FraudScorer

    _forget_bentoml_metrics()
    with TestClient(FraudScorer.to_asgi(), raise_server_exceptions=False) as client:
        yield client, headers


@pytest.fixture
def service(
    model_world: ModelWorld, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with running(model_world, tmp_path / "home", clean_env) as (client, headers):
        wait_for(client, lambda b: b["ready"] and registry_checked(b))
        yield client, headers


@pytest.fixture(params=["0", "1"], ids=["on-the-loop", "engine-thread"])
def service_either_way(
    request: pytest.FixtureRequest,
    model_world: ModelWorld,
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The service with its engine on the event loop, and on its own thread."""
    with running(model_world, tmp_path / "home", clean_env, FRAUD_ENGINE_THREAD=request.param) as (
        client,
        headers,
    ):
        wait_for(client, lambda b: b["ready"] and registry_checked(b))
        yield client, headers


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert isinstance(error["message"], str) and error["message"]
    for detail in error["details"]:
        assert set(detail) == {"field", "issue"}
    if code is not None:
        assert error["code"] == code
    return error


def test_predict_returns_a_complete_decision(
    service: tuple[TestClient, dict[str, str]], model_world: ModelWorld
) -> None:
    client, headers = service
    response = client.post("/predict", json=transaction(model_world, 1), headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert uuid.UUID(body["prediction_id"])
    assert 0.0 <= body["fraud_score"] <= 1.0
    threshold = model_world.threshold
    expected = (
        "decline"
        if body["fraud_score"] >= threshold
        else "review"
        if body["fraud_score"] >= threshold * 0.5
        else "approve"
    )
    assert body["decision"] == expected
    assert body["is_fraud"] == (expected == "decline")
    assert body["model_version"] == champion_version(model_world)
    assert body["degraded"] is False and body["latency_ms"] > 0
    reasons = body["reason_codes"]
    assert len(reasons) <= 3
    contributions = [r["contribution"] for r in reasons]
    assert contributions == sorted(contributions, reverse=True) and min(contributions) > 0
    assert {r["feature"] for r in reasons} <= set(model_world.spec.features)
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model"]["source"] == "registry"
    assert client.get("/healthz").status_code == 200


def test_openapi_documents_every_field(service: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = service
    spec = client.get("/docs.json").json()
    schema = spec["components"]["schemas"]
    transaction_schema = next(v for k, v in schema.items() if k.startswith("Transaction"))
    for name, field in transaction_schema["properties"].items():
        assert field.get("description"), name
        assert field.get("examples"), name


TXN_ERRORS: list[tuple[str, Callable[[dict[str, Any]], Any], int, str, str]] = [
    (
        "missing field",
        lambda t: {k: v for k, v in t.items() if k != "amount"},
        422,
        "validation_error",
        "amount",
    ),
    ("wrong type", lambda t: {**t, "amount": "twelve"}, 422, "validation_error", "amount"),
    ("numeric string", lambda t: {**t, "amount": "12.5"}, 422, "validation_error", "amount"),
    ("negative amount", lambda t: {**t, "amount": -1.0}, 422, "validation_error", "amount"),
    ("huge amount", lambda t: {**t, "amount": 1e308}, 422, "validation_error", "amount"),
    ("unknown currency", lambda t: {**t, "currency": "XYZ"}, 422, "validation_error", "currency"),
    (
        "far-future timestamp",
        lambda t: {**t, "timestamp": "2999-01-01T00:00:00Z"},
        422,
        "validation_error",
        "timestamp",
    ),
    (
        "bad timestamp",
        lambda t: {**t, "timestamp": "yesterday"},
        422,
        "validation_error",
        "timestamp",
    ),
    ("unknown field", lambda t: {**t, "colour": "red"}, 422, "validation_error", "colour"),
    (
        "control characters",
        lambda t: {**t, "user_id": "u\x00x"},
        422,
        "validation_error",
        "user_id",
    ),
    (
        "id too long",
        lambda t: {**t, "transaction_id": "x" * 129},
        422,
        "validation_error",
        "transaction_id",
    ),
    ("not an object", lambda t: [t], 422, "validation_error", ""),
]


@pytest.mark.parametrize(
    ("case", "mutate", "status", "code", "field"), TXN_ERRORS, ids=[c[0] for c in TXN_ERRORS]
)
def test_malformed_transactions_get_field_level_4xx(
    service: tuple[TestClient, dict[str, str]],
    model_world: ModelWorld,
    case: str,
    mutate: Callable[[dict[str, Any]], Any],
    status: int,
    code: str,
    field: str,
) -> None:
    client, headers = service
    body = mutate(transaction(model_world, 2))
    for route in ("/predict", "/predict/explain"):
        error = assert_error(client.post(route, json=body, headers=headers), status, code)
        assert error["details"], case
        assert any(d["field"].startswith(field) for d in error["details"]), error


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_amounts_are_rejected(
    service: tuple[TestClient, dict[str, str]], model_world: ModelWorld, literal: str
) -> None:
    client, headers = service
    raw = json.dumps(transaction(model_world, 3, amount=1.5)).replace("1.5", literal)
    response = client.post(
        "/predict", content=raw, headers={**headers, "content-type": "application/json"}
    )
    error = assert_error(response, 422, "validation_error")
    assert [d["field"] for d in error["details"]] == ["amount"]


def test_invalid_json_and_wrong_media_type(service: tuple[TestClient, dict[str, str]]) -> None:
    client, headers = service
    json_headers = {**headers, "content-type": "application/json"}
    error = assert_error(
        client.post("/predict", content=b'{"amount": 1,', headers=json_headers), 400, "invalid_json"
    )
    assert error["details"][0]["field"] == "body"
    assert_error(client.post("/predict", content=b"", headers=json_headers), 422)
    assert_error(
        client.post(
            "/predict",
            content=b"amount=1",
            headers={**headers, "content-type": "application/x-www-form-urlencoded"},
        ),
        415,
        "unsupported_media_type",
    )
    assert_error(client.get("/predict", headers=headers), 405, "method_not_allowed")
    assert_error(client.get("/no/such/route"), 404, "not_found")


def test_batch_limits(service: tuple[TestClient, dict[str, str]], model_world: ModelWorld) -> None:
    client, headers = service
    one = transaction(model_world, 4)
    error = assert_error(
        client.post("/predict/batch", json={"transactions": [one] * 10_001}, headers=headers), 422
    )
    assert error["details"][0]["field"] == "transactions"
    assert_error(client.post("/predict/batch", json={"transactions": []}, headers=headers), 422)
    bad = [transaction(model_world, 5), {**transaction(model_world, 6), "amount": -3}]
    error = assert_error(
        client.post("/predict/batch", json={"transactions": bad}, headers=headers), 422
    )
    assert error["details"][0]["field"] == "transactions[1].amount"


def test_feedback(service: tuple[TestClient, dict[str, str]], model_world: ModelWorld) -> None:
    client, headers = service
    error = assert_error(
        client.post(
            "/feedback",
            json={"prediction_id": str(uuid.uuid4()), "is_fraud": True},
            headers=headers,
        ),
        404,
        "unknown_prediction",
    )
    assert error["details"][0]["field"] == "prediction_id"
    assert_error(
        client.post(
            "/feedback", json={"prediction_id": "not-a-uuid", "is_fraud": True}, headers=headers
        ),
        422,
    )
    txn = transaction(model_world, 7)
    scored = client.post("/predict", json=txn, headers=headers).json()
    response = client.post(
        "/feedback",
        json={
            "prediction_id": scored["prediction_id"],
            "is_fraud": True,
            "label_timestamp": txn["timestamp"],
        },
        headers=headers,
    )
    assert response.status_code == 200, response.text
    ack = response.json()
    assert ack["status"] == "recorded" and ack["transaction_id"] == txn["transaction_id"]
    # The label now counts for the merchant's later payments.
    later = transaction(model_world, 8, merchant_id=txn["merchant_id"])
    explained = client.post("/predict/explain", json=later, headers=headers).json()
    known = next(c for c in explained["contributions"] if c["feature"] == "merchant_labels_known")
    engine = _engine()
    assert engine.store.find_prediction(scored["prediction_id"]) is not None
    with engine.log.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT is_fraud FROM feedback")).fetchall()
    assert rows == [(1,)] and known["value"] >= 1


def test_api_keys_are_required(
    service: tuple[TestClient, dict[str, str]], model_world: ModelWorld
) -> None:
    client, headers = service
    body = transaction(model_world, 9)
    error = assert_error(client.post("/predict", json=body), 401, "missing_api_key")
    assert error["details"][0]["field"] == "X-API-Key"
    for wrong in ("nope", headers["X-API-Key"][:-2] + "xx", "fsk_000000000000_abc"):
        assert_error(
            client.post("/predict", json=body, headers={"X-API-Key": wrong}),
            401,
            "invalid_api_key",
        )
    assert client.post("/predict", json=body, headers=headers).status_code == 200
    engine = _engine()
    name = engine.keys.verify(headers["X-API-Key"])
    assert engine.keys.revoke(name)
    assert_error(client.post("/predict", json=body, headers=headers), 401, "invalid_api_key")
    # Health and readiness stay open for the orchestrator.
    assert client.get("/readyz").status_code == 200


def test_rate_limit(model_world: ModelWorld, tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    with running(model_world, tmp_path / "home", clean_env, FRAUD_RATE_LIMIT_PER_MIN="5") as (
        client,
        headers,
    ):
        wait_for(client, lambda b: b["ready"])
        codes = [
            client.post("/predict", json=transaction(model_world, i), headers=headers)
            for i in range(7)
        ]
        assert [r.status_code for r in codes[:5]] == [200] * 5
        limited = codes[5]
        assert_error(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
        # Another key has its own budget.
        other = ApiKeys(f"sqlite:///{tmp_path / 'home' / 'platform.db'}").create("other")
        response = client.post(
            "/predict", json=transaction(model_world, 20), headers={"X-API-Key": other}
        )
        assert response.status_code == 200


def test_idempotent_retries(
    service: tuple[TestClient, dict[str, str]], model_world: ModelWorld
) -> None:
    client, headers = service
    user = f"u-idem-{uuid.uuid4().hex[:6]}"
    first = transaction(model_world, 10, user_id=user)
    a = client.post("/predict", json=first, headers=headers)
    b = client.post("/predict", json=first, headers=headers)
    assert a.status_code == b.status_code == 200
    assert a.json() == b.json()
    follow = transaction(model_world, 11, user_id=user)
    explained = client.post("/predict/explain", json=follow, headers=headers).json()
    prior = next(c for c in explained["contributions"] if c["feature"] == "user_prior_txn_count")
    assert prior["value"] == 1.0, "the retried payment must be counted once"
    batch = client.post("/predict/batch", json={"transactions": [first]}, headers=headers)
    assert batch.json()["results"][0] == a.json()


def test_batch_equals_single(
    model_world: ModelWorld, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    user = f"u-batch-{uuid.uuid4().hex[:6]}"
    payments = [
        transaction(model_world, 30 + i, user_id=user if i % 2 else f"{user}-{i}")
        for i in range(12)
    ]
    with running(model_world, tmp_path / "single", clean_env) as (client, headers):
        wait_for(client, lambda b: b["ready"])
        singles = {
            p["transaction_id"]: client.post("/predict", json=p, headers=headers).json()
            for p in payments
        }
    shuffled = list(reversed(payments))
    with running(model_world, tmp_path / "batch", clean_env) as (client, headers):
        wait_for(client, lambda b: b["ready"])
        response = client.post("/predict/batch", json={"transactions": shuffled}, headers=headers)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
    assert [r["transaction_id"] for r in results] == [p["transaction_id"] for p in shuffled]
    for result in results:
        single = singles[result["transaction_id"]]
        assert result["fraud_score"] == pytest.approx(single["fraud_score"], abs=1e-7)
        assert result["decision"] == single["decision"]
        assert [r["feature"] for r in result["reason_codes"]] == [
            r["feature"] for r in single["reason_codes"]
        ]


@pytest.mark.parametrize("engine_thread", ["0", "1"], ids=["on-the-loop", "engine-thread"])
def test_concurrent_singles_are_scored_together_as_if_alone(
    model_world: ModelWorld, tmp_path: Path, clean_env: pytest.MonkeyPatch, engine_thread: str
) -> None:
    """Payments ready on the same turn of the event loop share one store read and write,
    whether the engine runs on the loop or on its own thread."""
    import asyncio

    from serving.coalesce import PredictQueue
    from serving.engine_thread import EngineThread
    from serving.gateway import ENGINES
    from serving.schemas import Transaction

    user = f"u-together-{uuid.uuid4().hex[:6]}"
    payments = [
        transaction(model_world, 60 + i, user_id=user if i % 3 else f"{user}-{i}")
        for i in range(12)
    ]
    with running(model_world, tmp_path / "single", clean_env) as (client, headers):
        wait_for(client, lambda b: b["ready"])
        singles = [client.post("/predict", json=p, headers=headers).json() for p in payments]
    with running(
        model_world, tmp_path / "together", clean_env, FRAUD_ENGINE_THREAD=engine_thread
    ) as (client, headers):
        wait_for(client, lambda b: b["ready"])
        assert ENGINES.engine.settings.engine_thread is (engine_thread == "1")
        own_thread = EngineThread() if engine_thread == "1" else None
        queue = PredictQueue(ENGINES.engine, thread=own_thread)

        async def all_at_once() -> list[Any]:
            return await asyncio.gather(
                *[
                    queue.score(Transaction.model_validate(p), "merchant", time.perf_counter())
                    for p in payments
                ]
            )

        together = asyncio.run(all_at_once())
        if own_thread is not None:
            own_thread.close()
        assert (queue.batches, queue.payments) == (1, len(payments))
        # Over HTTP too: concurrent requests all answered, each with its own prediction.
        more = [transaction(model_world, 100 + i, user_id=user) for i in range(24)]
        answers: list[Any] = [None] * len(more)

        def post(i: int) -> None:
            answers[i] = client.post("/predict", json=more[i], headers=headers)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(more))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(a.status_code == 200 for a in answers)
        assert len({a.json()["prediction_id"] for a in answers}) == len(more)
        # The other routes take the same path to the engine (its thread, when there is one).
        batch = client.post(
            "/predict/batch",
            json={"transactions": [transaction(model_world, 200 + i) for i in range(5)]},
            headers=headers,
        )
        assert batch.status_code == 200 and len(batch.json()["results"]) == 5
        label = client.post(
            "/feedback",
            json={
                "prediction_id": answers[0].json()["prediction_id"],
                "is_fraud": True,
            },
            headers=headers,
        )
        assert label.status_code == 200, label.text
        repeat = client.post("/predict/explain", json=more[0], headers=headers)
        assert repeat.status_code == 200, repeat.text
    for single, result in zip(singles, together, strict=True):
        assert result.transaction_id == single["transaction_id"]
        assert result.fraud_score == pytest.approx(single["fraud_score"], abs=1e-7)
        assert result.decision == single["decision"]
        assert [r.feature for r in result.reason_codes] == [
            r["feature"] for r in single["reason_codes"]
        ]
        assert result.latency_ms > 0


def test_explain_contributions_sum_to_the_logit(
    service: tuple[TestClient, dict[str, str]], model_world: ModelWorld
) -> None:
    client, headers = service
    txn = transaction(model_world, 12)
    response = client.post("/predict/explain", json=txn, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    contributions = body["contributions"]
    assert {c["feature"] for c in contributions} == set(model_world.spec.features)
    total = body["base_value"] + sum(c["contribution"] for c in contributions)
    assert total == pytest.approx(body["logit"], abs=1e-6)
    p = body["fraud_score"]
    assert body["logit"] == pytest.approx(math.log(p / (1 - p)), abs=1e-3)
    assert body["from_history"] is False
    # Explaining changed nothing; after scoring, the scored features are explained.
    scored = client.post("/predict", json=txn, headers=headers).json()
    again = client.post("/predict/explain", json=txn, headers=headers).json()
    assert again["from_history"] is True
    assert again["fraud_score"] == pytest.approx(scored["fraud_score"], abs=1e-7)
    assert again["contributions"] == contributions


def _engine() -> Any:
    from serving.gateway import ENGINES

    return ENGINES.engine


def test_hot_swap_under_load(
    service_either_way: tuple[TestClient, dict[str, str]],
    model_world: ModelWorld,
) -> None:
    client, headers = service_either_way
    old = champion_version(model_world)
    statuses: list[int] = []
    versions: list[str] = []
    # (sent, received, version) of every answer, for the order check below.
    answers: list[tuple[float, float, str]] = []
    stop = threading.Event()

    def fire() -> None:
        i = 100
        while not stop.is_set():
            sent = time.monotonic()
            response = client.post("/predict", json=transaction(model_world, i), headers=headers)
            statuses.append(response.status_code)
            if response.status_code == 200:
                version = response.json()["model_version"]
                versions.append(version)
                answers.append((sent, time.monotonic(), version))
            i += 1

    workers = [threading.Thread(target=fire) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.5)
        new = model_world.register()
        wait_for(client, lambda b: (b.get("model") or {}).get("version") == new)
        seen_after = len(versions)
        deadline = time.time() + 10
        while len(versions) < seen_after + 20 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    assert statuses and set(statuses) == {200}, f"failed requests during the swap: {statuses}"
    assert set(versions) <= {old, new} and old in versions
    assert versions[-1] == new
    # Once the new version answered, no request sent afterwards got the old one (answers
    # from two threads are appended in the order they arrive, not the order they were
    # scored, so the check is on send and receive times).
    first_new = min(received for _, received, version in answers if version == new)
    late_old = [a for a in answers if a[2] == old and a[0] > first_new]
    assert not late_old, late_old


def test_corrupt_artifact_is_refused(
    service: tuple[TestClient, dict[str, str]], model_world: ModelWorld
) -> None:
    client, headers = service
    good = champion_version(model_world)
    bad = model_world.register(tamper=True)
    try:
        body = wait_for(client, lambda b: bad in b.get("refused_versions", {}))
        assert "sha256" in body["refused_versions"][bad]
        assert body["ready"] and body["model"]["version"] == good
        response = client.post("/predict", json=transaction(model_world, 13), headers=headers)
        assert response.status_code == 200 and response.json()["model_version"] == good
        engine = _engine()
        assert not (engine.champion.cache_root / bad).exists()
    finally:
        Registry(model_world.tracking_uri, MODEL_NAME, model_world.platform_db_url).set_alias(
            CHAMPION, good, "undo corrupt test", "pytest"
        )


def test_restart_from_cache_confirms_the_champion_before_it_is_ready(
    model_world: ModelWorld, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """A restart takes its model from the cache but looks at the registry before startup
    ends, so no registry work competes with requests once the service is ready."""
    home = tmp_path / "home"
    with running(model_world, home, clean_env) as (client, _):
        wait_for(client, lambda b: b["ready"] and registry_checked(b))
    assert (home / "serving" / "cache" / MODEL_NAME).is_dir()
    with running(model_world, home, clean_env) as (client, headers):
        body = client.get("/readyz").json()  # the first answer, no waiting
        assert body["ready"] and registry_checked(body)
        assert body["model"]["source"] == "registry"
        assert body["registry"]["reachable"] is True
        response = client.post("/predict", json=transaction(model_world, 16), headers=headers)
        assert response.status_code == 200, response.text


def test_mlflow_unreachable(
    model_world: ModelWorld, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    with running(model_world, home, clean_env) as (client, _):
        wait_for(client, lambda b: b["ready"] and registry_checked(b))
    # Nothing listens on this port: connections are refused at once.
    unreachable = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    # With a cache: ready on the cached champion, and /readyz says MLflow is unreachable.
    with running(model_world, home, clean_env, **unreachable) as (client, headers):
        body = wait_for(client, registry_checked)
        assert client.get("/readyz").status_code == 200
        assert body["model"]["source"] == "cache" and body["registry"]["reachable"] is False
        assert "unreachable" in body["reason"] and "cached" in body["reason"]
        response = client.post("/predict", json=transaction(model_world, 14), headers=headers)
        assert response.status_code == 200, response.text
    # Without a cache: not ready, with the reason, and scoring answers 503.
    with running(model_world, tmp_path / "empty", clean_env, **unreachable) as (client, headers):
        body = wait_for(client, registry_checked)
        assert client.get("/readyz").status_code == 503 and body["ready"] is False
        assert "unreachable" in body["reason"] and "no cached champion" in body["reason"]
        error = assert_error(
            client.post("/predict", json=transaction(model_world, 15), headers=headers),
            503,
            "model_unavailable",
        )
        assert "unreachable" in error["message"]
        assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("engine_thread", ["0", "1"], ids=["on-the-loop", "engine-thread"])
def test_prediction_log_is_flushed_on_shutdown(
    model_world: ModelWorld, tmp_path: Path, clean_env: pytest.MonkeyPatch, engine_thread: str
) -> None:
    home = tmp_path / "home"
    sent = []
    with running(model_world, home, clean_env, FRAUD_ENGINE_THREAD=engine_thread) as (
        client,
        headers,
    ):
        wait_for(client, lambda b: b["ready"])
        _engine().log.flush_interval_s = 3600  # nothing is written until shutdown
        for i in range(25):
            body = transaction(model_world, 200 + i, gender="F", age=37.0)
            sent.append(client.post("/predict", json=body, headers=headers).json())
        batch = [transaction(model_world, 300 + i) for i in range(5)]
        client.post("/predict/batch", json={"transactions": batch}, headers=headers)
    engine = sa.create_engine(f"sqlite:///{home / 'platform.db'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM prediction_log")).mappings().all()
    assert len(rows) == 30
    logged = {r["prediction_id"]: r for r in rows}
    for result in sent:
        row = logged[result["prediction_id"]]
        assert row["fraud_score"] == pytest.approx(result["fraud_score"])
        assert row["decision"] == result["decision"]
        assert row["age_band"] == "30-39"
        features = json.loads(row["features"])
        assert list(features) == list(model_world.spec.features)
        assert np.isfinite(list(features.values())).all()
    assert not {"gender", "age"} & set(rows[0].keys())


def test_bentoml_request_pipeline_answers_alike(
    model_world: ModelWorld, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """With FRAUD_DIRECT_ANSWERS=0 every request goes through BentoML's own pipeline to the
    API methods; the answers and the error format are the same as the gateway's."""
    with running(model_world, tmp_path / "home", clean_env, FRAUD_DIRECT_ANSWERS="0") as (
        client,
        headers,
    ):
        wait_for(client, lambda b: b["ready"])
        body = transaction(model_world, 900)
        first = client.post("/predict", json=body, headers=headers)
        assert first.status_code == 200, first.text
        scored = first.json()
        assert scored["decision"] in ("approve", "review", "decline")
        assert len(scored["reason_codes"]) <= 3
        again = client.post("/predict", json=body, headers=headers).json()
        assert again["prediction_id"] == scored["prediction_id"]
        error = assert_error(
            client.post("/predict", json={**body, "amount": -1}, headers=headers), 422
        )
        assert [d["field"] for d in error["details"]] == ["amount"]
        assert_error(
            client.post(
                "/predict", content=b"{", headers={**headers, "content-type": "application/json"}
            ),
            400,
            "invalid_json",
        )
        assert_error(client.post("/predict", json=body), 401, "missing_api_key")
        batch = client.post(
            "/predict/batch",
            json={"transactions": [transaction(model_world, 901), transaction(model_world, 902)]},
            headers=headers,
        )
        assert batch.status_code == 200 and len(batch.json()["results"]) == 2
        explained = client.post("/predict/explain", json=body, headers=headers)
        assert explained.status_code == 200 and explained.json()["from_history"]
        unknown = {"prediction_id": str(uuid.uuid4()), "is_fraud": True}
        assert_error(client.post("/feedback", json=unknown, headers=headers), 404)
