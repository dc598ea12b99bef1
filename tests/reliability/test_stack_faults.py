"""Load and faults against the native stack: two scoring replicas on Redis and PostgreSQL.

* 60 s of load at 16 connections: zero errors, memory growth under 10% after warm-up, and
  exactly one prediction log row per 200 response.
* A new champion promoted during load: zero failed requests, each response names exactly
  one version, and once a replica answers with the new version it never goes back.
* `kill -9` of a scoring worker under load: it is restarted, and only the requests in flight
  fail (counted).
* PostgreSQL (prediction log, platform database, MLflow's and Dagster's storage) stopped
  for 15 s under load: every request still answered 200, and once it is back the prediction
  log holds exactly one row per answer.

The longer run is `benchmarks/load_test.py --seconds 600`; figures in docs/reliability.md.
"""

import json
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
import pytest

from fraud_assets.core.registry import CHAMPION, Registry
from fraud_pipelines.stack import SeedResult, Stack

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from load_test import run_load, worker_pids

# One worker runs every test of the shared native stack, in order (pytest -n 2 --dist loadgroup).
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("native_stack")]

CONNECTIONS = 16
LOAD_SECONDS = 60
FIELDS = ("user_id", "merchant_id", "merchant_category", "amount", "currency", "device_id",
          "device_type", "channel", "country")  # fmt: skip


def payments(stack: Stack, count: int = 2000) -> list[dict[str, Any]]:
    """Recent-looking payments drawn from the stack's sample data (ids get a unique suffix)."""
    source = pd.read_parquet(stack.home / "raw" / "synthetic.parquet", columns=list(FIELDS))
    start = datetime.now(UTC) - timedelta(hours=2)
    out = []
    for i, row in enumerate(source.tail(count).to_dict("records")):
        out.append(
            {
                **{k: float(v) if k == "amount" else str(v) for k, v in row.items()},
                "transaction_id": f"load-{i}",
                "timestamp": (start + timedelta(seconds=3 * i)).isoformat(),
            }
        )
    return out


def test_sustained_load_loses_nothing(native_stack: tuple[Stack, SeedResult]) -> None:
    stack, seed = native_stack
    result = run_load(
        stack.scoring_urls[0], seed.api_key, stack.platform_db_url, payments(stack),
        LOAD_SECONDS, CONNECTIONS,
    )  # fmt: skip
    print(json.dumps(result))  # noqa: T201 - the figures of docs/reliability.md
    assert result["requests"] > 0
    assert result["non_200"] == 0 and result["socket_errors"] == 0, result
    assert result["logged_rows"] == result["ok"], result
    assert result["rss_growth_pct"] < 10.0, result


def test_promotion_during_load(native_stack: tuple[Stack, SeedResult]) -> None:
    stack, seed = native_stack
    mlflow.set_tracking_uri(stack.mlflow_url)
    registry = Registry(stack.mlflow_url, "fraud_detector", stack.platform_db_url)
    old = registry.alias(CHAMPION)
    assert old is not None
    # The same model, registered again as a new version: what a promotion looks like.
    source = registry.client.get_model_version("fraud_detector", old.version)
    created = registry.client.create_model_version(
        "fraud_detector",
        source.source,
        run_id=source.run_id,
        tags=dict(source.tags),
        model_id=source.model_id or source.source.removeprefix("models:/"),
    )
    new = str(created.version)
    bodies = payments(stack, 400)
    seen: dict[int, list[str]] = {i: [] for i in range(len(stack.scoring_urls))}
    failures: list[str] = []
    stop = threading.Event()

    def client_loop(replica: int, offset: int) -> None:
        url = stack.scoring_urls[replica]
        with httpx.Client(base_url=url, headers={"X-API-Key": seed.api_key}, timeout=30) as c:
            n = 0
            while not stop.is_set():
                body = dict(bodies[(offset + n) % len(bodies)])
                body["transaction_id"] = f"promo-{replica}-{offset}-{n}-{time.time_ns()}"
                n += 1
                try:
                    answer = c.post("/predict", json=body)
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code} {answer.text[:200]}")
                    continue
                seen[replica].append(answer.json()["model_version"])

    threads = [
        threading.Thread(target=client_loop, args=(r, k), daemon=True)
        for r in range(len(stack.scoring_urls))
        for k in range(4)
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(3)
        registry.set_alias(CHAMPION, new, "promotion under load", "pytest")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if all(v and v[-1] == new for v in seen.values()):
                break
            time.sleep(0.5)
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not failures, failures[:5]
    for versions in seen.values():
        assert versions and set(versions) <= {old.version, new}
        assert versions[-1] == new
    total = sum(len(v) for v in seen.values())
    print(f"promotion under load: {total} requests, 0 failed, v{old.version} -> v{new}")  # noqa: T201


def test_worker_killed_under_load(native_stack: tuple[Stack, SeedResult]) -> None:
    stack, seed = native_stack
    url = stack.scoring_urls[-1]
    port = int(url.rsplit(":", 1)[1])
    before = worker_pids(port)
    result = run_load(
        url, seed.api_key, stack.platform_db_url, payments(stack), 20, CONNECTIONS,
        kill_worker_at=6, timeout_s=60,
    )  # fmt: skip
    print(json.dumps(result))  # noqa: T201
    failed = int(result["non_200"]) + int(result["socket_errors"])
    assert failed <= CONNECTIONS, result  # at most the requests in flight
    # Every answered payment is logged: the killed worker's journal is delivered by the
    # worker that replaces it. A payment in flight may have been scored and journaled
    # before the kill cut its answer off, so at most `failed` rows more than answers.
    assert result["ok"] <= result["logged_rows"] <= result["ok"] + failed, result
    assert result["killed_worker"]["pid"] in before  # type: ignore[index]
    after = result["workers_after"]
    assert len(after) == len(before) and result["killed_worker"]["pid"] not in after, result  # type: ignore[index,operator]
    health = httpx.get(f"{url}/readyz", timeout=30)
    assert health.status_code == 200


def test_postgres_down_under_load_loses_no_prediction(
    native_stack: tuple[Stack, SeedResult],
) -> None:
    stack, seed = native_stack
    result = run_load(
        stack.scoring_urls[0], seed.api_key, stack.platform_db_url, payments(stack), 40,
        CONNECTIONS, faults=[(8.0, stack.stop_postgres), (23.0, stack.start_postgres)],
    )  # fmt: skip
    print(json.dumps(result))  # noqa: T201 - the figures of docs/reliability.md
    assert len(result["faults_at_s"]) == 2, result  # type: ignore[arg-type]
    assert result["non_200"] == 0 and result["socket_errors"] == 0, result
    assert result["logged_rows"] == result["ok"], result
    assert httpx.get(f"{stack.scoring_urls[0]}/readyz", timeout=30).status_code == 200
