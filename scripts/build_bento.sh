#!/usr/bin/env bash
# Build the scoring service's Bento (bentofile.yaml) with the locked dependency versions.
# Then: bentoml containerize fraud_scorer:latest -t fraud-scorer:latest
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
mkdir -p build
uv export --frozen --no-dev --no-hashes --no-emit-project --no-header --quiet \
  > build/bento-requirements.txt
exec .venv/bin/bentoml build -f bentofile.yaml "$@"
