"""The code location: every asset, check, job, schedule, sensor and resource of the platform."""

from __future__ import annotations

import dagster as dg

from fraud_assets import datasets, features, models, monitoring, serving_state
from fraud_pipelines import jobs, schedules, sensors
from fraud_pipelines.resources import build_resources

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([datasets, features, models, monitoring, serving_state]),
    jobs=jobs.ALL,
    schedules=schedules.ALL,
    sensors=sensors.ALL,
    resources=build_resources(),
)
