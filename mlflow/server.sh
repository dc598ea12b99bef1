#!/usr/bin/env bash
# Start the MLflow tracking server and UI. See mlflow/README.md for every variable.
#
# Embedded default: SQLite backend store and local artifacts under $FRAUD_HOME/mlflow.
# Production: MLFLOW_BACKEND_STORE_URI=postgresql://... and MLFLOW_ARTIFACTS_DESTINATION set to
# a local folder or s3://bucket/prefix (S3-compatible stores via MLFLOW_S3_ENDPOINT_URL). Clients
# never touch the artifact store directly: the server proxies it (--serve-artifacts), so only
# the server holds its credentials.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HOME_DIR="${FRAUD_HOME:-$ROOT/.fraud}"
BACKEND="${MLFLOW_BACKEND_STORE_URI:-sqlite:///$HOME_DIR/mlflow/mlflow.db}"
ARTIFACTS="${MLFLOW_ARTIFACTS_DESTINATION:-$HOME_DIR/mlflow/artifacts}"
case "$ARTIFACTS" in
  *://*) ;;
  *) mkdir -p "$ARTIFACTS" ;;
esac
# MLflow's job runner (a second server process for GenAI evaluation jobs) has nothing to do
# on this platform, which uses tracking and the model registry only.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
ARGS=(
  --backend-store-uri "$BACKEND"
  --serve-artifacts --artifacts-destination "$ARTIFACTS"
  --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}"
  --workers "${MLFLOW_WORKERS:-1}"
)
# Host headers other than localhost and private addresses (a DNS name in front of the
# server, a compose service name) must be listed, or MLflow rejects them.
if [ -n "${MLFLOW_ALLOWED_HOSTS:-}" ]; then
  ARGS+=(--allowed-hosts "$MLFLOW_ALLOWED_HOSTS")
fi
if [ "${MLFLOW_AUTH:-0}" = "1" ]; then
  STATE="${MLFLOW_AUTH_STATE_DIR:-$HOME_DIR/mlflow}"
  mkdir -p "$STATE"
  AUTH_DB="${MLFLOW_AUTH_DATABASE_URI:-sqlite:///$STATE/basic_auth.db}"
  sed "s#^database_uri = .*#database_uri = $AUTH_DB#" "$ROOT/mlflow/basic_auth.ini" \
    > "$STATE/basic_auth.ini"
  export MLFLOW_AUTH_CONFIG_PATH="$STATE/basic_auth.ini"
  ARGS+=(--app-name basic-auth)
fi
exec "${MLFLOW_BIN:-$ROOT/.venv/bin/mlflow}" server "${ARGS[@]}"
