"""The README's drift report screenshot, made the way the README's is: the repository script
builds a small platform, serves it with a real `dagster-webserver` and photographs the
`drift_report` page with headless Chromium, checking what the page shows."""

import importlib.util
import struct
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _script(name: str) -> ModuleType:
    """Import a script of scripts/ (not a package) by its path."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE, "not a PNG file"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.integration
def test_drift_report_page_shows_its_metadata_table(tmp_path: Path) -> None:
    """The picture is of a real page that shows the status, the per-feature PSI entries and
    the worst-features table; a blank or half-loaded page fails the script itself."""
    ui_snapshots = _script("ui_snapshots")
    if not Path(ui_snapshots.CHROMIUM).exists():
        pytest.skip(f"no Chromium at {ui_snapshots.CHROMIUM} (apt-get install chromium)")
    drift_screenshot = _script("drift_screenshot")
    out, table = tmp_path / "drift_report.png", tmp_path / "worst_features.png"

    snapshot = drift_screenshot.make_screenshot(out, tmp_path / "platform", table)

    viewport = ui_snapshots.README_VIEWPORT
    for picture in (out, table):
        data = picture.read_bytes()
        assert _png_size(data) == (viewport["width"], viewport["height"])
        assert len(data) > 50_000, f"{picture.name} is a near-empty picture"
    status = snapshot.verified[0].removeprefix("status ")
    # Scored traffic comes from after the generator's shift, so drift must be flagged.
    assert status in ("WARNING", "CRITICAL"), snapshot.verified
    assert f"Drift: {status}" in snapshot.text
    for entry in ("status", "max_psi", "worst_features", "psi/amount", "psi/channel_code"):
        assert entry in snapshot.text, f"{entry} not on the page"
    assert any(v.startswith("worst_features table") for v in snapshot.verified)


# About two minutes on a quiet machine; far longer while other test runs share the cores.
pytestmark = pytest.mark.timeout(1200)
