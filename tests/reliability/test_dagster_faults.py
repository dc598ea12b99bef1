"""Dagster faults with real processes: a training run killed with SIGKILL at its worst moments,
and the drift sensor under a real `dagster-daemon` that is stopped and killed.

What must hold (issue 6): a rerun of a killed run completes, leaves no partial file and no
duplicate model version; and each CRITICAL report starts exactly one retraining, however often
the sensor is evaluated and however the daemon was stopped.
"""

import json
import logging
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import onnx
import pandas as pd
import pytest
from dagster_helpers import (
    BIN,
    code_server_command,
    dagster_home,
    kill_group,
    log_tail,
    materializations,
    materialize_command,
    paused_env,
    port_open,
    process_env,
    sensor_ticks,
    start,
    wait_for,
)
from mlflow import MlflowClient

from fraud_assets import datasets, features, models
from fraud_assets.core.registry import CHALLENGER, CHAMPION, Registry, sha256_file
from fraud_pipelines.process import free_port
from fraud_pipelines.sandbox import (
    ASSET_PARTITION_RANGE_END,
    ASSET_PARTITION_RANGE_START,
    Platform,
    make_platform,
)
from fraud_pipelines.sensors import TRIGGER_TAG, drift_retraining_sensor

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(900),
    pytest.mark.xdist_group("dagster_faults"),  # one worker builds the shared platform
]
log = logging.getLogger(__name__)

TRAINING_PATH = ["feature_set", "fraud_model", "champion_model"]
# Small and fast: the faults are about processes and stores, not about model quality.
MODEL_CONFIG = {"baselines": {}, "fairness_attributes": [], "n_estimators": 60}
RUN_CONFIG = json.dumps({"ops": {"fraud_model": {"config": MODEL_CONFIG}}})
RUN_TIMEOUT_S = 480


@pytest.fixture
def ingested(tmp_path: Path) -> Platform:
    """A platform whose transactions are ingested (in-process); the training path is not."""
    platform = make_platform(tmp_path / "platform", rows=20_000, days=20)
    result = dg.materialize(
        dg.load_assets_from_modules([datasets, features, models]),
        selection=["transactions"],
        instance=platform.instance,
        resources=platform.resources,
        tags={
            ASSET_PARTITION_RANGE_START: platform.first_day,
            ASSET_PARTITION_RANGE_END: platform.last_day,
        },
    )
    assert result.success
    return platform


def _registry(platform: Platform) -> Registry:
    s = platform.settings
    return Registry(s.mlflow_tracking_uri, s.model_name, s.platform_db_url)


def _client(platform: Platform) -> MlflowClient:
    """A client of this platform's tracking store and registry.

    The registry is named explicitly: without it MLflow takes the process-wide registry URI,
    which an earlier test in the same worker may have pointed at its own store.
    """
    uri = platform.settings.mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _versions(platform: Platform) -> list:
    client = _client(platform)
    found = client.search_model_versions(f"name = '{platform.settings.model_name}'")
    return sorted(found, key=lambda mv: int(mv.version))


def _new_run(instance: dg.DagsterInstance, known: set[str]) -> dg.DagsterRun:
    runs = [r for r in instance.get_runs() if r.run_id not in known]
    assert len(runs) == 1, [r.run_id for r in runs]
    return runs[0]


