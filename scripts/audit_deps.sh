#!/usr/bin/env bash
# Audit the locked dependencies (uv.lock, every group) for known vulnerabilities with pip-audit.
#
#   ./scripts/audit_deps.sh                        # PyPI advisory database
#   FRAUD_AUDIT_SERVICE=osv ./scripts/audit_deps.sh
#
# Accepted vulnerabilities are listed in scripts/audit_ignore.txt, one "ID  reason" a line,
# and explained in docs/reliability.md. --strict makes a package that could not be looked up
# (no network, package unknown to the database) fail the audit instead of passing unaudited.
set -euo pipefail
cd "$(dirname "$0")/.."
requirements="$(mktemp)"
trap 'rm -f "$requirements"' EXIT
uv export --frozen --no-emit-project --all-groups --quiet >"$requirements"
ignored=()
while read -r id _; do
  [[ -z "$id" || "$id" == \#* ]] && continue
  ignored+=(--ignore-vuln "$id")
done <scripts/audit_ignore.txt
exec .venv/bin/pip-audit \
  --requirement "$requirements" \
  --disable-pip --require-hashes --strict \
  --vulnerability-service "${FRAUD_AUDIT_SERVICE:-pypi}" \
  --progress-spinner off --desc on \
  "${ignored[@]}"
