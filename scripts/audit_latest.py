"""Audit the locked packages that are at their newest release, from PyPI's project pages.

    .venv/bin/python scripts/audit_latest.py requirements.txt [--ignore scripts/audit_ignore.txt]

The fallback of `scripts/audit_deps.sh` where pip-audit cannot run: some networks reach
PyPI's project pages (`/pypi/<name>/json`) but not the per-release pages pip-audit reads
(`/pypi/<name>/<version>/json`) nor OSV. A project page lists the known vulnerabilities of
the project's newest release, so a package locked at that release is audited exactly; a
package locked at an older release cannot be audited this way and is listed as such, never
counted as clean.

Prints one line per vulnerable or unaudited package and a summary, and exits 1 if a
vulnerability that is not accepted in the ignore file affects a locked package, 2 if PyPI
cannot be reached at all, else 0.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

PYPI = "https://pypi.org/pypi/{name}/json"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def locked(requirements: Path) -> list[tuple[str, str]]:
    """(name, version) of every `name==version` line of a requirements file."""
    pins = []
    for line in requirements.read_text().splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins.append((match.group(1), match.group(2)))
    return pins


def accepted(ignore_file: Path | None) -> set[str]:
    """Vulnerability ids accepted in the ignore file ("ID  reason" lines)."""
    if ignore_file is None or not ignore_file.exists():
        return set()
    ids = set()
    for line in ignore_file.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            ids.add(line.split()[0])
    return ids


def project(name: str) -> dict[str, object]:
    with urllib.request.urlopen(PYPI.format(name=name), timeout=30) as response:
        return json.load(response)  # type: ignore[no-any-return]


def audit(
    pins: list[tuple[str, str]],
    ignored: set[str],
    fetch: Callable[[str], dict[str, object]] = project,
) -> dict[str, list]:
    """Each package's outcome: audited (clean or vulnerable), not at newest, or unreachable.

    `fetch` returns a package's PyPI project page (JSON)."""
    out: dict[str, list] = {"clean": [], "vulnerable": [], "older": [], "failed": []}

    def check(pin: tuple[str, str]) -> tuple[str, tuple]:
        name, version = pin
        try:
            page = fetch(name)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return "failed", (name, version, str(exc))
        newest = str(page["info"]["version"])  # type: ignore[index]
        if newest != version:
            return "older", (name, version, newest)
        found = []
        for vuln in page.get("vulnerabilities") or []:  # type: ignore[union-attr]
            ids = {vuln.get("id"), *(vuln.get("aliases") or [])}
            if not ids & ignored:
                found.append((vuln.get("id"), vuln.get("fixed_in"), vuln.get("summary")))
        return ("vulnerable", (name, version, found)) if found else ("clean", (name, version))

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for kind, item in pool.map(check, pins):
            out[kind].append(item)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("requirements", type=Path)
    parser.add_argument("--ignore", type=Path, default=Path("scripts/audit_ignore.txt"))
    args = parser.parse_args(argv)
    pins = locked(args.requirements)
    result = audit(pins, accepted(args.ignore))
    if len(result["failed"]) == len(pins):
        print(f"PyPI unreachable: {result['failed'][0][2] if pins else 'no packages'}")
        return 2
    for name, version, found in result["vulnerable"]:
        for vuln_id, fixed_in, summary in found:
            print(f"VULNERABLE {name}=={version} {vuln_id} (fixed in {fixed_in}): {summary}")
    for name, version, newest in sorted(result["older"]):
        print(f"not audited {name}=={version} (newest is {newest})")
    for name, version, error in result["failed"]:
        print(f"not audited {name}=={version}: {error}")
    print(
        f"audited {len(result['clean']) + len(result['vulnerable'])} of {len(pins)} locked "
        f"packages (those at their newest release) against PyPI's advisories: "
        f"{len(result['vulnerable'])} vulnerable; {len(result['older'])} older than their "
        f"newest release and {len(result['failed'])} unreachable, not audited"
    )
    return 1 if result["vulnerable"] else 0


if __name__ == "__main__":
    sys.exit(main())
