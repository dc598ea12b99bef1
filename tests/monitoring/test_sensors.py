"""Sensors evaluated with real contexts: landing files, failures, retraining cooldown."""

import os
import time
from pathlib import Path

import dagster as dg
import pytest

from fraud_assets.core.alerts import AlertStore
from fraud_assets.core.synthetic import SyntheticConfig, generate
from fraud_pipelines.definitions import defs
from fraud_pipelines.resources import AlertsResource, DatasetSource
from fraud_pipelines.sensors import drift_retraining_sensor, landing_sensor


def _old(path: Path) -> Path:
    past = time.time() - 60
    os.utime(path, (past, past))
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FRAUD_HOME", str(tmp_path / "home"))
    config = tmp_path / "dataset.yaml"
    config.write_text(f"name: landing_test\npath: {tmp_path / 'unused.parquet'}\n")
    return tmp_path


def test_landing_sensor_ingests_good_files_and_quarantines_bad_ones(home: Path) -> None:
    """A malformed drop must be set aside with its reason, never block the good ones."""
    landing = home / "home" / "landing"
    landing.mkdir(parents=True)
    good = generate(SyntheticConfig(n_transactions=1000, days=7, seed=5))
    good.to_parquet(landing / "day.parquet")
    _old(landing / "day.parquet")
    (landing / "broken.csv").write_text("transaction_id,timestamp\n")
    _old(landing / "broken.csv")
    context = dg.build_sensor_context(
        resources={"dataset": DatasetSource(config_path=str(home / "dataset.yaml"))}
    )
    result = landing_sensor(context)
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    assert request.tags["dagster/asset_partition_range_start"] == "2026-06-01"
    assert request.tags["dagster/asset_partition_range_end"] == "2026-06-07"
    assert request.run_config["ops"]["transactions"]["config"]["merge"] is True
    assert (landing / "accepted" / "day.parquet").exists()
    reason = (landing / "quarantine" / "broken.csv.reason.txt").read_text()
    assert "broken.csv" in reason
    assert not (landing / "broken.csv").exists()


def test_drift_sensor_respects_the_cooldown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two CRITICAL reports within the cooldown start one retraining, not two."""
    monkeypatch.setenv("FRAUD_RETRAIN_COOLDOWN_HOURS", "6")
    instance = dg.DagsterInstance.local_temp(str(tmp_path))

    @dg.asset(name="drift_report")
    def report() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"status": "CRITICAL", "max_psi": 0.9})

    dg.materialize([report], instance=instance)
    first = drift_retraining_sensor(dg.build_sensor_context(instance=instance, definitions=defs))
    assert len(first.run_requests) == 1
    instance.create_run_for_job(
        defs.resolve_job_def("retraining_job"), run_config=first.run_requests[0].run_config
    )
    dg.materialize([report], instance=instance)
    second = drift_retraining_sensor(
        dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=defs)
    )
    assert not second.run_requests
    assert "cooldown" in second.skip_reason.skip_message


def test_failed_runs_raise_pipeline_alerts(tmp_path: Path) -> None:
    """A silent failure is the worst kind: every failed run must become an alert."""
    url = f"sqlite:///{tmp_path / 'platform.db'}"

    @dg.asset
    def doomed() -> None:
        raise RuntimeError("disk full")

    (tmp_path / "dagster").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster"))
    result = dg.materialize([doomed], instance=instance, raise_on_error=False)
    assert not result.success
    sensor = defs.resolve_sensor_def("pipeline_failure_alert_sensor")
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources={"alerts": AlertsResource(db_url=url)},
    ).for_run_failure()
    sensor(context)
    alerts = AlertStore(url).list()
    assert len(alerts) == 1
    assert alerts[0].type == "PIPELINE"
    assert result.dagster_run.run_id in str(alerts[0].details)
