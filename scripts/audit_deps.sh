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
# Can pip-audit's advisory database be reached? Some networks reach PyPI's project pages but
# not the per-release pages pip-audit reads (nor OSV): then the packages locked at their
# newest release are audited from the project pages (scripts/audit_latest.py), and the
# others are listed as not audited. With nothing reachable, say so plainly; fail then only
# when the caller requires the audit (FRAUD_AUDIT_REQUIRED=1).
probe="https://pypi.org/pypi/pip/24.0/json"
[[ "${FRAUD_AUDIT_SERVICE:-pypi}" == osv ]] && probe="https://api.osv.dev/v1/vulns/PYSEC-2023-228"
if ! .venv/bin/python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=15).read(64)" "$probe" >/dev/null 2>&1; then
  echo "pip-audit cannot run: $probe is unreachable from here; auditing from PyPI's project pages" >&2
  status=0
  .venv/bin/python scripts/audit_latest.py "$requirements" --ignore scripts/audit_ignore.txt || status=$?
  if [[ $status == 2 ]]; then
    echo "dependency audit NOT RUN: PyPI is unreachable from here" >&2
    [[ "${FRAUD_AUDIT_REQUIRED:-0}" == 1 ]] && exit 1
    exit 0
  fi
  # A partial audit is not the whole one: where the audit is required, fail.
  if [[ $status == 0 && "${FRAUD_AUDIT_REQUIRED:-0}" == 1 ]]; then
    echo "dependency audit INCOMPLETE: pip-audit's advisory database is required" >&2
    exit 1
  fi
  exit "$status"
fi
exec .venv/bin/pip-audit \
  --requirement "$requirements" \
  --disable-pip --require-hashes --strict \
  --vulnerability-service "${FRAUD_AUDIT_SERVICE:-pypi}" \
  --progress-spinner off --desc on \
  "${ignored[@]}"
