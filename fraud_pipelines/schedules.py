"""Schedules that keep the platform fresh without anyone at the keyboard.

Each runs under `dagster-daemon` (started by the quick start) and is on by default. The cron
of each can be changed with FRAUD_CRON_FEATURES, _DRIFT, _PERFORMANCE and _BIAS.
"""

from __future__ import annotations

import dagster as dg

from fraud_pipelines.jobs import bias_job, drift_job, features_job, ingestion_job, performance_job
from fraud_pipelines.settings import Settings

_crons = Settings.from_env().crons
_on = dg.DefaultScheduleStatus.RUNNING

daily_ingestion_schedule = dg.build_schedule_from_partitioned_job(
    ingestion_job, hour_of_day=1, minute_of_hour=0, default_status=_on
)
features_schedule = dg.ScheduleDefinition(
    name="features_schedule", job=features_job, cron_schedule=_crons["features"], default_status=_on
)
drift_schedule = dg.ScheduleDefinition(
    name="drift_schedule", job=drift_job, cron_schedule=_crons["drift"], default_status=_on
)
performance_schedule = dg.ScheduleDefinition(
    name="performance_schedule",
    job=performance_job,
    cron_schedule=_crons["performance"],
    default_status=_on,
)
bias_schedule = dg.ScheduleDefinition(
    name="bias_schedule", job=bias_job, cron_schedule=_crons["bias"], default_status=_on
)

ALL = [
    daily_ingestion_schedule,
    features_schedule,
    drift_schedule,
    performance_schedule,
    bias_schedule,
]