def _kill_at(
    platform: Platform, env: dict[str, str], point: str, work: Path
) -> tuple[dg.DagsterRun, float]:
    """Launch the training path, SIGKILL its process group at `point`; the run and the
    seconds it took to get there."""
    marker, output = work / f"paused_{point.replace(':', '_')}", work / "killed_run.log"
    known = {r.run_id for r in platform.instance.get_runs()}
    started = time.monotonic()
    process = start(
        materialize_command(TRAINING_PATH, RUN_CONFIG), paused_env(env, point, marker), output
    )
    try:
        wait_for(marker.exists, RUN_TIMEOUT_S, f"pause point {point}", process, output)
        reached = time.monotonic() - started
    finally:
        kill_group(process, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    return _new_run(platform.instance, known), reached


def _what_the_killed_run_left(work: Path) -> str:
    """The pause markers and the end of the killed run's log, for a failure message."""
    markers = {m.name: m.read_text().strip() for m in work.glob("paused_*")}
    return f"markers {markers}; killed run log:\n{log_tail(work / 'killed_run.log', 40)}"


def _rerun(platform: Platform, env: dict[str, str], work: Path) -> tuple[dg.DagsterRun, float]:
    """Run the training path again to the end; the run and how long it took."""
    output = work / "rerun.log"
    known = {r.run_id for r in platform.instance.get_runs()}
    started = time.monotonic()
    process = start(materialize_command(TRAINING_PATH, RUN_CONFIG), env, output)
    try:
        code = process.wait(RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill_group(process, signal.SIGKILL)
        raise
    assert code == 0, log_tail(output)
    return _new_run(platform.instance, known), time.monotonic() - started


def _assert_files_complete(lake: Path) -> int:
    """Every file the assets wrote is whole and readable, and no temporary file is left."""
    leftovers = [p for p in lake.rglob(".*") if ".tmp" in p.name or p.name.startswith(".native")]
    assert not leftovers, leftovers
    checked = 0
    for path in sorted(p for p in lake.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            assert len(pd.read_parquet(path)) > 0, path
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".onnx":
            onnx.checker.check_model(onnx.load(str(path)))
        checked += 1
    return checked


def _assert_rerun_clean(platform: Platform, killed: dg.DagsterRun, rerun: dg.DagsterRun) -> None:
    instance = platform.instance
    assert instance.get_run_by_id(killed.run_id).status != dg.DagsterRunStatus.SUCCESS
    assert instance.get_run_by_id(rerun.run_id).status == dg.DagsterRunStatus.SUCCESS
    for asset in TRAINING_PATH:
        assert materializations(instance, asset, rerun.run_id) == 1, asset
    assert materializations(instance, "fraud_model", killed.run_id) == 0
    lake = platform.settings.home / "data"
    checked = _assert_files_complete(lake)
    bundle = lake.joinpath(*models.BUNDLE)
    meta = instance.get_latest_materialization_event(
        dg.AssetKey("fraud_model")
    ).asset_materialization.metadata
    assert sha256_file(bundle / "model.onnx") == meta["onnx_sha256"].value
    assert (bundle / "version.txt").read_text() == meta["model_version"].value
    versions = _versions(platform)
    shas = [mv.tags.get("onnx_sha256") for mv in versions]
    assert len(set(shas)) == len(shas), "the same model is registered twice"
    registry = _registry(platform)
    assert registry.alias(CHALLENGER).version == meta["model_version"].value
    assert registry.alias(CHAMPION).version == meta["model_version"].value
    log.info(f"{checked} files whole and readable; runs {killed.run_id} / {rerun.run_id}")


def test_run_killed_while_feature_set_writes_reruns_cleanly(
    ingested: Platform, tmp_path: Path
) -> None:
    """SIGKILL after the new feature file is written but before it replaces the old one: the
    moment a non-atomic writer would leave a truncated Parquet file for the next reader."""
    platform = ingested
    env = process_env(platform, dagster_home(platform))
    features_dir = platform.settings.home / "data" / "features"
    killed, reached = _kill_at(platform, env, "replace:feature_set.parquet", tmp_path)

    assert list(features_dir.glob(".feature_set.*.tmp.parquet")), "kill missed the write"
    assert not (features_dir / "feature_set.parquet").exists()
    assert materializations(platform.instance, "feature_set", killed.run_id) == 0
    assert _versions(platform) == []

    rerun, took = _rerun(platform, env, tmp_path)
    _assert_rerun_clean(platform, killed, rerun)
    assert [str(mv.version) for mv in _versions(platform)] == ["1"]
    log.info(
        f"killed at replace:feature_set.parquet after {reached:.1f}s "
        f"(status {platform.instance.get_run_by_id(killed.run_id).status.value}); "
        f"rerun {took:.1f}s; model versions 0 -> 1"
    )


def test_run_killed_after_registering_its_model_adopts_that_version(
    ingested: Platform, tmp_path: Path
) -> None:
    """SIGKILL after MLflow registered the version but before the version was tagged or
    Dagster recorded the materialization: the rerun trains the same model (same sha256) and
    adopts that version instead of registering a duplicate."""
    platform = ingested
    env = process_env(platform, dagster_home(platform))
    killed, reached = _kill_at(platform, env, "fraud_model:registered", tmp_path)

    orphan = _versions(platform)
    seen = _what_the_killed_run_left(tmp_path)
    assert [str(mv.version) for mv in orphan] == ["1"], seen
    assert "onnx_sha256" not in orphan[0].tags, (orphan[0].tags, seen)
    client = _client(platform)
    assert client.get_run(orphan[0].run_id).data.tags["dagster_run_id"] == killed.run_id
    assert materializations(platform.instance, "feature_set", killed.run_id) == 1
    assert materializations(platform.instance, "fraud_model", killed.run_id) == 0

    rerun, took = _rerun(platform, env, tmp_path)
    _assert_rerun_clean(platform, killed, rerun)
    after = _versions(platform)
    assert [str(mv.version) for mv in after] == ["1"]
    assert after[0].tags["dagster_run_id"] == rerun.run_id
    assert client.get_run(after[0].run_id).info.status == "KILLED"
    log.info(
        f"killed at fraud_model:registered after {reached:.1f}s "
        f"(status {platform.instance.get_run_by_id(killed.run_id).status.value}); "
        f"rerun {took:.1f}s; model versions 1 -> 1 (adopted)"
    )


def _retraining_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(job_name="retraining_job")))


def _report(instance: dg.DagsterInstance, status: str) -> int:
    """Record a `drift_report` materialization with the headline metadata the real report
    carries; the storage id it got."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            "drift_report",
            metadata={"status": status, "max_psi": 0.42 if status == "CRITICAL" else 0.02},
        )
    )
    records = instance.fetch_materializations(dg.AssetKey("drift_report"), limit=1).records
    return records[0].storage_id


def test_drift_sensor_retrains_once_per_critical_report_across_daemon_restarts(
    tmp_path: Path,
) -> None:
    """The real daemon evaluates the drift sensor every 2 s and is stopped with SIGTERM, then
    killed with SIGKILL right after it requested a run: every CRITICAL report still has
    exactly one retraining run, and an OK report none. The cooldown is off, so only the run
    key and cursor stand between a report and a duplicate run. The run queue is paused, so
    the runs are counted as requested and never executed."""
    platform = make_platform(tmp_path / "platform", rows=2_000, days=7)
    port = free_port()
    home = dagster_home(platform, max_concurrent_runs=0, code_server_port=port)
    env = process_env(
        platform,
        home,
        FRAUD_RETRAIN_COOLDOWN_HOURS="0",
        FRAUD_DRIFT_SENSOR_INTERVAL_SECONDS="2",
    )
    instance = platform.instance
    sensor = drift_retraining_sensor.name
    command = [str(BIN / "dagster-daemon"), "run", "-w", str(home / "workspace.yaml")]
    output = tmp_path / "daemon.log"
    daemons: list[subprocess.Popen] = []

    def launch() -> tuple[subprocess.Popen, float]:
        daemons.append(start(command, env, output))
        return daemons[-1], time.time()

    def ticks_since(moment: float) -> int:
        return sum(1 for t in sensor_ticks(instance, sensor) if t.timestamp > moment)

    code_server = start(code_server_command(port), env, tmp_path / "code_server.log")
    try:
        wait_for(lambda: port_open(port), 240, "the code server", code_server)
        first = _report(instance, "CRITICAL")
        daemon, started = launch()
        wait_for(lambda: len(_retraining_runs(instance)) == 1, 240, "run 1", daemon, output)
        first_run_after = time.time() - started
        kill_group(daemon, signal.SIGTERM)
        assert daemon.returncode is not None

        daemon, restarted = launch()
        wait_for(lambda: ticks_since(restarted) >= 3, 240, "ticks after SIGTERM", daemon, output)
        after_sigterm = ticks_since(restarted)
        assert len(_retraining_runs(instance)) == 1

        _report(instance, "OK")
        second = _report(instance, "CRITICAL")
        wait_for(lambda: len(_retraining_runs(instance)) == 2, 120, "run 2", daemon, output)
        kill_group(daemon, signal.SIGKILL)
        at_kill = [r.status.value for r in _retraining_runs(instance)]

        daemon, restarted = launch()
        wait_for(lambda: ticks_since(restarted) >= 3, 240, "ticks after SIGKILL", daemon, output)
        after_sigkill = ticks_since(restarted)
        kill_group(daemon, signal.SIGTERM)
    finally:
        for process in [*daemons, code_server]:
            if process.poll() is None:
                kill_group(process, signal.SIGKILL)

    runs = _retraining_runs(instance)
    assert sorted(r.tags["fraud/report_storage_id"] for r in runs) == sorted(
        [str(first), str(second)]
    )
    assert {r.tags["dagster/run_key"] for r in runs} == {
        f"drift_report:{first}",
        f"drift_report:{second}",
    }
    assert all(r.tags[TRIGGER_TAG] == "drift_report CRITICAL" for r in runs)
    assert all(r.status == dg.DagsterRunStatus.QUEUED for r in runs)
    total = len(sensor_ticks(instance, sensor))
    log.info(
        f"first run requested {first_run_after:.1f}s after the daemon started; "
        f"{total} sensor ticks over 3 daemon starts ({after_sigterm} after SIGTERM, "
        f"{after_sigkill} after SIGKILL; run statuses at the SIGKILL {at_kill}); "
        f"3 reports (2 CRITICAL, 1 OK) -> {len(runs)} runs"
    )
