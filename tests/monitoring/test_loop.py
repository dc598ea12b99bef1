"""The unattended loop end to end, in-process: drift -> sensor -> retraining -> promotion ->
the service picks the new champion up. Nothing is mocked: real Dagster instance, real MLflow
store, the service's own scoring engine and prediction log."""

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from fraud_assets import datasets, features, models, monitoring, serving_state
from fraud_assets.core.registry import CHAMPION, Registry
from fraud_pipelines.definitions import defs
from fraud_pipelines.sandbox import (
    ASSET_PARTITION_RANGE_END,
    ASSET_PARTITION_RANGE_START,
    Platform,
    make_platform,
)
from fraud_pipelines.sensors import drift_retraining_sensor
from serving.config import ServingSettings
from serving.engine import ScoringEngine
from serving.schemas import Transaction

ASSETS = dg.load_assets_from_modules([datasets, features, models, monitoring, serving_state])
ROWS, DAYS = 100_000, 40
SHIFT_DAY = 32  # drift_start_fraction 0.8 of 40 days
TRAINING_ASSETS = [
    "transactions",
    "feature_set",
    "fraud_model",
    "champion_model",
    "model_explanations",
    "model_card",
    "online_features",
]
# The loop test trains on a few weeks of 100k rows: bars that tell a model from noise, not the
# production defaults.
SMALL_DATA_BASELINES = {"average_precision": ">= 0.2", "auc_roc": ">= 0.75"}
MODEL_CONFIG = {"baselines": SMALL_DATA_BASELINES, "label_delay_days": 2.0}


def _run(platform: Platform, selection: list[str], first: str, last: str, config: dict) -> None:
    result = dg.materialize(
        ASSETS,
        selection=selection,
        instance=platform.instance,
        resources=platform.resources,
        run_config={"ops": config},
        tags={ASSET_PARTITION_RANGE_START: first, ASSET_PARTITION_RANGE_END: last},
        raise_on_error=False,
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure][-3:]


def _day(platform: Platform, offset: int) -> str:
    return (pd.Timestamp(platform.first_day) + pd.Timedelta(days=offset)).strftime("%Y-%m-%d")


def _engine(platform: Platform) -> ScoringEngine:
    env = {**platform.env(), "FRAUD_AUTH_DISABLED": "1", "FRAUD_MODEL_POLL_SECONDS": "3600"}
    engine = ScoringEngine(ServingSettings.from_env(env))
    assert engine.champion.wait_checked(60)
    return engine


def _score_period(platform: Platform, engine: ScoringEngine, first: str, last: str) -> int:
    """Score every transaction of [first, last] one at a time, as merchants would."""
    raw = pd.read_parquet(
        Path(platform.settings.dataset_config.parent / "raw" / "synthetic.parquet")
    )
    day = raw["timestamp"].dt.strftime("%Y-%m-%d")
    period = raw[(day >= first) & (day <= last)]
    fields = list(Transaction.model_fields)
    for row in period[[c for c in fields if c in period.columns]].to_dict("records"):
        row["timestamp"] = row["timestamp"].isoformat()
        engine.predict(Transaction.model_validate(row))
    return len(period)


def _loop(tmp: Path, drift: bool) -> tuple[Platform, dict, list[dg.RunRequest]]:
    # Chargebacks within about a day, so retraining a week into the shift can learn the new
    # pattern from labels known at its cutoff.
    platform = make_platform(tmp, rows=ROWS, days=DAYS, drift=drift, fraud_label_delay_days=1.0)
    early_end, late = _day(platform, SHIFT_DAY - 1), _day(platform, SHIFT_DAY)
    model_config = {"fraud_model": {"config": MODEL_CONFIG}}
    _run(platform, TRAINING_ASSETS, platform.first_day, early_end, model_config)
    registry = Registry(
        platform.settings.mlflow_tracking_uri,
        platform.settings.model_name,
        platform.settings.platform_db_url,
    )
    first_champion = registry.alias(CHAMPION)
    assert first_champion is not None

    engine = _engine(platform)
    try:
        scored = _score_period(platform, engine, late, platform.last_day)
        assert scored > 1000
    finally:
        engine.close()

    _run(
        platform,
        ["scored_predictions", "drift_report"],
        platform.first_day,
        platform.last_day,
        {},
    )
    drift_meta = platform.instance.get_latest_materialization_event(
        dg.AssetKey("drift_report")
    ).asset_materialization.metadata

    context = dg.build_sensor_context(instance=platform.instance, definitions=defs)
    first = drift_retraining_sensor(context)
    again = dg.build_sensor_context(
        instance=platform.instance, cursor=first.cursor, definitions=defs
    )
    second = drift_retraining_sensor(again)
    requests = list(first.run_requests or []) + list(second.run_requests or [])
    assert not second.run_requests
    return platform, {"drift": drift_meta, "registry": registry, "first": first_champion}, requests


def test_critical_drift_retrains_promotes_and_reaches_serving(tmp_path: Path) -> None:
    """The loop a fraud team relies on while nobody watches."""
    platform, state, requests = _loop(tmp_path, drift=True)
    assert state["drift"]["status"].value == "CRITICAL"
    assert len(requests) == 1
    request = requests[0]
    assert request.tags["fraud/retrain_trigger"] == "drift_report CRITICAL"
    assert request.run_key.startswith("drift_report:")

    _run(
        platform,
        ["transactions"],
        _day(platform, SHIFT_DAY),
        platform.last_day,
        {"transactions": {"config": {"merge": True}}},
    )
    _run(
        platform,
        TRAINING_ASSETS[1:-1],
        platform.first_day,
        platform.last_day,
        {
            "fraud_model": {"config": {"baselines": SMALL_DATA_BASELINES, "recent_days": 7.0}},
            "champion_model": {"config": {"auto_promote": True}},
        },
    )
    registry: Registry = state["registry"]
    new_champion = registry.alias(CHAMPION)
    assert new_champion.version != state["first"].version

    engine = _engine(platform)
    try:
        assert engine.champion.current.version == new_champion.version
    finally:
        engine.close()


def test_no_drift_means_no_alarm_and_no_retraining(tmp_path: Path) -> None:
    """Without a shift nothing may go CRITICAL: false alarms retrain for nothing."""
    _, state, requests = _loop(tmp_path, drift=False)
    assert state["drift"]["status"].value != "CRITICAL", state["drift"]["worst_features"].value
    assert requests == []


pytestmark = pytest.mark.timeout(600)
