"""Screenshots of the platform's UIs from real headless Chromium, checked for what they must show.

    .venv/bin/python scripts/ui_snapshots.py --dagster http://127.0.0.1:3000 \\
        --mlflow http://127.0.0.1:5000 --out /tmp/ui [--only graph,drift,mlflow]

Writes `dagster_graph.png`, `drift_report.png` and `mlflow_model.png` into `--out` and exits
non-zero, naming what was missing, when a page does not show what it must. A page that fails
its check is still saved, as `<name>.failed.png`, so you can see what was there instead.

API (stable; other tests call it):

    with browser() as chromium:                   # headless Chromium (/usr/bin/chromium)
        page = new_page(chromium)                 # 1440x900, first-visit popups pre-dismissed
        snapshot_dagster_graph(page, dagster_url, out_png)
        snapshot_drift_report(page, dagster_url, out_png, worst_features_out=None)
        snapshot_mlflow_model(page, mlflow_url, out_png, model="fraud_detector", alias="champion")

    take(dagster_url, mlflow_url, out_dir, only=("graph", "drift", "mlflow"))  # all, one browser

Each `snapshot_*` returns a `Snapshot` (the PNG path, the URL, the facts it verified and the
page's visible text) or raises `SnapshotError` (an AssertionError) naming what was missing.
Waits are Playwright's, 60 s per element by default (`page.set_default_timeout` to change).
What each one requires:

- `snapshot_dagster_graph`: the global asset lineage page, every group expanded, draws the
  nodes of `transactions`, `feature_set`, `fraud_model` and `drift_report`.
- `snapshot_drift_report`: the `drift_report` asset page shows its latest materialization's
  metadata table: a `status` entry with a drift status, `psi/<feature>` entries and a
  `worst_features` entry whose markdown renders as a table with feature, status and PSI
  columns (that dialog is saved to `worst_features_out` when given). The page is taken at
  1440x1200, scrolled to the metadata.
- `snapshot_mlflow_model`: the MLflow registered-model page lists the model's versions and
  shows the alias (default `champion`) on one of them.

Tests import this file by path (scripts/ is not a package), e.g. with
`importlib.util.spec_from_file_location("ui_snapshots", "scripts/ui_snapshots.py")`;
register the module in `sys.modules` before executing it, as dataclasses need that.

Chromium is the system one (`CHROMIUM` environment variable, default `/usr/bin/chromium`);
Playwright drives it and never downloads a browser.
"""

import argparse
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, Locator, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1440, "height": 900}
# Tall enough for the drift report's metadata table below the description.
README_VIEWPORT = {"width": 1440, "height": 1200}
TIMEOUT_MS = 60_000
DRIFT_STATUSES = ("OK", "WARNING", "CRITICAL", "INSUFFICIENT_DATA")
# First-visit popups, pre-dismissed through the localStorage keys the UIs keep them under:
# Dagster's "Join the Dagster community" modal (localhost only) and MLflow 3's assistant
# panel, which otherwise covers a third of every MLflow page.
DISMISSED_POPUPS = {
    "communityNux": '"1"',
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
    "mlflow.assistant.panelOpen_v1": "false",
}
INIT_SCRIPT = "".join(
    f"window.localStorage.setItem({json.dumps(k)}, {json.dumps(v)});"
    for k, v in DISMISSED_POPUPS.items()
)
ALL = ("graph", "drift", "mlflow")


class SnapshotError(AssertionError):
    """A page did not show what it must; the message says what was missing and where."""


@dataclass(frozen=True)
class Snapshot:
    """One saved screenshot and what the page was verified to show."""

    path: Path
    url: str
    verified: list[str] = field(default_factory=list)
    text: str = ""


@contextmanager
def browser(executable: str = CHROMIUM) -> Iterator[Browser]:
    """Headless system Chromium, closed on exit."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


def new_page(chromium: Browser) -> Page:
    """A page in a fresh browser context, sized for a README, with the UIs' first-visit
    popups already dismissed."""
    context = chromium.new_context(viewport=VIEWPORT, device_scale_factor=1)
    context.add_init_script(INIT_SCRIPT)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


def _fail(page: Page, out: Path, url: str, message: str) -> SnapshotError:
    failed = out.with_suffix(".failed.png")
    failed.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(failed))
    return SnapshotError(f"{url}: {message} (the page as it was: {failed})")


def _wait_for(page: Page, out: Path, url: str, target: Locator, what: str) -> None:
    try:
        target.first.wait_for(state="visible")
    except PlaywrightTimeout as exc:
        raise _fail(page, out, url, f"{what} never appeared") from exc


def _exact(page: Page, text: str) -> Locator:
    return page.get_by_text(re.compile(rf"^\s*{re.escape(text)}\s*$"))


def _save(page: Page, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    # Let fonts, charts and late-arriving queries settle before the picture.
    page.wait_for_timeout(1000)
    page.screenshot(path=str(out))


def _metadata_value(page: Page, key: str) -> str | None:
    """The value cell of a row of the asset page's metadata table, or None without that row."""
    row = page.locator("tr").filter(has=_exact(page, key))
    if not row.count():
        return None
    return row.first.locator("td").last.inner_text().strip()


