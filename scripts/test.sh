#!/usr/bin/env bash
# Install everything, lint, validate the Dagster code location, and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
if ! command -v redis-server >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null) \
    || echo "redis-server could not be installed; Redis tests will be skipped" >&2
fi
.venv/bin/ruff check .
export DAGSTER_DISABLE_TELEMETRY=1
export DAGSTER_HOME="${DAGSTER_HOME:-$(mktemp -d)}"
cp -n dagster.yaml "$DAGSTER_HOME/dagster.yaml" 2>/dev/null || true
.venv/bin/dagster definitions validate -w workspace.yaml
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
