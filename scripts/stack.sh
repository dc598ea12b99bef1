#!/usr/bin/env bash
# The production topology from local binaries, without Docker: PostgreSQL 15, Redis, the MLflow
# server, Dagster webserver + daemon + code server, and two scoring replicas, on 127.0.0.1.
#
#   ./scripts/stack.sh up               # start (or restart on the data already there)
#   ./scripts/stack.sh seed --rows N    # sample data, the whole graph once, an API key
#   ./scripts/stack.sh status           # address and health of every component
#   ./scripts/stack.sh down             # stop; the data stays in .fraud/stack
#
# `--root DIR` before the subcommand uses another folder. See docs/deployment.md.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
exec .venv/bin/python -m fraud_pipelines.stack "$@"
