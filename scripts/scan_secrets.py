"""Scan the repository's tracked files for committed secrets.

    python scripts/scan_secrets.py                  # every file `git ls-files` lists
    python scripts/scan_secrets.py --paths FILE...  # only these files

Rules: private key blocks, AWS access keys and secret keys, credentials inside URLs,
`password=` / `token=` / `secret=` style literals, API keys of this platform
(`fsk_<id>_<secret>`), and high-entropy values in configuration files. Findings print as
`path:line: rule: redacted value`; the exit status is 1 if there is any.

`scripts/secrets_allowlist.txt` lists documented placeholders: one `path-glob<TAB>regex`
per line (`#` starts a comment); a finding whose path matches the glob and whose line
matches the regex is not reported.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWLIST = ROOT / "scripts" / "secrets_allowlist.txt"
MAX_BYTES = 2_000_000
CONFIG_SUFFIXES = (".env", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ".properties")
CONFIG_NAMES = (".env", ".env.example", "Dockerfile", "docker-compose.yml")
SKIPPED_FILES = ("uv.lock",)
PLACEHOLDER = re.compile(
    r"^(\$\{?[A-Z_]+\}?|<.*|\*+|x+|changeme|change-me|example|placeholder|dummy|"
    r"your[-_].*|redacted|none|null|true|false|os\.environ.*|env\(.*)$",
    re.IGNORECASE,
)

RULES: dict[str, re.Pattern[str]] = {
    "private key": re.compile(
        r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY(?: BLOCK)?-----"
    ),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(
        r"(?i)aws_?secret_?access_?key\s*[=:]\s*[\"']?([A-Za-z0-9/+=]{40})\b"
    ),
    "fraud platform API key": re.compile(r"\bfsk_[0-9a-f]{8,32}_[A-Za-z0-9-]{16,}"),
    "credentials in URL": re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:([^@\s/'\"]+)@"),
    "password or token literal": re.compile(
        r"(?i)\b[a-z_]*(?:password|passwd|secret|token|api_?key|access_?key)\b\s*[=:]\s*"
        r"[\"']([^\"'\s]{6,})[\"']"
    ),
    "private token prefix": re.compile(
        r"\b(?:ghp|gho|ghs|ghu|github_pat|glpat|xox[abpr]|sk_live|rk_live)_[A-Za-z0-9_]{16,}"
    ),
}
CONFIG_ASSIGNMENT = re.compile(
    r"(?i)^\s*(?:export\s+)?[a-z0-9_.-]*(?:password|passwd|secret|token|api_?key|access_?key)"
    r"[a-z0-9_.-]*\s*[=:]\s*[\"']?([^\"'\s#]+)"
)
# No "/" in the alphabet: a path splits into its (low-entropy) segments.
HIGH_ENTROPY_TOKEN = re.compile(r"[A-Za-z0-9+=_-]{24,}")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    rule: str
    value: str

    def __str__(self) -> str:
        shown = self.value[:4] + "*" * min(12, max(0, len(self.value) - 4))
        return f"{self.path}:{self.line}: {self.rule}: {shown}"


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def is_config(path: Path) -> bool:
    return (
        path.name in CONFIG_NAMES
        or path.name.startswith(".env")
        or (path.suffix.lower() in CONFIG_SUFFIXES)
    )


def _looks_random(token: str) -> bool:
    if re.fullmatch(r"[0-9a-f]+", token):
        return len(token) >= 32 and entropy(token) > 3.0
    classes = sum(bool(re.search(p, token)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]"))
    return classes >= 3 and entropy(token) > 4.0


def scan_text(path: str, text: str, config: bool) -> list[Finding]:
    """Every finding in one file's text."""
    findings: list[Finding] = []
    for number, line in enumerate(text.splitlines(), start=1):
        for rule, pattern in RULES.items():
            for match in pattern.finditer(line):
                value = match.group(1) if match.groups() else match.group(0)
                if rule != "private key" and PLACEHOLDER.match(value):
                    continue
                findings.append(Finding(path, number, rule, value))
        if not config:
            continue
        assigned = CONFIG_ASSIGNMENT.match(line)
        # `${VAR}` / `${VAR:?message}` reads the value from the environment: not a secret.
        if assigned and assigned.group(1).startswith("${"):
            assigned = None
        if assigned and not PLACEHOLDER.match(assigned.group(1)):
            findings.append(Finding(path, number, "secret in config", assigned.group(1)))
        findings.extend(
            Finding(path, number, "high-entropy value in config", token)
            for token in HIGH_ENTROPY_TOKEN.findall(line)
            if _looks_random(token)
        )
    return findings


def load_allowlist(path: Path = ALLOWLIST) -> list[tuple[str, re.Pattern[str]]]:
    entries: list[tuple[str, re.Pattern[str]]] = []
    if not path.exists():
        return entries
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        glob, _, regex = raw.partition("\t")
        entries.append((glob.strip(), re.compile(regex.strip())))
    return entries


def allowed(finding: Finding, line: str, allowlist: list[tuple[str, re.Pattern[str]]]) -> bool:
    return any(
        fnmatch.fnmatch(finding.path, glob) and regex.search(line) for glob, regex in allowlist
    )


def scan_files(
    paths: list[Path], root: Path, allowlist: list[tuple[str, re.Pattern[str]]]
) -> list[Finding]:
    """Findings in the given files, placeholders of the allowlist removed."""
    findings: list[Finding] = []
    for path in paths:
        full = path if path.is_absolute() else root / path
        if path.name in SKIPPED_FILES or not full.is_file() or full.stat().st_size > MAX_BYTES:
            continue
        data = full.read_bytes()
        if b"\x00" in data[:8192]:
            continue
        text = data.decode("utf-8", "replace")
        try:
            shown = str(full.relative_to(root))
        except ValueError:
            shown = str(full)
        lines = text.splitlines()
        findings.extend(
            finding
            for finding in scan_text(shown, text, is_config(full))
            if not allowed(finding, lines[finding.line - 1], allowlist)
        )
    return findings


def tracked_files(root: Path) -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True
    ).stdout
    return [Path(p) for p in listed.decode().split("\0") if p]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--paths", nargs="+", type=Path, help="scan these files only")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    parser.add_argument("--allowlist", type=Path, default=ALLOWLIST)
    args = parser.parse_args(argv)
    root = args.root.resolve()
    paths = args.paths if args.paths else tracked_files(root)
    findings = scan_files(paths, root, load_allowlist(args.allowlist))
    for finding in findings:
        print(finding)
    print(f"scanned {len(paths)} files: {len(findings)} finding(s)", file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
