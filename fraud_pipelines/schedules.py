"""Schedules that keep the platform fresh without anyone at the keyboard."""

from __future__ import annotations

import dagster as dg

from fraud_pipelines.jobs import ingestion_job

daily_ingestion_schedule = dg.build_schedule_from_partitioned_job(
    ingestion_job, hour_of_day=1, minute_of_hour=0
)

ALL = [daily_ingestion_schedule]
