#!/usr/bin/env bash
# Quick start: install, generate sample data, materialize the whole asset graph on embedded
# defaults (SQLite Dagster and MLflow, local files under .fraud/), then run the Dagster UI,
# the MLflow UI and the scoring API until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
exec .venv/bin/python -m fraud_pipelines.cli up "$@"
