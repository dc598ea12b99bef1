"""The native stack for real: PostgreSQL, Redis, the MLflow server, Dagster's webserver, daemon
and code server, and two scoring replicas, all started by `fraud_pipelines.stack`.

One stack serves every test of this module, in order: it is seeded once (a small synthetic
dataset, the whole graph materialized through the daemon), then scored through both
replicas, stopped and started again, and finally monitored (the drift report the scored
payments produce is CRITICAL, which starts a retraining run: that is left for last).
"""

import json
import os
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from fraud_pipelines.stack import SeedResult, Stack, StackError

# One worker runs every test of the shared native stack, in order (pytest -n 2 --dist loadgroup).
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("native_stack")]

VELOCITY_PAYMENTS = 6
DRIFT_PAYMENTS = 300


@pytest.fixture(scope="module")
def seeded(native_stack: tuple[Stack, SeedResult]) -> tuple[Stack, SeedResult]:
    """The session's seeded native stack (tests/conftest.py)."""
    return native_stack


def _scalar(url: str, sql: str, **params: Any) -> Any:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()
    finally:
        engine.dispose()


def _rows(url: str, sql: str) -> set[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {tuple(row) for row in conn.execute(sa.text(sql))}
    finally:
        engine.dispose()


def _payment(user: str, at: datetime, n: int, **fields: Any) -> dict[str, Any]:
    return {
        "transaction_id": f"{user}-{n}",
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "user_id": user,
        "merchant_id": "m00042",
        "merchant_category": "electronics",
        "amount": 20.0 + n,
        "currency": "EUR",
        "device_id": f"{user}-phone",
        "device_type": "mobile",
        "channel": "app",
        "country": "DE",
        **fields,
    }


def _wait_for(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_graph_runs_are_stored_in_postgres(seeded: tuple[Stack, SeedResult]) -> None:
    """Dagster's run storage is PostgreSQL: the seeding run is a row of its `runs` table."""
    stack, result = seeded
    dagster_db = stack.database_url("dagster")
    status = _scalar(dagster_db, "SELECT status FROM runs WHERE run_id = :id", id=result.run_id)
    assert status == "SUCCESS"
    materialized = _scalar(
        stack.database_url("dagster"),
        "SELECT count(DISTINCT asset_key) FROM event_logs "
        "WHERE run_id = :id AND dagster_event_type = 'ASSET_MATERIALIZATION'",
        id=result.run_id,
    )
    assert materialized >= 5


def test_model_is_registered_in_mlflow_with_its_registry_in_postgres(
    seeded: tuple[Stack, SeedResult],
) -> None:
    """The tracking server holds the model, and its registry tables are in PostgreSQL."""
    stack, _ = seeded
    mlflow_db = stack.database_url("mlflow")
    assert _scalar(mlflow_db, "SELECT count(*) FROM model_versions WHERE name = 'fraud_detector'")
    champion = _scalar(
        mlflow_db,
        "SELECT version FROM registered_model_aliases "
        "WHERE name = 'fraud_detector' AND alias = 'champion'",
    )
    assert champion is not None
    with httpx.Client(base_url=stack.mlflow_url, timeout=30) as client:
        found = client.get(
            "/api/2.0/mlflow/registered-models/alias",
            params={"name": "fraud_detector", "alias": "champion"},
        )
    assert found.status_code == 200
    assert found.json()["model_version"]["version"] == str(champion)
    for url in stack.scoring_urls:
        ready = httpx.get(f"{url}/readyz", timeout=10).json()
        assert str(champion) in str(ready)


def test_replicas_share_velocity_features_through_redis(seeded: tuple[Stack, SeedResult]) -> None:
    """A customer's payments count towards their velocity whichever replica scored them."""
    stack, result = seeded
    user = f"u-stack-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC) - timedelta(minutes=30)
    headers = {"X-API-Key": result.api_key}
    replicas = [httpx.Client(base_url=u, headers=headers, timeout=30) for u in stack.scoring_urls]
    try:
        for n in range(VELOCITY_PAYMENTS):
            replica = replicas[n % len(replicas)]
            answer = replica.post("/predict", json=_payment(user, start + timedelta(minutes=n), n))
            assert answer.status_code == 200, answer.text
        explained = replicas[0].post(
            "/predict/explain",
            json=_payment(user, start + timedelta(minutes=VELOCITY_PAYMENTS), VELOCITY_PAYMENTS),
        )
        assert explained.status_code == 200, explained.text
        worker_pids = [
            set(re.findall(r'fraud_model_version_info\{[^}]*pid="(\d+)"', c.get("/metrics").text))
            for c in replicas
        ]
    finally:
        for client in replicas:
            client.close()
    values = {c["feature"]: c["value"] for c in explained.json()["contributions"]}
    assert values["user_txn_count_1h"] == VELOCITY_PAYMENTS
    assert values["user_prior_txn_count"] == VELOCITY_PAYMENTS
    # Each replica's /metrics reports its own workers only, as separate containers would.
    assert all(worker_pids) and not worker_pids[0] & worker_pids[1], worker_pids


def test_prediction_log_lands_in_postgres(seeded: tuple[Stack, SeedResult]) -> None:
    """Both replicas write their predictions, with the features they saw, to one table."""
    stack, _ = seeded
    logged = _wait_for(
        lambda: (
            _scalar(
                stack.platform_db_url,
                "SELECT count(*) FROM prediction_log WHERE user_id LIKE 'u-stack-%'",
            )
            >= VELOCITY_PAYMENTS
        )
    )
    assert logged
    last = _scalar(
        stack.platform_db_url,
        "SELECT features FROM prediction_log WHERE user_id LIKE 'u-stack-%' "
        "ORDER BY transaction_ts DESC LIMIT 1",
    )
    assert json.loads(last)["user_txn_count_1h"] == 5


def test_restart_keeps_runs_models_alerts_and_predictions(
    seeded: tuple[Stack, SeedResult],
) -> None:
    """`down` then `up` on the same folder: nothing that was stored is lost.

    Schedules and sensors keep running, so the stack may add runs or alerts of its own; what
    was there before must all still be there.
    """
    from fraud_assets.core.alerts import AlertStore

    stack, result = seeded
    AlertStore(stack.platform_db_url).raise_alert(
        "PIPELINE", "WARNING", "stack restart test", details={"run_id": result.run_id}
    )
    queries = {
        "runs": (stack.database_url("dagster"), "SELECT run_id, status FROM runs"),
        "model versions": (
            stack.database_url("mlflow"),
            "SELECT name, version FROM model_versions",
        ),
        "alerts": (stack.platform_db_url, "SELECT id, title FROM alerts"),
        "predictions": (
            stack.platform_db_url,
            "SELECT prediction_id, fraud_score FROM prediction_log",
        ),
    }
    before = {name: _rows(url, sql) for name, (url, sql) in queries.items()}
    assert all(before.values()), before
    finished_runs = {row for row in before["runs"] if row[1] in ("SUCCESS", "FAILURE")}

    stack.down()
    assert not any(row["pid"] for row in stack.status().values())
    with pytest.raises(StackError):
        stack.wait_ready(timeout=1)

    stack.up()
    stack.wait_ready(timeout=300)
    after = {name: _rows(url, sql) for name, (url, sql) in queries.items()}
    assert finished_runs <= after["runs"]
    assert {row[0] for row in before["runs"]} <= {row[0] for row in after["runs"]}
    for name in ("model versions", "alerts", "predictions"):
        assert before[name] <= after[name], name
    assert stack.status()["dagster-daemon"]["healthy"]


def test_drift_report_materializes_from_scored_payments(seeded: tuple[Stack, SeedResult]) -> None:
    """Payments scored by the replicas feed the monitoring assets through the prediction log."""
    stack, result = seeded
    replayed = stack.replay(result.api_key, DRIFT_PAYMENTS, prefix="drift")
    assert len(replayed) == DRIFT_PAYMENTS
    run_id = stack.materialize("drift_job")
    drift_events = _scalar(
        stack.database_url("dagster"),
        "SELECT count(*) FROM event_logs WHERE run_id = :id "
        "AND dagster_event_type = 'ASSET_MATERIALIZATION' AND asset_key LIKE '%drift_report%'",
        id=run_id,
    )
    assert drift_events == 1


def _script(name: str) -> Any:
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[2] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_uis_in_a_real_browser(seeded: tuple[Stack, SeedResult]) -> None:
    """Headless Chromium loads the asset graph, the drift report's metadata table (with the
    README's screenshot script) and the champion on MLflow's model page. Screenshots land in
    build/test-artifacts/ui/."""
    if not Path(os.environ.get("CHROMIUM", "/usr/bin/chromium")).exists():
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    stack, _ = seeded
    out = Path(os.environ.get("FRAUD_TEST_ARTIFACTS", "build/test-artifacts")) / "ui"
    ui = _script("ui_snapshots")
    snapshots = ui.take(stack.dagster_url, stack.mlflow_url, out, only=("graph", "mlflow"))
    assert [s.path.name for s in snapshots] == ["dagster_graph.png", "mlflow_model.png"]
    for snapshot in snapshots:
        assert snapshot.path.stat().st_size > 20_000, snapshot.path
    assert "champion" in snapshots[1].text

    drift = _script("drift_screenshot").screenshot_running(
        stack.dagster_url, out / "drift_report.png", out / "worst_features.png"
    )
    status = drift.verified[0].removeprefix("status ")
    assert status in ("OK", "WARNING", "CRITICAL"), drift.verified
    assert f"Drift: {status}" in drift.text
    for entry in ("status", "max_psi", "worst_features", "psi/amount"):
        assert entry in drift.text, f"{entry} not on the page"
    assert any(v.startswith("worst_features table") for v in drift.verified)
    for picture in (out / "drift_report.png", out / "worst_features.png"):
        assert picture.stat().st_size > 50_000, picture
