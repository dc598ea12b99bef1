"""Sensors: reactions to events rather than to the clock.

- `drift_retraining_sensor`: a CRITICAL drift or performance report starts retraining, once
  per report, never twice within the cooldown.
- `landing_sensor`: transaction files dropped into FRAUD_HOME/landing are validated, then
  ingested or quarantined with a reason file beside them.
- `pipeline_failure_alert_sensor`: every failed run becomes a PIPELINE alert.
"""

import json
import os
import shutil
import time
from pathlib import Path

import dagster as dg

from fraud_assets.core.drift import CRITICAL as ALERT_CRITICAL
from fraud_assets.core.ingest import DatasetError, ingest
from fraud_pipelines.jobs import ingestion_job, retraining_job
from fraud_pipelines.resources import AlertsResource, DatasetSource
from fraud_pipelines.sandbox import ASSET_PARTITION_RANGE_END, ASSET_PARTITION_RANGE_START
from fraud_pipelines.settings import Settings

WATCHED_REPORTS = ("drift_report", "performance_report")
TRIGGER_TAG = "fraud/retrain_trigger"
LANDING_SUFFIXES = (".csv", ".parquet", ".pq", ".csv.gz")
# How often the daemon evaluates the drift sensor. Tests of the real daemon lower it to a few
# seconds; a deployment has no reason to.
DRIFT_SENSOR_INTERVAL_ENV = "FRAUD_DRIFT_SENSOR_INTERVAL_SECONDS"


def _report_values(metadata: dict) -> dict[str, str]:
    """The report's headline numbers, as run tags (strings, short)."""
    keep = ("status", "max_psi", "n_critical", "ap_relative_drop", "recall_relative_drop")
    tags = {}
    for key in keep:
        if key in metadata:
            value = metadata[key].value
            tags[f"fraud/{key}"] = f"{value:.4g}" if isinstance(value, float) else str(value)
    return tags


def _last_retraining_start(instance: dg.DagsterInstance) -> float | None:
    records = instance.get_run_records(filters=dg.RunsFilter(job_name=retraining_job.name), limit=1)
    return records[0].create_timestamp.timestamp() if records else None


@dg.sensor(
    job=retraining_job,
    minimum_interval_seconds=int(os.environ.get(DRIFT_SENSOR_INTERVAL_ENV, "60")),
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def drift_retraining_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """Starts `retraining_job` when `drift_report` or `performance_report` goes CRITICAL.

    Each CRITICAL materialization requests one run whose run key names that report, so
    evaluating again, or after a daemon restart, never starts a second run for it. A report
    that arrives within the cooldown (FRAUD_RETRAIN_COOLDOWN_HOURS, default 6) of the last
    retraining is skipped and recorded, to prevent retraining storms.
    """
    cooldown_s = Settings.from_env().retrain_cooldown_hours * 3600
    cursor = json.loads(context.cursor) if context.cursor else {}
    requests: list[dg.RunRequest] = []
    skipped: list[str] = []
    last_start = _last_retraining_start(context.instance)
    for name in WATCHED_REPORTS:
        result = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(name), after_storage_id=cursor.get(name)),
            limit=100,
            ascending=True,
        )
        for record in result.records:
            cursor[name] = record.storage_id
            metadata = record.asset_materialization.metadata
            status = metadata.get("status")
            if status is None or status.value != ALERT_CRITICAL:
                continue
            report_time = record.timestamp
            if last_start is not None and report_time - last_start < cooldown_s:
                skipped.append(f"{name}#{record.storage_id} (cooldown)")
                continue
            requests.append(
                dg.RunRequest(
                    run_key=f"{name}:{record.storage_id}",
                    tags={
                        TRIGGER_TAG: f"{name} CRITICAL",
                        "fraud/report_storage_id": str(record.storage_id),
                        **_report_values(metadata),
                    },
                )
            )
            last_start = report_time
    if not requests:
        reason = "no new CRITICAL report"
        if skipped:
            reason = f"CRITICAL within cooldown: {', '.join(skipped)}"
        return dg.SensorResult(skip_reason=reason, cursor=json.dumps(cursor))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor))


def quarantine(file: Path, quarantine_dir: Path, reason: str) -> Path:
    """Move a file aside and write why beside it, so nothing is lost or silently skipped."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    target = quarantine_dir / file.name
    shutil.move(str(file), target)
    target.with_name(target.name + ".reason.txt").write_text(reason + "\n")
    return target


@dg.sensor(
    job=ingestion_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def landing_sensor(context: dg.SensorEvaluationContext, dataset: DatasetSource) -> dg.SensorResult:
    """Ingests transaction files dropped into FRAUD_HOME/landing/.

    Each file is read with the dataset config's column mapping. A file that cannot be read,
    or whose every row is invalid, moves to landing/quarantine/ with a `.reason.txt` beside
    it. A good file moves to landing/accepted/ and one ingestion run merges its days into
    `transactions` (rows already ingested are kept; its own invalid rows go to the rejects
    file with their reasons).
    """
    settings = Settings.from_env()
    landing = settings.landing_dir
    landing.mkdir(parents=True, exist_ok=True)
    accepted = landing / "accepted"
    requests: list[dg.RunRequest] = []
    for file in sorted(p for p in landing.iterdir() if p.is_file()):
        if not file.name.endswith(LANDING_SUFFIXES):
            continue
        if time.time() - file.stat().st_mtime < 5:
            continue  # still being written
        config = dataset.load().model_copy(update={"path": str(file), "format": "auto"})
        try:
            result = ingest(config)
        except DatasetError as exc:
            quarantine(file, landing / "quarantine", str(exc))
            context.log.warning(f"quarantined {file.name}: {exc}")
            continue
        if result.valid.empty:
            reasons = result.rejects["reject_reason"].value_counts().head(10).to_dict()
            quarantine(file, landing / "quarantine", f"no valid rows; reasons: {reasons}")
            continue
        accepted.mkdir(exist_ok=True)
        target = accepted / file.name
        shutil.move(str(file), target)
        yaml_path = target.with_name(target.name + ".yaml")
        yaml_path.write_text(
            json.dumps({**config.model_dump(), "path": str(target), "name": file.stem})
        )
        days = result.valid["timestamp"].dt.strftime("%Y-%m-%d")
        requests.append(
            dg.RunRequest(
                run_key=f"landing:{target.name}:{target.stat().st_mtime_ns}",
                run_config={
                    "ops": {
                        "transactions": {
                            "config": {"dataset_config": str(yaml_path), "merge": True}
                        }
                    }
                },
                tags={
                    ASSET_PARTITION_RANGE_START: days.min(),
                    ASSET_PARTITION_RANGE_END: days.max(),
                    "fraud/landed_file": target.name,
                },
            )
        )
    if not requests:
        return dg.SensorResult(skip_reason="no new files in the landing folder")
    return dg.SensorResult(run_requests=requests)


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING, monitor_all_code_locations=False
)
def pipeline_failure_alert_sensor(
    context: dg.RunFailureSensorContext, alerts: AlertsResource
) -> None:
    """Every failed run raises a PIPELINE alert (repeats of an open alert are merged)."""
    run = context.dagster_run
    alerts.store().raise_alert(
        "PIPELINE",
        ALERT_CRITICAL,
        f"Run of {run.job_name} failed",
        {
            "run_id": run.run_id,
            "job": run.job_name,
            "error": context.failure_event.message if context.failure_event else "",
        },
    )


ALL = [drift_retraining_sensor, landing_sensor, pipeline_failure_alert_sensor]
