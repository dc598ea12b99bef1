"""The PyPI-project-page audit: exact for packages locked at their newest release, and never
counting an older locked release as clean."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import audit_latest  # noqa: E402

PAGES = {
    "clean-pkg": {"info": {"version": "2.0"}, "vulnerabilities": []},
    "bad-pkg": {
        "info": {"version": "1.5"},
        "vulnerabilities": [
            {"id": "PYSEC-1", "aliases": ["CVE-1"], "fixed_in": ["1.6"], "summary": "bad"},
            {"id": "GHSA-x", "aliases": ["CVE-2"], "fixed_in": [], "summary": "accepted"},
        ],
    },
    "old-pkg": {"info": {"version": "9.0"}, "vulnerabilities": []},
}


def _fetch(name: str) -> dict[str, object]:
    if name not in PAGES:
        raise OSError(f"no page for {name}")
    return PAGES[name]


def test_pins_and_ignore_file_are_read(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        "# comment\nclean-pkg==2.0 \\\n    --hash=sha256:abc\n"
        'bad-pkg==1.5 ; python_version >= "3.11"\nold-pkg==1.0\n'
    )
    assert audit_latest.locked(requirements) == [
        ("clean-pkg", "2.0"), ("bad-pkg", "1.5"), ("old-pkg", "1.0"),
    ]  # fmt: skip
    ignore = tmp_path / "ignore.txt"
    ignore.write_text("# accepted\nCVE-2  why it does not apply\n")
    assert audit_latest.accepted(ignore) == {"CVE-2"}


def test_only_newest_releases_are_audited_and_accepted_ids_skipped() -> None:
    pins = [("clean-pkg", "2.0"), ("bad-pkg", "1.5"), ("old-pkg", "1.0"), ("gone-pkg", "1")]
    result = audit_latest.audit(pins, {"CVE-2"}, fetch=_fetch)
    assert result["clean"] == [("clean-pkg", "2.0")]
    assert result["vulnerable"] == [("bad-pkg", "1.5", [("PYSEC-1", ["1.6"], "bad")])]
    assert result["older"] == [("old-pkg", "1.0", "9.0")]
    assert [f[0] for f in result["failed"]] == ["gone-pkg"]