def snapshot_dagster_graph(
    page: Page,
    base_url: str,
    out: Path,
    assets: tuple[str, ...] = ("transactions", "feature_set", "fraud_model", "drift_report"),
) -> Snapshot:
    """The global asset lineage graph with every group expanded and `assets` drawn as nodes."""
    url = f"{base_url.rstrip('/')}/asset-groups"
    page.goto(url)
    _wait_for(page, out, url, _exact(page, "monitoring"), "the asset graph")
    # Groups start collapsed; the graph's own shortcut (Alt+E) expands them all.
    for _ in range(2):
        if _exact(page, assets[-1]).count():
            break
        page.keyboard.press("Alt+e")
        page.wait_for_timeout(2000)
    verified = []
    for asset in assets:
        _wait_for(page, out, url, _exact(page, asset), f"the node of asset {asset}")
        verified.append(f"node {asset}")
    _save(page, out)
    return Snapshot(out, url, verified, page.inner_text("body"))


def snapshot_drift_report(
    page: Page, base_url: str, out: Path, worst_features_out: Path | None = None
) -> Snapshot:
    """The `drift_report` asset page, scrolled to the metadata of its latest materialization.

    Also opens the `worst_features` markdown and checks that it renders as a table (saved
    to `worst_features_out` when given).
    """
    url = f"{base_url.rstrip('/')}/assets/drift_report"
    page.set_viewport_size(README_VIEWPORT)
    page.goto(url)
    _wait_for(page, out, url, page.get_by_text(re.compile(r"^psi/")), "psi/<feature> metadata")
    verified = []
    status = _metadata_value(page, "status")
    if status not in DRIFT_STATUSES:
        raise _fail(page, out, url, f"the `status` metadata entry shows {status!r}")
    verified.append(f"status {status}")
    psi = page.locator("tr").filter(has=page.get_by_text(re.compile(r"^psi/[a-z0-9_]+$")))
    verified.append(f"{psi.count()} psi/<feature> entries")
    if _metadata_value(page, "worst_features") is None:
        raise _fail(page, out, url, "no worst_features metadata entry")
    text = page.inner_text("body")
    _exact(page, "Metadata").first.evaluate("e => e.scrollIntoView({block: 'start'})")
    _save(page, out)

    row = page.locator("tr").filter(has=_exact(page, "worst_features"))
    row.first.get_by_text("Show Markdown").click()
    dialog = page.get_by_role("dialog")
    _wait_for(page, out, url, dialog.get_by_text(f"Drift: {status}"), "the worst_features markdown")
    headers = [h.strip() for h in dialog.locator("th").all_inner_texts()]
    missing = [h for h in ("feature", "status", "PSI") if h not in headers]
    if missing:
        raise _fail(page, out, url, f"the worst_features table lacks the columns {missing}")
    verified.append(f"worst_features table ({dialog.locator('tbody tr').count()} rows)")
    text += "\n" + dialog.inner_text()
    if worst_features_out is not None:
        _save(page, worst_features_out)
    dialog.get_by_role("button", name="Close").click()
    return Snapshot(out, url, verified, text)


def _close_mlflow_assistant(page: Page) -> None:
    """Close MLflow's assistant panel if it opened despite the pre-set localStorage keys."""
    close = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
    if close.count() and close.first.is_visible():
        close.first.click()


def snapshot_mlflow_model(
    page: Page,
    base_url: str,
    out: Path,
    model: str = "fraud_detector",
    alias: str = "champion",
) -> Snapshot:
    """The MLflow registered-model page, with `alias` shown on one of the versions."""
    url = f"{base_url.rstrip('/')}/#/models/{model}"
    page.goto(url)
    _wait_for(page, out, url, page.get_by_text(re.compile(r"^Version \d+$")), f"{model}'s versions")
    _wait_for(page, out, url, page.get_by_text(re.compile(rf"^@\s*{alias}$")), f"alias {alias}")
    _close_mlflow_assistant(page)
    text = page.inner_text("body")
    if model not in text:
        raise _fail(page, out, url, f"the page does not name {model}")
    row = page.locator("tr, [role=row]").filter(has=page.get_by_text(re.compile(rf"^@\s*{alias}$")))
    version = re.search(r"Version (\d+)", row.first.inner_text()) if row.count() else None
    if version is None:
        raise _fail(page, out, url, f"alias {alias} is not on a version row")
    _save(page, out)
    return Snapshot(
        out, url, [f"model {model}", f"alias {alias} on version {version.group(1)}"], text
    )


def take(
    dagster: str | None, mlflow: str | None, out: Path, only: tuple[str, ...] = ALL
) -> list[Snapshot]:
    """Every snapshot asked for, in one browser; raises on the first page that fails."""
    wanted = {
        "graph": (dagster, snapshot_dagster_graph, "dagster_graph.png"),
        "drift": (dagster, snapshot_drift_report, "drift_report.png"),
        "mlflow": (mlflow, snapshot_mlflow_model, "mlflow_model.png"),
    }
    snapshots = []
    with browser() as chromium:
        for name in only:
            base, snap, filename = wanted[name]
            if base is None:
                raise ValueError(
                    f"--only {name} needs --{'mlflow' if name == 'mlflow' else 'dagster'}"
                )
            snapshots.append(snap(new_page(chromium), base, out / filename))
    return snapshots


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dagster", help="base URL of the Dagster UI")
    parser.add_argument("--mlflow", help="base URL of the MLflow UI")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated: graph,drift,mlflow")
    args = parser.parse_args()
    only = tuple(n.strip() for n in args.only.split(",") if n.strip())
    unknown = set(only) - set(ALL)
    if unknown:
        parser.error(f"unknown --only {sorted(unknown)}; choose from {', '.join(ALL)}")
    try:
        snapshots = take(args.dagster, args.mlflow, args.out, only)
    except (SnapshotError, ValueError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    for snapshot in snapshots:
        print(f"{snapshot.path}: {'; '.join(snapshot.verified)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
