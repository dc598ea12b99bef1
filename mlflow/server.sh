#!/usr/bin/env bash
# Start the MLflow tracking server and UI.
# Embedded default: SQLite backend store and a local artifact root under .fraud/mlflow.
# Production: set MLFLOW_BACKEND_STORE_URI (e.g. postgresql://...) and MLFLOW_ARTIFACTS_DESTINATION
# (a local folder or s3://bucket/prefix); artifacts are then served through the server.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HOME_DIR="${FRAUD_HOME:-$ROOT/.fraud}"
mkdir -p "$HOME_DIR/mlflow/artifacts"
BACKEND="${MLFLOW_BACKEND_STORE_URI:-sqlite:///$HOME_DIR/mlflow/mlflow.db}"
ARTIFACTS="${MLFLOW_ARTIFACTS_DESTINATION:-$HOME_DIR/mlflow/artifacts}"
exec "${MLFLOW_BIN:-$ROOT/.venv/bin/mlflow}" server \
  --backend-store-uri "$BACKEND" \
  --serve-artifacts --artifacts-destination "$ARTIFACTS" \
  --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}" --workers 1
