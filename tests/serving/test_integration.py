"""`bentoml serve` for real: start the service as a process, call it over HTTP, stop it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
from serving_world import ModelWorld

from fraud_pipelines.process import bentoml_serve_command, free_port, running_server

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 240.0


@pytest.mark.integration
def test_bentoml_serve_scores_over_http(model_world: ModelWorld, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    platform_db = f"sqlite:///{home / 'platform.db'}"
    env = model_world.process_env(
        home, FRAUD_PLATFORM_DB_URL=platform_db, FRAUD_SERVING_WORKERS="1"
    )
    created = subprocess.run(
        [sys.executable, "-m", "serving.keys", "create", "integration"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = created.stdout.strip()
    assert key.startswith("fsk_")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (
        running_server(
            bentoml_serve_command(port),
            env,
            f"{base}/readyz",
            tmp_path / "serve.log",
            timeout=START_TIMEOUT,
            ready=lambda r: r.status_code == 200 and bool(r.json()["registry"]["last_checked"]),
            cwd=REPO,
        ),
        httpx.Client(base_url=base, timeout=10.0) as client,
    ):
        ready = client.get("/readyz")
        row = model_world.history.iloc[-1]
        payment = {
            "transaction_id": "integration-1",
            "timestamp": (row["timestamp"] + pd.Timedelta(seconds=60)).isoformat(),
            "user_id": row["user_id"],
            "merchant_id": row["merchant_id"],
            "amount": 42.0,
            "currency": "EUR",
            "country": "DE",
        }
        unauthorized = client.post("/predict", json=payment)
        assert unauthorized.status_code == 401
        assert unauthorized.json()["error"]["code"] == "missing_api_key"
        scored = client.post("/predict", json=payment, headers={"X-API-Key": key})
        assert scored.status_code == 200, scored.text
        body = scored.json()
        assert body["transaction_id"] == "integration-1"
        assert body["model_version"] == ready.json()["model"]["version"]
        bad = client.post("/predict", json={**payment, "amount": -5}, headers={"X-API-Key": key})
        assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "amount"
        metrics = client.get("/metrics").text
        for name in (
            "fraud_decisions_total",
            "fraud_model_version_info",
            # The gateway answers the API routes in front of BentoML: its own request series.
            'fraud_request_seconds_count{route="/predict",status="200"} 1.0',
            'fraud_request_seconds_count{route="/predict",status="422"} 1.0',
            'fraud_request_seconds_count{route="/predict",status="401"} 1.0',
            'fraud_rejected_requests_total{reason="missing_api_key"} 1.0',
            # BentoML's series remain for what BentoML answers (here /metrics itself).
            "bentoml_service_request_total",
        ):
            assert name in metrics, name
        assert client.get("/healthz").status_code == 200
    # The graceful stop wrote the prediction log.
    with sa.create_engine(platform_db).connect() as conn:
        logged = conn.execute(sa.text("SELECT transaction_id FROM prediction_log")).fetchall()
    assert logged == [("integration-1",)]
