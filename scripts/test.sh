#!/usr/bin/env bash
# Install everything, lint, validate the Dagster code location, and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# Dozens of processes (servers, Dagster runs, health checks) import the same libraries: each
# module is compiled once and its bytecode reused, even where the environment turns that off.
unset PYTHONDONTWRITEBYTECODE
./scripts/bootstrap.sh
# Real servers and tools the tests drive: Redis, the wrk load generator, headless Chromium.
missing=()
for tool in redis-server wrk chromium; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  (apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null) \
    || echo "could not install ${missing[*]}; the tests that need them will be skipped" >&2
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python scripts/scan_secrets.py     # no secret in any tracked file
./scripts/audit_deps.sh                      # known vulnerabilities in the locked dependencies
export DAGSTER_DISABLE_TELEMETRY=1
export DAGSTER_HOME="${DAGSTER_HOME:-$(mktemp -d)}"
cp -n dagster.yaml "$DAGSTER_HOME/dagster.yaml" 2>/dev/null || true
.venv/bin/dagster definitions validate -w workspace.yaml
# Two workers: many tests wait on servers they started. The native-stack tests share one
# stack, so they stay together on one worker (xdist_group "native_stack").
exec .venv/bin/python -m pytest -p no:cacheprovider -n 2 --dist loadgroup --durations=25 "$@"
