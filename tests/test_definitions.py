"""Tier 3: the code location loads and holds the expected graph."""

import dagster as dg

from fraud_pipelines.definitions import defs

EXPECTED_ASSETS = {
    "transactions",
    "feature_set",
    "fraud_model",
    "champion_model",
    "model_explanations",
    "scored_predictions",
    "drift_report",
    "performance_report",
    "bias_report",
    "model_card",
}


def test_definitions_load_with_the_expected_graph() -> None:
    """A broken import or a renamed asset must fail here, before the UI does."""
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert EXPECTED_ASSETS <= keys
    assert graph.get(dg.AssetKey("feature_set")).parent_keys == {dg.AssetKey("transactions")}
    assert dg.AssetKey("fraud_model") in graph.get(dg.AssetKey("champion_model")).parent_keys


def test_model_gates_are_blocking_checks() -> None:
    """Promotion relies on these checks stopping the run when they fail."""
    specs = {spec.name: spec for spec in defs.resolve_assets_def("fraud_model").check_specs}
    assert specs["onnx_matches_native"].blocking
    assert specs["meets_baselines"].blocking
    assert specs["fair_to_protected_groups"].blocking


def test_jobs_and_schedules_resolve() -> None:
    """Every job the README and schedules name must exist."""
    for name in (
        "full_graph_job",
        "training_job",
        "retraining_job",
        "ingestion_job",
        "drift_job",
        "performance_job",
        "bias_job",
        "monitoring_job",
    ):
        assert defs.resolve_job_def(name).name == name
    assert defs.resolve_schedule_def("ingestion_job_schedule").cron_schedule == "0 1 * * *"
    for name in ("features", "drift", "performance", "bias"):
        schedule = defs.resolve_schedule_def(f"{name}_schedule")
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_sensors_run_unattended() -> None:
    """The loop closes only if the daemon starts these sensors without anyone clicking."""
    for name in ("drift_retraining_sensor", "landing_sensor", "pipeline_failure_alert_sensor"):
        sensor = defs.resolve_sensor_def(name)
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_every_asset_has_a_description_for_the_ui() -> None:
    """The docstring is what a data scientist reads in the Dagster UI."""
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert graph.get(key).description, key
